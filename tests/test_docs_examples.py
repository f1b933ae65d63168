"""Every ```python block in README.md and docs/*.md runs, as a reader would run it.

The blocks of one document run in order in one namespace, in a fresh project folder (the working
directory, with no pyproject.toml: names resolve to evalkit's bundled tasks until a block's fixture
writes a `tasks/` folder). What a block needs is declared in FIXTURES, keyed by the document and a
distinctive line of the block: a block with no entry fails (add one), and so does an entry that
matches no block. A block that defines a @task class has it run by the oracle (100 % expected) and
self-tested; a block that defines `test_*` functions has them called.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import evalkit
from evalkit.core.task import TASK_MARKER

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def blocks(document: str, lang: str | None = "python") -> list[Block]:
    text = (REPO / document).read_text(encoding="utf-8")
    return [Block(document, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
            for m in _FENCE.finditer(text) if lang is None or m.group(1) == lang]


def block_with(line: str) -> Callable[[str], str]:
    """File content: the code of the block (any language) in the same document holding `line`."""
    def content(document: str) -> str:
        [hit] = [b for b in blocks(document, None) if line in b.code]
        return hit.code
    return content


@dataclass(frozen=True)
class Fixture:
    """What a block needs.

    model: `model` and `tokenizer` in the namespace: a tiny random Llama with a character tokenizer.
    files: written into the project folder before the block (text, or a function of the document).
    """

    model: bool = False
    files: Mapping[str, str | Callable[[str], str]] = field(default_factory=dict)


CAPITALS = '{"country": "France", "capital": "Paris"}\n{"country": "Japan", "capital": "Tokyo"}\n'
MY_TASK = '''from evalkit import task, verdict

@task(name="my_task", levels=[2], max_new_tokens=8)
class Double:
    def generate(self, rng, level):
        return {"x": rng.randrange(10 ** level)}
    def prompt(self, ex):        return f"2*{ex['x']}="
    def reference(self, ex):     return str(2 * ex["x"])
    def check(self, ex, answer): return verdict(answer == self.reference(ex))
'''

# (document, a line of the block) -> its fixture.
FIXTURES: dict[tuple[str, str], Fixture] = {
    ("README.md", "record = evalkit.evaluate(model=model, tokenizer=tokenizer"): Fixture(model=True),
    ("README.md", "result = evalkit.judge("): Fixture(files={"gate.yaml": (REPO / "gate.yaml").read_text()}),
    ("README.md", '@task(name="addition", version=1'): Fixture(),
    ("README.md", "def test_my_task_checker_is_sound():"): Fixture(files={"tasks/my_task.py": MY_TASK}),
    ("docs/WRITING_TASKS.md", '@task(name="reverse_words"'): Fixture(),
    ("docs/WRITING_TASKS.md", "evalkit.evaluate(tasks=[ReverseWords]"): Fixture(),
    ("docs/WRITING_TASKS.md", '@task(name="times_table"'): Fixture(),
    ("docs/WRITING_TASKS.md", '@task(name="chat_sum"'): Fixture(),
    ("docs/WRITING_TASKS.md", 'evalkit.load_tasks(["reverse_words", "capital*"])'): Fixture(files={
        "tasks/reverse_words.py": block_with('@task(name="reverse_words"'),
        "tasks/capitals.yaml": block_with("name: capitals"),
        "tasks/data/capitals.jsonl": CAPITALS,
    }),
    ("docs/PACKS.md", 'evalkit.load_tasks(["rg:graph_color"'): Fixture(),  # needs evalkit[reasoning-gym]
}


def fixture_of(block: Block) -> Fixture:
    hits = [f for (doc, line), f in FIXTURES.items() if doc == block.document and line in block.code]
    if not hits:
        pytest.fail(f"{block.where}: a python block with no entry in FIXTURES (tests/test_docs_examples.py); "
                    f"add one keyed by a distinctive line of it:\n{block.code}")
    if len(hits) > 1:
        pytest.fail(f"{block.where}: the block matches {len(hits)} FIXTURES entries; use more distinctive lines")
    return hits[0]


def test_a_block_without_fixture_fails():
    with pytest.raises(pytest.fail.Exception, match="no entry in FIXTURES"):
        fixture_of(Block("README.md", 1, "python", "print('a new example')"))


def test_every_fixture_matches_one_block():
    for (document, line) in FIXTURES:
        found = [b for b in blocks(document) if line in b.code]
        assert len(found) == 1, f"FIXTURES entry ({document!r}, {line!r}) matches {len(found)} python blocks"


def test_the_documents_have_python_blocks():
    assert blocks("README.md") and blocks("docs/WRITING_TASKS.md")


@pytest.fixture(scope="module")
def tiny_model() -> tuple[Any, Any]:
    pytest.importorskip("transformers")
    from evalkit.models.tiny import build_char_tokenizer, tiny_llama

    tokenizer = build_char_tokenizer()
    return tiny_llama(tokenizer, hidden=64, layers=2, heads=2, seed=0), tokenizer


def _check_defined(block: Block, namespace: dict[str, Any], before: set[str]) -> None:
    """Run what the block defined: @task classes by the oracle and the self-test; test_* functions."""
    for name in sorted(set(namespace) - before):
        obj = namespace[name]
        if hasattr(obj, TASK_MARKER) and isinstance(obj, type):
            task = evalkit.as_task(obj)
            record = evalkit.evaluate(tasks=[obj], model_spec="oracle", n=20)
            assert record.rate(task.name) == 1.0, f"{block.where}: the oracle fails task {task.name!r}"
            evalkit.assert_selftest(obj, levels=task.levels[:2], n_examples=5, max_examples=25)
        elif name.startswith("test_") and callable(obj):
            obj()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_blocks_run(document, tmp_path, monkeypatch, request):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    for block in blocks(document):
        fixture = fixture_of(block)
        if fixture.model:
            namespace["model"], namespace["tokenizer"] = request.getfixturevalue("tiny_model")
        for rel, content in fixture.files.items():
            target = project / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content if isinstance(content, str) else content(document), encoding="utf-8")
        before = set(namespace)
        code = compile(block.code, f"<{block.where}>", "exec")
        try:
            exec(code, namespace)
            _check_defined(block, namespace, before)
        except Exception as exc:
            raise AssertionError(f"{block.where}: the block fails: {type(exc).__name__}: {exc}\n{block.code}") from exc
