"""Example task: write the body of a small Python function (HumanEval format, a data task).

The rows live in data/python_functions.jsonl next to this file: task_id, prompt (the
signature and docstring), canonical_solution (the body), test (`def check(candidate)`)
and entry_point. The model continues the prompt; the completion runs against the tests in
the sandbox of `checkers.python_tests`, never in this process.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from evalkit import checkers, contained, task
from evalkit.core.extract import code_block, cut_at_stop

DATA = Path(__file__).parent / "data" / "python_functions.jsonl"

# A completion ends where the model starts the next top-level statement.
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
_CODE = code_block("python")


@task(
    name="python_functions",
    version=1,
    target=0.8,
    tags=("code", "python", "data", "example"),
    # The longest canonical body is ~280 characters: enough even for a character-level tokenizer.
    max_new_tokens=384,
    stop=STOP,
    # Chat mode: an instruct model writes the whole function in a ```python block; "\ndef " would end
    # it at its first line, so only the end of its turn (and the token budget) ends the answer.
    system="You are an expert Python programmer. Reply with the complete function in a ```python code block.",
    chat_stop=(),
    chat_max_new_tokens=384,
)
@contained  # its checks run in the sandbox, which bounds their time: no worker process needed
class PythonFunctions:
    """Complete a small Python function from its signature and docstring; graded by unit tests."""

    def __init__(self):
        self._check = checkers.python_tests(timeout=10)

    def rows(self):
        with DATA.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    def prompt(self, ex):
        return ex["prompt"]

    def chat(self, ex):
        return f"Complete this Python function:\n\n```python\n{ex['prompt']}```"

    def chat_extract(self, output):
        # The code of the first python block (else of the first block, else the whole output): a whole
        # function redefines the prompt's stub, a body completes it; the unit tests judge either.
        return _CODE(output).rstrip()

    def chat_solutions(self, ex, rng):
        body = self.reference(ex)
        return [f"```python\n{ex['prompt']}{body}\n```",
                f"Here is the completed function:\n\n```python\n{ex['prompt']}{body}\n```\n\nIt passes the examples.",
                f"```py\n{body}\n```"]

    def reference(self, ex):
        # Without trailing whitespace, as extract() leaves a completion: text appended to the
        # reference then lands on its last line instead of becoming a new, harmless statement.
        return ex["canonical_solution"].rstrip()

    def extract(self, output):
        # Not the default extractor: it strips, and leading indentation is part of the code.
        return cut_at_stop(output, STOP).rstrip()

    def solutions(self, ex, rng):
        # The canonical body written otherwise, as a model may write it: after a blank line, or
        # under a comment line. The tests must pass these too (a checker comparing text would not).
        body = self.reference(ex)
        indent = body[: len(body) - len(body.lstrip(" "))]
        comment = rng.choice(["# the solution", "# compute the result", "# body"])
        return ["\n" + body, f"{indent}{comment}\n{body}"]

    def check(self, ex, answer):
        return self._check(ex, answer)

    def equivalent(self, ex, reference, candidate):
        # The same program as the reference: equal syntax trees once formatting, comments and
        # the spelling of numeric literals (0 / 0. / +0 / 0-1 for -1, x[0:n] for x[:n]) are
        # set aside. Only these corruptions are excused; every other edit must fail the tests.
        try:
            return _shape(ex["prompt"] + reference) == _shape(ex["prompt"] + candidate)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False


class _Normalise(ast.NodeTransformer):
    """Fold what a one-character edit can change without changing the program's meaning:
    numeric spelling (0. / .0 / +0 / 0-1), unary plus, a start index of 0 in a slice, a
    trailing comma that turns an expression statement into a 1-tuple, and statements after
    a return (e.g. "return x;junk")."""

    def generic_visit(self, node):
        super().generic_visit(node)
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                for i, stmt in enumerate(stmts):
                    if isinstance(stmt, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                        del stmts[i + 1:]
                        break
        return node

    def visit_Constant(self, node):
        value = node.value
        if type(value) is float and value.is_integer() and abs(value) < 2**53:
            return ast.copy_location(ast.Constant(int(value)), node)
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.UAdd):
            return node.operand
        if isinstance(node.op, ast.USub) and _is_number(node.operand):
            return self.visit_Constant(ast.copy_location(ast.Constant(-node.operand.value), node))
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if _is_number(node.left) and _is_number(node.right) and isinstance(node.op, (ast.Add, ast.Sub)):
            a, b = node.left.value, node.right.value
            return self.visit_Constant(ast.copy_location(
                ast.Constant(a + b if isinstance(node.op, ast.Add) else a - b), node))
        return node

    def visit_Slice(self, node):
        self.generic_visit(node)
        if node.step is None and isinstance(node.lower, ast.Constant) and node.lower.value == 0:
            node.lower = None
        return node

    def visit_Expr(self, node):
        self.generic_visit(node)
        if isinstance(node.value, ast.Tuple) and len(node.value.elts) == 1:
            node.value = node.value.elts[0]
        return node


def _is_number(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _shape(source: str) -> str:
    if len(source) > 20_000:
        raise ValueError("too long to compare")
    return ast.dump(_Normalise().visit(ast.parse(source)))
