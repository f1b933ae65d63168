"""What evalkit knows about valid answers to some reasoning-gym datasets, beyond the entry's `answer`.

Tables keyed by dataset name; the functions take the entry (question, answer, metadata with
reasoning-gym's own Python types) or answers:

- `REFERENCES`: a reference answer where the entry's `answer` is None (the dataset accepts many).
- `SOLUTIONS`: several valid answers, as different as possible in content and form, made without
  reasoning-gym's scorer (so the self-test's "accepts solutions" tests that scorer, not itself).
- `EQUIVALENCES`: whether an answer is right by an independent judge, for the self-test, which must
  not count a "corruption" that is still a right answer (another valid colouring) as a checker bug.
- `SECOND_OPINIONS`: an independent judge of an answer (the self-test compares it with `score_answer`).

Datasets not listed fall back to the entry's `answer` as the one known valid answer.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Mapping
from typing import Any

Entry = Mapping[str, Any]


# -- graph_color: any proper colouring with the allowed colours is right -----------------------------
def _puzzle(entry: Entry) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    puzzle = entry["metadata"]["puzzle"]
    return list(puzzle["vertices"]), [(int(u), int(v)) for u, v in puzzle["edges"]], list(puzzle["color_options"])


def _colourings(entry: Entry, rng: random.Random, tries: int = 60) -> list[dict[int, int]]:
    """Distinct proper colourings: random vertex orders, each vertex a random colour its neighbours lack."""
    vertices, edges, colours = _puzzle(entry)
    neighbours: dict[int, set[int]] = {v: set() for v in vertices}
    for u, v in edges:
        neighbours[u].add(v)
        neighbours[v].add(u)
    found: list[dict[int, int]] = []
    for _ in range(tries):
        order = list(vertices)
        rng.shuffle(order)
        colouring: dict[int, int] = {}
        for v in order:
            free = [c for c in colours if all(colouring.get(n) != c for n in neighbours[v])]
            if not free:
                break
            colouring[v] = rng.choice(free)
        if len(colouring) == len(vertices) and colouring not in found:
            found.append(colouring)
    return found


def _far_apart(colourings: list[dict[int, int]], k: int) -> list[dict[int, int]]:
    """Up to k colourings, each chosen to differ from those already chosen in as many vertices as possible."""
    if not colourings:
        return []
    chosen = [colourings[0]]
    rest = colourings[1:]
    while rest and len(chosen) < k:
        best = max(rest, key=lambda c: min(sum(c[v] != d[v] for v in c) for d in chosen))
        chosen.append(best)
        rest.remove(best)
    return chosen


def graph_color_reference(entry: Entry) -> str | None:
    answer = entry["metadata"].get("possible_answer")
    if not answer:
        return None
    return json.dumps({str(v): c for v, c in sorted(answer.items())})


def graph_color_solutions(entry: Entry, rng: random.Random) -> list[str]:
    """Four colourings far apart, each written differently: key order, spacing, line breaks."""
    picked = _far_apart(_colourings(entry, rng), 4)
    out = []
    for i, colouring in enumerate(picked):
        items = sorted(colouring.items())
        if i % 2:
            items.reverse()
        text = {str(v): c for v, c in items}
        if i == 0:
            out.append(json.dumps(text))
        elif i == 1:
            out.append(json.dumps(text, separators=(",", ":")))
        elif i == 2:
            out.append(json.dumps(text, indent=2))
        else:
            out.append("{ " + " , ".join(f'"{v}" : {c}' for v, c in items) + " }")
    return out


def graph_color_opinion(entry: Entry, answer: str) -> bool:
    """The question's own terms: a JSON object giving every vertex (as its number) one of the allowed
    colours (a number, not `true`), adjacent vertices different. Other keys are ignored."""
    vertices, edges, colours = _puzzle(entry)
    try:
        given = json.loads(answer)
    except (ValueError, RecursionError):
        return False
    if not isinstance(given, dict):
        return False
    colouring = {}
    for v in vertices:
        c = given.get(str(v))
        if isinstance(c, bool) or not isinstance(c, (int, float)) or c not in colours:
            return False
        colouring[v] = c
    return all(colouring[u] != colouring[v] for u, v in edges)


# -- rubiks_cube: any move sequence that solves the cube ---------------------------------------------
def _invert(move: str) -> str:
    return move[:-1] if move.endswith("'") else move + "'"


def rubiks_cube_solutions(entry: Entry, rng: random.Random) -> list[str]:
    """The scramble undone (its moves inverted, in reverse order), and the dataset's example solution."""
    meta = entry["metadata"]
    undo = " ".join(_invert(m) for m in reversed(str(meta["scramble_moves"]).split()))
    out = [undo]
    example = meta.get("example_correct_answer")
    if isinstance(example, str) and example.strip() and example != undo:
        out.append(example)
    return out


def rubiks_cube_reference(entry: Entry) -> str | None:
    """The dataset's own example solution where it has one, else the scramble undone."""
    example = entry["metadata"].get("example_correct_answer")
    if isinstance(example, str) and example.strip():
        return example
    return rubiks_cube_solutions(entry, random.Random(0))[0]


# -- propositional_logic: any non-trivial conclusion the premises entail -----------------------------
def propositional_logic_reference(entry: Entry) -> str | None:
    example = entry["metadata"].get("example_answer")
    return example if isinstance(example, str) and example else None


# -- rush_hour: any sequence of legal slides that brings the red car (AA) to the right edge ---------
SIDE = 6
Cars = dict[str, tuple[int, ...]]  # vehicle letter -> its cells (row * SIDE + column), in order


def _rush_cars(entry: Entry) -> Cars:
    """The board as the question shows it (its letters are the ones the moves name)."""
    rows = str(entry["question"]).split("Board:", 1)[1].split()
    cells: dict[str, list[int]] = {}
    for r, row in enumerate(rows[:SIDE]):
        for c, ch in enumerate(row[:SIDE]):
            if ch != ".":
                cells.setdefault(ch if ch != "x" else f"x{r * SIDE + c}", []).append(r * SIDE + c)
    return {k: tuple(v) for k, v in cells.items()}


def _slide(cars: Cars, car: str, steps: int) -> Cars | None:
    """The board after sliding `car` by `steps` along its axis, if every cell it crosses is free."""
    cells = cars[car]
    if car.startswith("x") or len(cells) < 2 or steps == 0:
        return None
    stride = 1 if cells[1] - cells[0] == 1 else SIDE
    taken = {cell for other, cs in cars.items() if other != car for cell in cs}
    moved = cells
    for _ in range(abs(steps)):
        step = stride if steps > 0 else -stride
        moved = tuple(cell + step for cell in moved)
        if any(not 0 <= cell < SIDE * SIDE or cell in taken for cell in moved):
            return None
        if stride == 1 and len({cell // SIDE for cell in moved}) != 1:
            return None  # a horizontal car cannot wrap to the next row
    return {**cars, car: moved}


def _solved(cars: Cars) -> bool:
    return cars["A"][-1] % SIDE == SIDE - 1


@functools.lru_cache(maxsize=256)
def _rush_solve(question: str) -> tuple[tuple[str, int], ...] | None:
    """A shortest solution (fewest slides) by breadth-first search over the cars' positions."""
    cars = _rush_cars({"question": question})
    movable = sorted(car for car in cars if not car.startswith("x"))
    walls = {cell for car, cells in cars.items() if car.startswith("x") for cell in cells}
    length = [len(cars[car]) for car in movable]
    stride = [1 if cars[car][1] - cars[car][0] == 1 else SIDE for car in movable]
    red = movable.index("A")
    start = tuple(cars[car][0] for car in movable)
    parent: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[str, int]] | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for state in frontier:
            if (state[red] + length[red] - 1) % SIDE == SIDE - 1:
                moves = []
                node = state
                while (link := parent[node]) is not None:
                    node, move = link
                    moves.append(move)
                return tuple(moves[::-1])
            taken = set(walls)
            for i, head in enumerate(state):
                taken.update(head + k * stride[i] for k in range(length[i]))
            for i, head in enumerate(state):
                for d in (1, -1):
                    pos, steps = head, 0
                    while True:
                        cell = pos + length[i] * stride[i] if d > 0 else pos - stride[i]  # the cell it enters
                        if not 0 <= cell < SIDE * SIDE or cell in taken:
                            break
                        if stride[i] == 1 and cell // SIDE != head // SIDE:
                            break
                        pos, steps = pos + d * stride[i], steps + 1
                        after = state[:i] + (pos,) + state[i + 1:]
                        if after not in parent:
                            parent[after] = (state, (movable[i], d * steps))
                            following.append(after)
        frontier = following
    return None


def _moves_text(moves: list[tuple[str, int]]) -> str:
    return " ".join(f"{car}{steps:+d}" for car, steps in moves)


def rush_hour_reference(entry: Entry) -> str | None:
    moves = _rush_solve(str(entry["question"]))
    return None if moves is None else _moves_text(list(moves))


def rush_hour_solutions(entry: Entry, rng: random.Random) -> list[str]:
    """A shortest solution, the same one slide by slide, and one that starts with a detour."""
    found = _rush_solve(str(entry["question"]))
    if found is None:
        return []
    moves = list(found)
    unit = [(car, 1 if steps > 0 else -1) for car, steps in moves for _ in range(abs(steps))]
    out = [_moves_text(moves), _moves_text(unit)]
    first = moves[0][0]
    start = _rush_cars(entry)
    detour = next(((car, d) for car in sorted(start) for d in (1, -1)
                   if car != first and _slide(start, car, d) is not None), None)
    if detour is not None:
        out.append(_moves_text([detour, (detour[0], -detour[1]), *moves]))
    return out


def rush_hour_opinion(entry: Entry, answer: str) -> bool:
    """The question's terms, strictly: moves `F+1` separated by spaces and nothing else, each slide legal
    in full (no car through another, a wall or the edge), the red car at the exit at the end."""
    cars = _rush_cars(entry)
    for token in answer.split():
        if len(token) < 3 or token[0] not in cars or token[1] not in "+-" or not token[2:].isdigit():
            return False
        if int(token[2:]) == 0:
            continue  # a slide by nothing: harmless
        after = _slide(cars, token[0], int(token[1:]))
        if after is None:
            return False
        cars = after
    return bool(answer.split()) and _solved(cars)


REFERENCES: dict[str, Callable[[Entry], str | None]] = {
    "graph_color": graph_color_reference,
    "rubiks_cube": rubiks_cube_reference,
    "propositional_logic": propositional_logic_reference,
    "rush_hour": rush_hour_reference,
}

SOLUTIONS: dict[str, Callable[[Entry, random.Random], list[str]]] = {
    "graph_color": graph_color_solutions,
    "rubiks_cube": rubiks_cube_solutions,
    "rush_hour": rush_hour_solutions,
}

EQUIVALENCES: dict[str, Callable[[Entry, str], bool]] = {
    # A corrupted colouring that is still a proper colouring is a right answer, not a checker bug.
    "graph_color": graph_color_opinion,
    "rush_hour": rush_hour_opinion,
}

SECOND_OPINIONS: dict[str, Callable[[Entry, str], bool]] = {
    "graph_color": graph_color_opinion,
    "rush_hour": rush_hour_opinion,
}
