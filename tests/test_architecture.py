"""The house plan holds (docs/ARCHITECTURE.md): each package imports only from packages below it, no
module imports a private name from another module, no import cycles, modules stay small.

Imports are read from the source with `ast` (lazy imports inside functions count too: a lazy import
upward is still a dependency upward). Only code is read, not strings (the lm-eval export writes
Python source into its folders as text).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "evalkit"

# Bottom to top. A module may import from its own room and the rooms below it. The order is the one
# docs/ARCHITECTURE.md draws; change both together.
ROOMS: list[tuple[str, ...]] = [
    ("evalkit.errors", "evalkit.version", "evalkit._text", "evalkit._yaml", "evalkit.config", "evalkit.argtypes"),
    ("evalkit.schemas",),
    ("evalkit.sandbox",),
    ("evalkit.core",),
    ("evalkit.checkers",),
    ("evalkit.lmeval",),
    ("evalkit.packs",),
    ("evalkit.discovery",),
    ("evalkit.models",),
    ("evalkit.run",),
    ("evalkit.reports",),
    ("evalkit.gate",),
    ("evalkit.train",),
    ("evalkit.experiment",),
    ("evalkit.pytest_plugin", "evalkit.cli", "evalkit.__main__"),
    ("evalkit",),  # the public API (evalkit/__init__.py) re-exports from any room
]

# Modules allowed past 400 lines, each with the reason (none today).
LONG_MODULES: dict[str, str] = {}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "_bundled_tasks" not in p.parts}


def room_of(module: str) -> int:
    best, found = -1, None
    for index, room in enumerate(ROOMS):
        for prefix in room:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} is in no room of the house plan: add it to ROOMS and the picture"
    return found


def resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not MODULES[module].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every evalkit import in `module`."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "evalkit"]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if target.split(".")[0] != "evalkit":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # `from evalkit.run import stats`: the module itself
                    found.append((sub, None, node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return found


def test_every_module_is_in_a_room():
    for module in MODULES:
        room_of(module)


def test_packages_import_only_from_below():
    wrong = []
    for module in MODULES:
        mine = room_of(module)
        for target, name, line in imports(module):
            if target not in MODULES:
                wrong.append(f"{module}:{line} imports {target}, which is not a module")
            elif room_of(target) > mine:
                wrong.append(f"{module}:{line} imports {target}{'.' + name if name else ''} from a room above it")
    assert not wrong, "\n".join(wrong)


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_no_private_names_cross_modules():
    """`from x import _name` from another module, or a private module from outside its package."""
    wrong = []
    for module in MODULES:
        for target, name, line in imports(module):
            if target == module:
                continue
            if name is not None and name.startswith("_") and not name.startswith("__"):
                wrong.append(f"{module}:{line} takes private {name} from {target}")
            private_parts = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            if private_parts:
                owner = target[: target.index(private_parts[0])].rstrip(".")
                if not (module == owner or module.startswith(owner + ".")) or owner == "evalkit":
                    # a private module may be used inside its own package only (evalkit's own
                    # ground-floor helpers _text and _yaml are shared by the whole library)
                    if target not in ("evalkit._text", "evalkit._yaml"):
                        wrong.append(f"{module}:{line} uses private module {target} from outside its package")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _, _ in imports(module):
            if target in MODULES and target != module and module != "evalkit":
                # a package's __init__ importing its own modules is not a cycle with them
                if _package(module) == module and target.startswith(module + "."):
                    continue
                graph[module].add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    if module in LONG_MODULES:
        return
    assert lines <= MAX_LINES, (f"{MODULES[module]} has {lines} lines (> {MAX_LINES}): split it by concept, or "
                                "add it to LONG_MODULES with the reason")


def test_architecture_doc_names_every_package():
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    packages = sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1 and MODULES[m].name == "__init__.py"
                       and not m.split(".")[1].startswith("_")})
    missing = [p for p in packages if f"{p}/" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not show these packages: {missing}"
