"""Reading YAML files the user wrote: every failure is a ConfigError naming the file (and line).

Anchors and aliases are allowed, but bounded: a document whose aliases would expand it by more than
`MAX_ALIAS_EXPANSION` nodes (a "billion laughs" bomb, which is a few hundred bytes on disk and billions
of values to anything that walks it, such as schema validation) or that refers to itself is refused
before anything is built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import ConfigError

MAX_ALIAS_EXPANSION = 100_000
"""How many nodes aliases may add to a document, beyond the nodes written in it."""


def read_yaml(path: Path, what: str = "file") -> Any:
    """The parsed YAML document at `path` (safe types only; aliases bounded).

    Raises:
        ConfigError: missing, unreadable, not valid YAML (with the line and column), or aliases that
            expand without bound or refer to the node holding them.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what}: {exc}", file=path) from None
    try:
        return _load_bounded(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=path) from None


def _load_bounded(text: str, path: Path) -> Any:
    """yaml.safe_load, with the node graph checked before it is turned into Python values."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuse a node graph whose expanded tree (every alias copied out) is much larger than the graph, or cyclic.

    Sizes are computed once per distinct node (memoized), so the check is linear in the document even for
    a bomb; a node met again while its own size is being computed is an alias to one of its ancestors.
    """
    size: dict[int, int] = {}
    distinct = 0
    # Iterative post-order walk: (node, children pushed?) on a stack; recursion would overflow on deep documents.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        if key in open_nodes:
            mark = node.start_mark
            raise ConfigError(f"an alias refers to a node that contains it (line {mark.line + 1}, column "
                              f"{mark.column + 1}): a recursive document is not allowed", file=path)
        distinct += 1
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                mark = child.start_mark
                raise ConfigError(f"an alias refers to a node that contains it (line {mark.line + 1}, column "
                                  f"{mark.column + 1}): a recursive document is not allowed", file=path)
            if id(child) not in size:
                stack.append((child, False))
    total = size.get(id(root), 0)
    if total - distinct > MAX_ALIAS_EXPANSION:
        raise ConfigError(f"its aliases expand it to {total:,} values (written: {distinct:,}; at most "
                          f"{MAX_ALIAS_EXPANSION:,} more are allowed): an alias bomb, refused", file=path)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
