"""The task API: verdicts, examples, extraction, the Task interface, scoring and the self-test."""
