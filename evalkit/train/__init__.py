"""Training until the checks pass: recipes, data, and one readable file per method.

    from evalkit.train import finetune
    result = finetune("finetune/addition.yaml", resume=True)   # a FinetuneResult; exit_code 0 or 1

The files, bottom up: `recipe` (the YAML plan), `data` (sources, filters, contamination guard),
`curriculum` (the 0.7 / 0.3 level rule), `checkpoints` (atomic checkpoints, pruning, resume
discovery), `common` (the run context, its evaluation and stop rule, the model, TrainingArguments),
`trainer` (the evaluation and atomic-checkpoint callbacks on the HF Trainer), `finish` (the best
model, the final record), `verify` (what the verifier-only modes share), `display` (the live view);
then the methods, each one file that reads top to bottom: `sft`, `expert_iteration`, `grpo`.
`finetune` prepares the run and hands it to the method the recipe's `mode` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.train.common import FinetuneResult, prepare


def finetune(recipe_path: Path | str, *, output: Path | None = None, resume: bool = False, force: bool = False,
             registry: Any = None, display: Any = None, max_steps: int | None = None,
             overrides: dict[str, Any] | None = None) -> FinetuneResult:
    """Run a recipe to its targets (or its budget), by the method its `mode` names.

    Output folder (default `reports/<recipe name>/`): model/ (the best model by the checker metric),
    record.json (the best evaluation + training history: a gate's input), samples.jsonl, report.html,
    evals/step-N/ (one run record per evaluation), checkpoints/, tokenizer/, data.json.

    Args:
        output: the output folder (default: the recipe's `output`, else reports/<name>/).
        resume: continue from the last complete checkpoint (--resume); force: start over (--force).
        registry: where tasks are looked up (default: the project's task folders).
        display: a live display (evalkit.train.display.TrainingDisplay), shown on rank 0 only.
        max_steps: overrides the recipe's budget.max_steps.
        overrides: merged into the recipe before validation (see `recipe.load_recipe`).
    """
    run = prepare(recipe_path, output=output, resume=resume, force=force, registry=registry, display=display,
                  overrides=overrides)
    from evalkit.train import expert_iteration, grpo, sft  # they import transformers: only when training

    methods = {"sft": sft.train, "expert_iteration": expert_iteration.train, "grpo": grpo.train}
    return methods[run.recipe.mode](run, max_steps=max_steps)


__all__ = ["FinetuneResult", "finetune"]
