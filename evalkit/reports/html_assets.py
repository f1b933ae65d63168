# ruff: noqa: E501 - stylesheet and script text: their lines are data, kept as written
"""The HTML reports' inline stylesheet and script (no network: system fonts, no CDN); the experiment
report uses the same stylesheet."""

CSS = """
:root{--ink:#0f172a;--text:#1e293b;--muted:#64748b;--line:#e2e8f0;--bg:#f5f6fa;--card:#fff;
--met:#15803d;--met-bg:#dcfce7;--below:#b91c1c;--below-bg:#fee2e2;--none:#475569;--none-bg:#eef1f5;
--warn:#92400e;--warn-bg:#fef3c7;--accent:#4f46e5;
--sans:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace}
*{box-sizing:border-box}
html{background:var(--bg)}
body{margin:0;font:15px/1.5 var(--sans);color:var(--text);font-variant-numeric:tabular-nums}
.wrap{max-width:1180px;margin:0 auto;padding:0 28px}
header.top{background:var(--card);border-bottom:1px solid var(--line);padding:26px 0 22px;
box-shadow:0 1px 0 rgba(15,23,42,.02)}
.brand{font-size:12px;font-weight:700;letter-spacing:.14em;text-transform:uppercase;color:var(--accent)}
h1{margin:4px 0 12px;font-size:26px;line-height:1.25;color:var(--ink);font-weight:700;word-break:break-all}
h2{font-size:13px;letter-spacing:.12em;text-transform:uppercase;color:var(--muted);margin:34px 0 14px;
font-weight:700}
h3{margin:0;font-size:17px;color:var(--ink);word-break:break-word}
.verdict{display:inline-flex;align-items:center;gap:8px;font-weight:650;font-size:15px;padding:5px 14px;
border-radius:999px}
.verdict.met{background:var(--met-bg);color:var(--met)}.verdict.below{background:var(--below-bg);color:var(--below)}
.verdict.none{background:var(--none-bg);color:var(--none)}
.facts{display:flex;flex-wrap:wrap;gap:10px 34px;margin:18px 0 0;padding:0}
.facts div{min-width:0}.facts dt{font-size:12px;color:var(--muted);margin:0}
.facts dd{margin:1px 0 0;font-weight:600;color:var(--ink);word-break:break-all}
.facts dd.mono{font:600 13.5px/1.6 var(--mono)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(258px,1fr));gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:16px 18px 14px;
border-top:4px solid var(--none);box-shadow:0 1px 2px rgba(15,23,42,.04)}
.card.met{border-top-color:var(--met)}.card.below{border-top-color:var(--below)}
.card{display:flex;flex-direction:column}
.card h3{overflow-wrap:anywhere;word-break:normal}
.status{font-size:11.5px;font-weight:700;letter-spacing:.08em;text-transform:uppercase;color:var(--none);
margin-bottom:2px}
.status::before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;background:currentColor;
margin-right:7px;vertical-align:1px}
.card.met .status{color:var(--met)}.card.below .status{color:var(--below)}
.pill{display:inline-block;font-size:12px;font-weight:650;padding:2px 10px;border-radius:999px;white-space:nowrap}
.pill.met{background:var(--met-bg);color:var(--met)}.pill.below{background:var(--below-bg);color:var(--below)}
.pill.none{background:var(--none-bg);color:var(--none)}.pill.warn{background:var(--warn-bg);color:var(--warn)}
.pill.FAIL{background:var(--below-bg);color:var(--below)}.pill.ERROR{background:#f3e8ff;color:#7e22ce}
.pill.TIMEOUT{background:var(--warn-bg);color:var(--warn)}
.big{font-size:42px;font-weight:750;line-height:1.1;margin:6px 0 4px;color:var(--ink);letter-spacing:-.02em}
.big small{font-size:22px;font-weight:650;color:var(--muted);margin-left:2px}
.card.met .big{color:var(--met)}.card.below .big{color:var(--below)}
.sub{color:var(--muted);font-size:13px}
.nowrap{white-space:nowrap}
.ci{display:block;margin:8px 0 4px}
.card-foot{margin-top:auto!important;padding-top:2px;display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13px;color:var(--muted);margin-top:4px}
.card-foot b{color:var(--text);font-weight:650}
.card-foot a{color:var(--accent);text-decoration:none;margin-left:auto}
.card-foot a:hover{text-decoration:underline}
.panel{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:18px 20px;margin-bottom:16px}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:0 0 8px;font-size:13px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.legend i{display:inline-block;width:14px;height:4px;border-radius:2px}
.legend .dash{width:18px;height:0;border-top:2px dashed var(--muted);border-radius:0}
.chart{display:block;font-family:var(--sans)}
.chart-title{font-weight:650;color:var(--ink);margin:0 0 6px}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;font-size:12px;font-weight:650;color:var(--muted);text-transform:uppercase;letter-spacing:.06em;
padding:8px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:8px 10px;border-bottom:1px solid #f0f2f6;vertical-align:top}
td.num,th.num{text-align:right}
tbody tr:hover{background:#fafbff}
.task-block{margin-bottom:16px}
.task-block summary{cursor:pointer;list-style:none;display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.task-block summary::-webkit-details-marker{display:none}
.task-block summary::before{content:"▸";color:var(--muted);font-size:13px;transition:transform .15s}
.task-block[open] summary::before{transform:rotate(90deg)}
.task-block .meta{color:var(--muted);font-size:13px}
.grid2{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:24px;margin-top:14px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;font-size:14px;margin:0}
.kv dt{color:var(--muted)}.kv dd{margin:0;word-break:break-word}
code,.mono{font-family:var(--mono);font-size:13px}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin-bottom:12px}
.controls input,.controls select{font:inherit;font-size:14px;padding:8px 12px;border:1px solid #cbd5e1;border-radius:9px;
background:#fff;color:var(--text)}
.controls input{flex:1 1 280px;min-width:200px}
.controls input:focus,.controls select:focus{outline:2px solid #c7d2fe;border-color:var(--accent)}
.count{color:var(--muted);font-size:13px;margin-left:auto}
#failures td pre{margin:0;font:12.5px/1.45 var(--mono);white-space:pre-wrap;word-break:break-word;max-height:11em;
overflow:auto;color:var(--ink)}
#failures td.reason{color:#334155;font-size:13.5px;min-width:150px}
#failures tr[hidden]{display:none}
.got pre{background:#fff7f7;border-radius:6px;padding:2px 6px}
.id{font:12px var(--mono);color:var(--muted);white-space:nowrap}
.empty{color:var(--muted);padding:18px 4px}
.note{color:var(--muted);font-size:13px;margin:10px 0 0}
footer{color:var(--muted);font-size:12.5px;padding:28px 0 40px}
footer dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0 0}
footer dd{margin:0;font-family:var(--mono);word-break:break-all}
@media (max-width:760px){.grid2{grid-template-columns:1fr}}
"""

JS = """
(function () {
  var q = document.getElementById("q"), ft = document.getElementById("ft"), fs = document.getElementById("fs");
  var out = document.getElementById("shown");
  if (!q) return;
  var rows = Array.prototype.slice.call(document.querySelectorAll("#failures tbody tr"));
  function apply() {
    var text = q.value.trim().toLowerCase(), task = ft.value, st = fs.value, n = 0;
    rows.forEach(function (r) {
      var ok = (!task || r.getAttribute("data-task") === task) && (!st || r.getAttribute("data-status") === st) &&
               (!text || r.textContent.toLowerCase().indexOf(text) !== -1);
      r.hidden = !ok;
      if (ok) n++;
    });
    out.textContent = n;
  }
  [q, ft, fs].forEach(function (el) { el.addEventListener("input", apply); el.addEventListener("change", apply); });
  Array.prototype.forEach.call(document.querySelectorAll("[data-show-task]"), function (a) {
    a.addEventListener("click", function () { ft.value = a.getAttribute("data-show-task"); fs.value = ""; apply(); });
  });
  apply();
})();
"""
