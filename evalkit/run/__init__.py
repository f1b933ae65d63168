"""A run: the runner, the sample journal, the run record and its statistics."""
