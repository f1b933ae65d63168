"""Report renderers: golden text, hostile model output in every format, JUnit/JSON/HTML validity.

Regenerate the golden files (tests/golden/) and docs/img/report.png with
EVALKIT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_reports.py -m "slow or not slow".
"""

from __future__ import annotations

import copy
import html.parser
import io
import json
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from conftest import REPO, TASKS
from rich.console import Console

from evalkit import Task, task, verdict
from evalkit.discovery.registry import load_path
from evalkit.models.oracle import OracleBackend
from evalkit.models.python import PythonCallableBackend
from evalkit.reports import FORMATS, render, render_terminal
from evalkit.run.record import RunRecord, validate_record
from evalkit.run.runner import evaluate

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("EVALKIT_UPDATE_GOLDEN") == "1"
HOSTILE = "[bold red]pwn[/] \x1b[31m\x1b[2J </details> ``` <script>alert(1)</script> & <img src=x onerror=alert(2)>"


def _task(name: str) -> Task:
    return next(t for t in load_path(TASKS) if t.name == name)


@task(name="echo", version=2)
class Echo:
    """An untargeted task whose checker crashes on two rows and hangs on one (ERROR, TIMEOUT)."""

    def rows(self):
        return [{"q": f"say {i}"} for i in range(8)]

    def prompt(self, ex):
        return ex["q"]

    def reference(self, ex):
        return ex["q"][4:]

    def check(self, ex, answer):
        if ex["q"] in ("say 0", "say 3"):
            raise RuntimeError("checker bug")
        if ex["q"] == "say 5":
            import time

            time.sleep(1.0)
        return verdict(answer == ex["q"][4:], f"expected {ex['q'][4:]!r}")


class Flaky(OracleBackend):
    """The oracle, wrong on chosen examples: every third addition (hostile text first), one reversal."""

    identity = "flaky-oracle"

    def generate_examples(self, examples, config, *, seed=0, num_samples=1):
        out = super().generate_examples(examples, config, seed=seed, num_samples=num_samples)
        wrong_additions = 0
        for i, ex in enumerate(examples):
            if ex.task == "addition" and i % 3 == 1:
                out[i] = [HOSTILE if wrong_additions == 0 else f"{ex.reference}0"] * num_samples
                wrong_additions += 1
            elif ex.task == "reverse" and i == 4:
                out[i] = [(ex.reference or "")[::-1] + "`"] * num_samples
        return out


def hostile_adder(prompt: str) -> str:
    a, b = prompt[:-1].split("+")
    total = int(a) + int(b)
    if total % 5 == 0:
        return HOSTILE
    return str(total + (1 if total % 5 == 1 else 0))


def freeze(record: RunRecord) -> RunRecord:
    """Fix what differs between runs (time, machine, paths) so renderings are comparable."""
    data = copy.deepcopy(record.data)
    data.update(created_at="2026-01-02T03:04:05+00:00", finished_at="2026-01-02T03:04:09+00:00",
                environment={"python": "3.11.7", "platform": "Linux-test", "threads": 2, "cpus": 2,
                             "torch": None, "device": None},
                timings={"total_s": 4.25, "generate_s": 3.5, "check_s": 0.625})
    for t in data["tasks"]:
        t["source"] = None if t.get("source") is None else Path(t["source"]).name
        n = t["n_samples"]
        t["timings"] = {"generate_s": 0.875, "check_s": 0.15625, "examples_per_s": n / 0.875,
                        "tokens_per_s": 12345.6, "generated_tokens": 10802, "prompt_tokens": 4000,
                        "examples_generated": n, "examples_resumed": 0}
    data["samples"] = list(record.samples())
    data["samples_file"] = None
    return RunRecord(data)


@pytest.fixture(scope="module")
def mixed() -> RunRecord:
    tasks = [_task("addition"), _task("reverse"), _task("multiple_choice"), Task.from_decorated(Echo)]
    record = evaluate(tasks=tasks, backend=Flaky(), model_spec="flaky-oracle", n=12, check_timeout=0.3)
    return freeze(record)


@pytest.fixture(scope="module")
def hostile() -> RunRecord:
    backend = PythonCallableBackend(hostile_adder, identity="python:tests.hostile_adder")
    record = evaluate(tasks=[_task("addition")], backend=backend, model_spec="python:tests.hostile_adder", n=60)
    return freeze(record)


def curves(record: RunRecord) -> RunRecord:
    """The record with a synthetic fine-tuning history that ends at its own rates."""
    data = copy.deepcopy(record.data)
    steps = list(range(0, 1501, 250))
    history = []
    for j, step in enumerate(steps):
        frac = j / (len(steps) - 1)
        rates = {}
        for i, t in enumerate(data["tasks"]):
            if t["target"] is None:
                continue
            rate = round(t["rate"] * (frac ** (0.6 + 0.4 * i)), 4)
            half = round(0.25 * (1 - frac) + 0.06, 4)
            rates[t["name"]] = {"rate": rate, "low": max(0.0, rate - half), "high": min(1.0, rate + half)}
        loss = None if step == 750 else round(3.2 * (0.35 ** (step / 300)) + 0.04, 4)
        history.append({"step": step, "loss": loss, "wall_s": 12.5 * j, "rates": rates})
    data["meta"] = {"training": {"recipe": "addition-tiny", "history": history}}
    return RunRecord(data)


def console_text(record: RunRecord, verbosity: int = 0, **kw) -> str:
    buf = io.StringIO()
    render_terminal(record, Console(file=buf, width=100, color_system=None, **kw), verbosity=verbosity)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"golden file {path} was missing and has been written; check it and rerun")
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from its golden file; if the change is intended, regenerate with EVALKIT_UPDATE_GOLDEN=1")


# --- golden text ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verbosity, name", [(-1, "terminal_quiet.txt"), (0, "terminal.txt"),
                                             (1, "terminal_verbose.txt")])
def test_terminal_golden(mixed, verbosity, name):
    check_golden(name, console_text(mixed, verbosity))


def test_markdown_golden(mixed):
    check_golden("markdown.txt", render(mixed, "markdown"))


def test_render_is_deterministic(mixed):
    again = RunRecord(copy.deepcopy(mixed.data))
    for fmt in FORMATS:
        assert render(mixed, fmt) == render(again, fmt), fmt


def test_terminal_shows_what_matters(mixed):
    text = console_text(mixed)
    assert "pass rate" in text and "95% CI" in text and "pass@k" not in text
    for word in ("below", "met", "no target", "2 errors, 1 timeout", "checker bug", "exceeded"):
        assert word in text, word
    assert "examples/s" in text and "tokens/s" in text and "generate" in text and "check" in text
    quiet = console_text(mixed, -1)
    assert len(quiet.strip().splitlines()) == len(mixed.tasks)
    verbose = console_text(mixed, 1)
    assert "flaky-oracle" in verbose and "environment" in verbose and "level" in verbose
    assert "split=eval" in verbose


def test_every_format_from_a_run_folder_and_from_an_empty_run(tmp_path):
    from evalkit.run.record import load_record

    evaluate(tasks=[_task("addition")], backend=PythonCallableBackend(hostile_adder), n=10, reports_dir=tmp_path)
    loaded = load_record(next(tmp_path.iterdir()))  # samples stream from samples.jsonl
    assert loaded.data["samples"] is None
    for fmt in FORMATS:
        assert "addition" in render(loaded, fmt, verbosity=2)
    empty = RunRecord({**copy.deepcopy(loaded.data), "tasks": [], "samples": [], "samples_file": None})
    for fmt in FORMATS:
        assert render(empty, fmt)
    assert "none with a target" in render(empty, "terminal")


def test_verbosity_controls_how_many_failures(hostile):
    failing = sum(s["status"] != "PASS" for s in hostile.samples())
    assert failing > 20
    assert console_text(hostile, 0).count("prompt ") == 5
    assert render(hostile, "terminal", max_failures=2).count("prompt ") == 2
    assert console_text(hostile, 1).count("prompt ") == min(failing, 20)
    assert console_text(hostile, 2).count("prompt ") == failing
    assert render(hostile, "markdown").count("prompt ") == 5
    assert render(hostile, "html").count("<tr data-task=") == min(failing, 50)
    assert "per level" not in render(hostile, "markdown") and "| level |" in render(hostile, "markdown", verbosity=1)


def test_unknown_format_names_the_known_ones(mixed):
    with pytest.raises(ValueError, match="markdown"):
        render(mixed, "pdf")


def test_pass_at_k_column_when_k_above_one():
    import random

    def noisy(prompt: str, seed: int) -> str:
        a, b = prompt[:-1].split("+")
        return str(int(a) + int(b) + (0 if random.Random(f"{prompt}/{seed}").random() < 0.5 else 1))

    record = evaluate(tasks=[_task("addition")], backend=PythonCallableBackend(noisy, batched=False), n=10, k=4,
                      temperature=0.7)
    assert "pass@k" in console_text(record) and "@4 " in console_text(record)
    assert "pass@k" in render(record, "markdown")


# --- hostile model output, every format ----------------------------------------------------------------------

def test_terminal_shows_hostile_output_literally(hostile):
    plain = console_text(hostile)
    assert "[bold red]pwn[/]" in plain and "\\x1b[31m\\x1b[2J" in plain and "\x1b" not in plain
    buf = io.StringIO()
    render_terminal(hostile, Console(file=buf, width=100, force_terminal=True, color_system="truecolor"))
    coloured = buf.getvalue()
    assert "[bold red]pwn[/]" in coloured and "\x1b[2J" not in coloured and "\x1b[31m\x1b" not in coloured


def test_markdown_neutralises_hostile_output(hostile):
    from markdown_it import MarkdownIt  # rich's own dependency

    md = render(hostile, "markdown", max_failures=50)
    assert "\x1b" not in md
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    tags = _tags(rendered)
    assert "script" not in tags and "img" not in tags, "model output became HTML"
    assert tags.count("details") == 2  # the failures' <details> and the timings' <details>
    # The hostile output sits whole inside one code block; its ``` did not close the fence.
    assert rendered.count("[bold red]pwn[/] \\x1b[31m\\x1b[2J &lt;/details&gt; ``` "
                          "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt;") >= 2
    assert re.search(r"^````text$", md, re.MULTILINE), "a fence longer than the output's ``` run"


def test_junit_escapes_and_strips_illegal_characters(hostile):
    text = render(hostile, "junit")
    assert "\x1b" not in text and "<script>" not in text
    root = ET.fromstring(text.encode())
    assert not list(root.iter("script"))
    failure = root.find("./testsuite/testcase/failure")
    assert failure is not None and "<script>alert(1)</script>" in failure.text
    assert "\\x1b[31m\\x1b[2J" in failure.text


def test_json_is_the_record_and_validates(hostile, mixed):
    for record in (hostile, mixed, curves(mixed)):
        text = render(record, "json")
        data = json.loads(text)
        validate_record(data)
        assert data == record.data and "\x1b" not in text


def test_html_escapes_hostile_output(hostile):
    page = render(hostile, "html", max_failures=50)
    parser = _Collector()
    parser.feed(page)
    assert parser.tags.count("script") == 1 and "img" not in parser.tags, "model output became HTML"
    assert any("<script>alert(1)</script>" in d for d in parser.data)
    assert any("[bold red]pwn[/] \\x1b[31m\\x1b[2J" in d for d in parser.data)
    assert "\x1b" not in page


# --- JUnit --------------------------------------------------------------------------------------------------

def test_junit_counts_with_elementtree(mixed):
    root = ET.fromstring(render(mixed, "junit").encode())
    suites = root.findall("testsuite")
    assert root.tag == "testsuites" and len(suites) == 1 and suites[0].get("name") == "evalkit"
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == [t["name"] for t in mixed.tasks]
    assert [c.get("classname") for c in cases] == [f"evalkit.{t['name']}" for t in mixed.tasks]
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {t["name"] for t in mixed.tasks if t["meets_target"] is False} == {"addition", "reverse"}
    assert suites[0].get("tests") == "4" and suites[0].get("failures") == "2" and suites[0].get("errors") == "0"
    assert not root.findall(".//error") and not root.findall(".//skipped")
    echo = next(c for c in cases if c.get("name") == "echo")
    assert "no target" in echo.find("system-out").text and "2 errors, 1 timeout" in echo.find("system-out").text
    props = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert props["model.identity"] == "flaky-oracle" and props["run_id"] == mixed.run_id
    message = next(c for c in cases if c.get("name") == "addition").find("failure").get("message")
    assert "66.7%" in message and "95%" in message and "interval" in message


def test_junit_parses_with_junitparser(mixed, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    path = tmp_path / "report.xml"
    path.write_text(render(mixed, "junit"), encoding="utf-8")
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = [c for s in suites for c in s]
    assert len(cases) == 4
    failing = sorted(c.name for c in cases if any(isinstance(r, junitparser.Failure) for r in c.result))
    assert failing == ["addition", "reverse"]
    assert sum(s.tests for s in suites) == 4 and sum(s.failures for s in suites) == 2
    assert sum(s.errors for s in suites) == 0


def test_junit_xml_safe_replaces_illegal_characters():
    from evalkit.reports.junit import xml_safe

    assert xml_safe("a\x00b\x0bc\x1fd\te\nf\rg\ufffe") == "a\\x00b\\x0bc\\x1fd\te\nf\rg\\ufffe"
    ET.fromstring(f"<a>{xml_safe(''.join(map(chr, range(32))))}</a>")


# --- HTML ---------------------------------------------------------------------------------------------------

class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.data: list[str] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href", "action", "xlink:href") and v]

    def handle_data(self, data):
        self.data.append(data)


def _tags(page: str) -> list[str]:
    parser = _Collector()
    parser.feed(page)
    return parser.tags


def test_html_is_self_contained(mixed):
    page = render(mixed, "html")
    parser = _Collector()
    parser.feed(page)
    assert "http://" not in page and "https://" not in page
    assert all(r.startswith("#") for r in parser.refs), parser.refs
    assert "link" not in parser.tags and "img" not in parser.tags and parser.tags.count("script") == 1
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for name in ("addition", "reverse", "multiple_choice", "echo", mixed.run_id, "flaky-oracle", "2026-01-02"):
        assert name in page
    assert 'id="q"' in page and 'id="ft"' in page and 'id="fs"' in page  # search, task and status filters
    assert page.count('<article class="card') == 4 and "Learning curves" not in page


def test_html_learning_curves(mixed):
    record = curves(mixed)
    validate_record(record.data)
    page = render(record, "html")
    assert "Learning curves" in page and "Training loss" in page
    assert page.count('<svg class="chart"') == 2
    charted = [t["name"] for t in mixed.tasks if t["target"] is not None]
    assert page.count("<polygon") == len(charted)  # one interval band per task
    assert page.count('stroke-dasharray="6 4"') == len(charted)  # one target line per task
    assert "step 1500" in page and "loss" in page
    assert render(record, "html") == page


# --- a real browser -----------------------------------------------------------------------------------------

def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """A tiny PNG decoder (8-bit RGB/RGBA, not interlaced): width, height and rows of raw pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and not interlace, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.slow
def test_html_screenshot_in_headless_chromium(mixed, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("!!! NO CHROMIUM BINARY FOUND — the HTML report was NOT checked in a real browser. "
                    "Install one (apt-get install -y chromium) to run this test. !!!")
    page = tmp_path / "report.html"
    page.write_text(render(curves(mixed), "html"), encoding="utf-8")
    png = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1200,1600", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 0, f"no screenshot: {proc.stderr[-2000:]}"
    width, bpp, rows = _png_pixels(png.read_bytes())
    assert (width, len(rows)) == (1200, 1600)
    colours: dict[bytes, int] = {}
    for row in rows[::4]:
        for x in range(0, len(row), bpp * 4):
            px = row[x:x + 3]
            colours[px] = colours.get(px, 0) + 1
    sampled = sum(colours.values())
    background = max(colours.values())
    assert len(colours) > 50, f"only {len(colours)} distinct colours: a blank page?"
    assert sampled - background > 0.05 * sampled, "almost every pixel is the background colour"
    # The inline script runs (its CSP hash matches) and filters: a prefilled search keeps 2 of 8 rows.
    page.write_text(render(mixed, "html").replace('<input id="q" ', '<input id="q" value="checker bug" '),
                    encoding="utf-8")
    dom = subprocess.run([*cmd[:-3], "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    assert '<span id="shown">2</span>' in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.count(" hidden=\"\"") == 6
    if UPDATE:
        target = REPO / "docs" / "img" / "report.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)
