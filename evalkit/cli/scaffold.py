"""`evalkit init`: the layout a project gets — tasks/, finetune/, reports/, a gate and settings."""

from __future__ import annotations

from pathlib import Path

TASK = '''"""My first checkable task: doubling a number (replace with your own)."""

from evalkit import task, verdict


@task(name="double", version=1, target=0.9, levels=range(1, 5), tags=("example",))
class Double:
    def generate(self, rng, level):
        return {"x": rng.randrange(10 ** level)}

    def prompt(self, ex):
        return f"2*{ex['x']}="

    def reference(self, ex):
        return str(2 * ex["x"])

    def check(self, ex, answer):
        ok = answer == self.reference(ex)
        return verdict(ok, "" if ok else f"expected {self.reference(ex)}, got {answer!r}")
'''

RECIPE = '''# Train a tiny model from scratch on the `double` task until it passes 90 % of held-out examples.
name: double
model: {base: scratch, hidden: 128, layers: 4, heads: 4, intermediate: 512, max_positions: 64}
data:
  size: 40000
  sources:
    - task: double
      levels: {2: 0.5, 3: 0.5}
train: {batch_size: 128, lr: 0.001, threads: 2}
eval:
  every: 100
  n: 200
  tasks:
    double: {target: 0.9, level: 3}
budget: {max_steps: 3000, max_minutes: 15}
'''

GATE = '''# evalkit gate reports/<run> --config gate.yaml
tasks:
  double: {min_pass_rate: 0.9, max_error_rate: 0.0}
run: {n: 200, seed: 0, level: 3}
'''

PYPROJECT = '''
[tool.evalkit]
tasks = ["tasks"]
reports = "reports"
'''


def init_project(root: Path) -> list[Path]:
    """Create the layout under `root`; existing files are never overwritten. Returns what was written."""
    root.mkdir(parents=True, exist_ok=True)
    written = []
    files = {
        root / "tasks" / "double.py": TASK,
        root / "finetune" / "double.yaml": RECIPE,
        root / "gate.yaml": GATE,
        root / "reports" / "baselines" / ".gitkeep": "",
    }
    for path, text in files.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    pyproject = root / "pyproject.toml"
    existing = pyproject.read_text(encoding="utf-8") if pyproject.exists() else ""
    if "[tool.evalkit]" not in existing:
        pyproject.write_text(existing + PYPROJECT, encoding="utf-8")
        written.append(pyproject)
    return written
