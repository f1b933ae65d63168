"""Experiments: the scale ladder and the data-source ablation, as trials of ordinary fine-tune runs.

The files: `plan` (the experiment file, the ladder's stop rule, the ablation's verdicts; pure),
`trials` (one trial's worker and where trials run: this process, processes, Ray), `measure`
(a finished trial's compute and rates, trial.json), `summary` (the summary document),
`report` (terminal, Markdown, HTML) and `runner` (`run_experiment`, which ties them together).
"""
