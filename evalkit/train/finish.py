"""The end of every run: name the missed targets, export the best model, write the final record and report.

    result = finish(run, model, current_step=trainer.state.global_step, data_report=report.to_dict(),
                    default_reason="step budget of 500 steps used")

Output folder, beside evals/, checkpoints/, tokenizer/ and data.json:
    model/          the best model by the checker metric (HF format, safetensors; LoRA merged)
    record.json     the best evaluation's run record + training history: a gate's input
    samples.jsonl   its samples
    report.html     the report with learning curves
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from evalkit.train.checkpoints import remove_staging
from evalkit.train.common import FinetuneResult, Run, broadcast, is_main


def missed_targets(run: Run) -> list[str]:
    """One line per target the last evaluation missed, with the shortfall."""
    last = run.state.history[-1] if run.state.history else None
    missed = []
    for name, r in (last["rates"] if last else {}).items():
        if not r["met"]:
            measured = r["low"] if r["on"] == "lower_bound" else r["rate"]
            what = "95% lower bound" if r["on"] == "lower_bound" else "pass rate"
            missed.append(f"{name}: {what} {measured:.1%} < target {r['target']:.1%} "
                          f"(short by {100 * (r['target'] - measured):.1f} points)")
    return missed


def export_best(run: Run, model: Any, current_step: int) -> int | None:
    """Save the best model (by the checker metric) to output/model as plain HF weights; its step.

    `model` holds the weights of `current_step`; another best step is loaded from its checkpoint.
    """
    from evalkit.models.tiny import save_model

    if not run.state.best:
        return None
    best_step = run.state.best[0]["step"]
    ckpt = run.ckpt_dir / f"checkpoint-{best_step}"
    if best_step != current_step and ckpt.is_dir():
        from safetensors.torch import load_file

        weights = next((ckpt / n for n in ("model.safetensors", "adapter_model.safetensors")
                        if (ckpt / n).is_file()), None)
        if weights is not None:
            state = load_file(str(weights))
            if weights.name.startswith("adapter"):
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(model, state)
            else:
                model.load_state_dict(state, strict=False)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    save_model(model, run.tokenizer, run.output / "model")
    return best_step


def final_record(run: Run, best_step: int | None, data_report: dict[str, Any]) -> Path | None:
    """record.json (the best evaluation, its samples, the recipe's targets, meta.training) and report.html."""
    from evalkit.run.record import RunRecord, load_record

    if best_step is None:
        return None
    output, recipe = run.output, run.recipe
    entry = next(h for h in run.state.history if h["step"] == best_step)
    data = json.loads(json.dumps(load_record(output / entry["record"]).data))
    data["run_id"] = recipe.name
    shutil.copyfile(output / entry["record"] / "samples.jsonl", output / "samples.jsonl")
    data["samples_file"] = "samples.jsonl"
    data["model"] = {"spec": f"hf:{output / 'model'}", "identity": data["model"]["identity"]}
    for t in data["tasks"]:  # the recipe's targets, so that `evalkit gate OUTPUT` judges what training aimed at
        if t["name"] in run.targets:
            t["target"] = run.target_of(t["name"])
            t["meets_target"] = t["rate"] >= t["target"]
    data["meta"] = {**data.get("meta", {}), "training": {
        "recipe": str(recipe.file), "mode": recipe.mode, "best_step": best_step,
        "wall_s": round(run.elapsed(), 2),  # the whole run's (over resumes), not the best evaluation's
        "history": run.state.history, "stopped_because": run.state.stopped_because, "data": data_report,
        "targets": {t.task: {"target": run.target_of(t.task), "on": t.on} for t in recipe.targets},
        **({"eval_checkers": recipe.eval_checkers} if recipe.eval_checkers else {}),
        **run.training_meta,
    }}
    record = RunRecord(data)
    record.save(output)
    try:
        from evalkit.reports import render

        (output / "report.html").write_text(render(record, "html"), encoding="utf-8")
    except ImportError:  # pragma: no cover - reports ship with evalkit
        pass
    return output / "record.json"


def finish(run: Run, model: Any, *, current_step: int, data_report: dict[str, Any], default_reason: str,
           met: bool | None = None) -> FinetuneResult:
    """Name missed targets, export the best model, write the final record and report.

    Args:
        current_step: the step whose weights `model` holds.
        default_reason: why training stopped, when the loop did not say (e.g. the budget ended).
        met: overrides the confirmed-target rule (None: last evaluation met and confirmed).
    """
    state = run.state
    if state.stopped_because is None:
        state.stopped_because = default_reason
    missed = missed_targets(run)
    if met is None:
        last = state.history[-1] if state.history else None
        met = bool(last and last["all_met"] and state.consecutive_met >= run.recipe.confirm)
    met = bool(broadcast([1.0 if met else 0.0])[0])  # only rank 0 evaluates: every rank exits alike
    best_step = record_path = None
    if is_main():
        remove_staging(run.ckpt_dir)
        best_step = export_best(run, model, current_step)
        record_path = final_record(run, best_step, data_report)
    return FinetuneResult(run.output, met, best_step, record_path, state.stopped_because, tuple(missed),
                          is_main=is_main())


__all__ = ["export_best", "final_record", "finish", "missed_targets"]
