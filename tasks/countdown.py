"""Example task: the Countdown numbers game (a seeded generator with a reference solver, a randomized
solver for the self-test's `solutions` and an independent judge as its `second_opinion`).

Given a few numbers and a target, write an arithmetic expression that equals the target
using + - * / and parentheses, each given number at most as often as it is given (not all
numbers need be used). Division is exact (fractions), so 7/2*2 is 7.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from evalkit import task, verdict
from evalkit.core.extract import first_line

SMALL = tuple(range(1, 11))
LARGE = (25, 50, 75, 100)
MAX_TARGET = 999
MAX_CHARS = 200
MAX_NODES = 64


def _count(level: int) -> int:
    return level + 2


@task(
    name="countdown",
    version=1,
    target=0.8,
    levels=range(1, 5),
    default_level=2,
    tags=("arithmetic", "search", "generated", "example"),
    # The reference for 6 numbers is under ~30 characters; leave room for spaces and parentheses.
    max_new_tokens=48,
    stop=("\n",),
    system="Reply with one arithmetic expression only.",
    fewshot=[("Using each of 2 3 10 at most once, with + - * / and parentheses, write an expression equal to 16.",
              "2*3+10")],
    chat_max_new_tokens=48,
)
class Countdown:
    """Reach a target from level+2 numbers with + - * / ( ), using each given number at most once."""

    def generate(self, rng, level):
        k = _count(level)
        while True:
            large = rng.randint(0, min(2, k - 1))
            numbers = rng.sample(LARGE, large) + [rng.choice(SMALL) for _ in range(k - large)]
            target = _construct_target(rng, numbers)
            if target is not None and target not in numbers:
                return {"numbers": sorted(numbers), "target": target}

    def prompt(self, ex):
        numbers = " ".join(map(str, ex["numbers"]))
        return (f"Using each of {numbers} at most once, with + - * / and parentheses, "
                f"write an expression equal to {ex['target']}:")

    def chat(self, ex):
        return self.prompt(ex).removesuffix(":") + "."

    def reference(self, ex):
        return solve(ex["numbers"], ex["target"])

    def chat_extract(self, output):
        # The first line, without backticks or a full stop around it, and without "= value" after it when
        # the expression has that value ("3*7+25 = 46"; "3*7+25 = 47" keeps its "=" and fails). The
        # checker then judges the whole expression against the target, as in raw mode.
        line = first_line(output).removesuffix(".").strip()
        if len(line) > 2 and line[0] == line[-1] == "`":
            line = line[1:-1].strip()
        expression, eq, value = line.rpartition("=")
        value = value.strip()
        if eq and value.isascii() and value.isdigit() and len(value) <= 12:
            try:
                if _evaluate(parse_expression(expression)) == int(value):
                    return expression.strip()
            except (ValueError, ZeroDivisionError):
                pass
        return line

    def chat_solutions(self, ex, rng):
        expr = self.reference(ex)
        return [f"{expr} = {ex['target']}", f"`{expr}`", f"{expr}.", f"\n{expr}\n\nIt uses each number once."]

    def check(self, ex, answer):
        try:
            tree = parse_expression(answer)
        except ValueError as exc:
            return verdict(False, str(exc))
        used = Counter(_constants(tree))
        over = used - Counter(ex["numbers"])
        if over:
            n = min(over)
            if n not in ex["numbers"]:
                return verdict(False, f"uses {n}, which is not one of the given numbers")
            return verdict(False, f"uses {n} more often than given ({used[n]} > {ex['numbers'].count(n)})")
        try:
            value = _evaluate(tree)
        except ZeroDivisionError:
            return verdict(False, "division by zero")
        if value != ex["target"]:
            return verdict(False, f"evaluates to {value}, not {ex['target']}")
        return verdict(True)

    def solutions(self, ex, rng):
        # Many expressions are right: a randomized search finds several different ones (other
        # numbers, operations and operand orders), some written with spaces or redundant parentheses.
        # The self-test requires the checker to accept every one of them.
        found = []
        for ops in range(1, len(ex["numbers"])):
            for _ in range(2):
                expr = random_solution(ex["numbers"], ex["target"], ops, rng)
                if expr is not None and expr not in found:
                    found.append(expr)
        spaced = [re.sub(r"([-+*/])", lambda m: rng.choice(["", " "]) + m.group(1) + rng.choice(["", " "]), e)
                  for e in found[:2]]
        return found + spaced + [f"({e})" for e in found[:1]]

    def second_opinion(self, ex, answer):
        # An independent judge of the same answer: a recursive-descent evaluator that shares no
        # code with the `ast` checker. The self-test reports every answer the two judge differently.
        return _independent_is_solution(answer, ex["numbers"], ex["target"])

    def equivalent(self, ex, reference, candidate):
        # A corrupted valid answer that is still a solution is not a checker bug, so judge it with
        # the independent evaluator.
        return _independent_is_solution(candidate, ex["numbers"], ex["target"])


# -- the generator ----------------------------------------------------------------------

def _construct_target(rng, numbers: list[int]) -> int | None:
    """Combine a random subset of `numbers` with random operations; the result is reachable."""
    values = rng.sample(numbers, rng.randint(2, len(numbers)))
    while len(values) > 1:
        a = values.pop(rng.randrange(len(values)))
        b = values.pop(rng.randrange(len(values)))
        a, b = max(a, b), min(a, b)
        ops = ["+", "*"]
        if a > b:
            ops.append("-")
        if b > 1 and a % b == 0:
            ops.append("/")
        op = rng.choice(ops)
        values.append(a + b if op == "+" else a * b if op == "*" else a - b if op == "-" else a // b)
    target = values[0]
    return target if 0 < target <= MAX_TARGET else None


# -- the reference solver ---------------------------------------------------------------

# A term is (value, text, precedence): 3 for a number, 2 for * and /, 1 for + and -.
_Term = tuple[int, str, int]


def _combine(x: _Term, y: _Term, swap: bool = False):
    """Every useful way to combine two terms into a positive integer, larger value first (with
    `swap`, the operands of + and * are written the other way round)."""
    (a, ta, pa), (b, tb, pb) = (x, y) if x[0] >= y[0] else (y, x)
    yield a + b, f"{tb}+{ta}" if swap else f"{ta}+{tb}", 1
    if a > b:
        yield a - b, f"{ta}-{_paren(tb, pb, 2)}", 1
    if b > 1:
        left, right = _paren(ta, pa, 2), _paren(tb, pb, 2)
        yield a * b, f"{right}*{left}" if swap else f"{left}*{right}", 2
        if a % b == 0:
            yield a // b, f"{_paren(ta, pa, 2)}/{_paren(tb, pb, 3)}", 2


def _paren(text: str, prec: int, need: int) -> str:
    return text if prec >= need else f"({text})"


def solve(numbers: list[int], target: int) -> str | None:
    """A shortest expression over a sub-multiset of `numbers` equal to `target`; None if none.

    Iterative deepening on the number of operations; each round is a depth-first search over
    pairs of the remaining terms that remembers the value multisets already exhausted.
    Intermediate values stay positive integers (every target the generator makes is reachable
    that way); multiplying or dividing by 1 is skipped as useless.
    """
    start: list[_Term] = [(n, str(n), 3) for n in numbers]
    for term in start:
        if term[0] == target:
            return term[1]
    failed: set[tuple[int, tuple[int, ...]]] = set()

    def search(terms: list[_Term], ops_left: int) -> str | None:
        key = (ops_left, tuple(sorted(t[0] for t in terms)))
        if key in failed:
            return None
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                rest = terms[:i] + terms[i + 1:j] + terms[j + 1:]
                for term in _combine(terms[i], terms[j]):
                    if term[0] == target:
                        return term[1]
                    if ops_left > 1:
                        found = search(rest + [term], ops_left - 1)
                        if found is not None:
                            return found
        failed.add(key)
        return None

    for ops in range(1, len(numbers)):
        found = search(start, ops)
        if found is not None:
            return found
    return None


def random_solution(numbers: list[int], target: int, ops: int, rng) -> str | None:
    """An expression with at most `ops` operations over a sub-multiset of `numbers` equal to `target`,
    found like `solve` but in a random order (pairs, operations and the written order of + and *
    operands), so repeated calls find different expressions where several exist. None if none."""
    failed: set[tuple[int, tuple[int, ...]]] = set()

    def search(terms: list[_Term], ops_left: int) -> str | None:
        key = (ops_left, tuple(sorted(t[0] for t in terms)))
        if key in failed:
            return None
        pairs = [(i, j) for i in range(len(terms)) for j in range(i + 1, len(terms))]
        rng.shuffle(pairs)
        for i, j in pairs:
            rest = terms[:i] + terms[i + 1:j] + terms[j + 1:]
            options = list(_combine(terms[i], terms[j], swap=rng.random() < 0.5))
            rng.shuffle(options)
            for value, text, prec in options:
                if value == target:
                    return text
                if ops_left > 1:
                    found = search(rest + [(value, text, prec)], ops_left - 1)
                    if found is not None:
                        return found
        failed.add(key)
        return None

    return search([(n, str(n), 3) for n in numbers], ops)


# -- the checker: a safe parse with `ast` -------------------------------------------------

_ALLOWED_CHARS = set("0123456789+-*/() \t")
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_SAFE_NODES = (ast.Expression, *_BINOPS)


def parse_expression(text: str) -> ast.Expression:
    """Parse an arithmetic expression: integers, + - * /, parentheses. Nothing else.

    Raises:
        ValueError: with a short reason, for anything else (names, calls, powers, unary
            minus, floor division, floats, too long or too deeply nested input).
    """
    text = text.strip()
    if not text:
        raise ValueError("empty answer")
    if len(text) > MAX_CHARS:
        raise ValueError(f"expression longer than {MAX_CHARS} characters")
    bad = next((ch for ch in text if ch not in _ALLOWED_CHARS), None)
    if bad is not None:
        raise ValueError(f"character {bad!r} is not allowed: use digits, + - * / and parentheses")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"not a valid expression ({type(exc).__name__})") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ValueError(f"expression has more than {MAX_NODES} parts")
    for node in nodes:  # breadth first: a BinOp is judged before its operator node
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise ValueError(f"operator {type(node.op).__name__} is not allowed: use + - * /")
        elif isinstance(node, ast.UnaryOp):
            raise ValueError("unary operators (like -3) are not allowed")
        elif isinstance(node, ast.Constant):
            if type(node.value) is not int:
                raise ValueError(f"constant {node.value!r} is not an integer")
        elif type(node) not in _SAFE_NODES:
            raise ValueError(f"{type(node).__name__} is not allowed in an expression")
    return tree


def _constants(tree: ast.AST) -> list[int]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of a tree that parse_expression accepted."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        a, b = _evaluate(node.left), _evaluate(node.right)
        op = type(node.op)
        if op is ast.Add:
            return a + b
        if op is ast.Sub:
            return a - b
        if op is ast.Mult:
            return a * b
        if op is ast.Div:
            return a / b  # ZeroDivisionError is the caller's FAIL
    raise ValueError(f"unexpected {type(node).__name__}")


# -- an independent judge for the self-test -------------------------------------------------

_TOKEN = re.compile(r"[ \t]*(?:([0-9]+)|([-+*/()]))")


def _independent_is_solution(text: str, numbers: list[int], target: int) -> bool:
    """Recursive descent over tokens, sharing no code with the checker above."""
    text = text.strip()
    if not text or len(text) > MAX_CHARS:
        return False
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            return False
        tok = m.group(1) or m.group(2)
        if m.group(1) and len(tok) > 1 and tok[0] == "0":
            return False  # Python rejects leading zeros too
        tokens.append(tok)
        pos = m.end()
    used: list[int] = []
    i = 0

    def expr() -> Fraction:
        nonlocal i
        value = term()
        while i < len(tokens) and tokens[i] in "+-":
            op = tokens[i]
            i += 1
            value = value + term() if op == "+" else value - term()
        return value

    def term() -> Fraction:
        nonlocal i
        value = factor()
        while i < len(tokens) and tokens[i] in "*/":
            op = tokens[i]
            i += 1
            value = value * factor() if op == "*" else value / factor()
        return value

    def factor() -> Fraction:
        nonlocal i
        if i >= len(tokens):
            raise SyntaxError("unexpected end")
        tok = tokens[i]
        i += 1
        if tok == "(":
            value = expr()
            if i >= len(tokens) or tokens[i] != ")":
                raise SyntaxError("missing )")
            i += 1
            return value
        if tok.isdigit():
            used.append(int(tok))
            return Fraction(int(tok))
        raise SyntaxError(f"unexpected {tok}")

    try:
        value = expr()
    except (SyntaxError, ZeroDivisionError, RecursionError):
        return False
    if i != len(tokens):
        return False
    return not (Counter(used) - Counter(numbers)) and value == target
