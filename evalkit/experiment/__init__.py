"""Experiments: the scale ladder and the data-source ablation, as trials of ordinary fine-tune runs."""
