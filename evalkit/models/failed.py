"""A continuation a backend could not produce: `FailedOutput`, an empty string that says why.

A backend returns one in place of a continuation when that one request failed for good in a way
that concerns the answer rather than the whole backend — an OpenAI-compatible server's malformed
body, still malformed after the retries. The runner gives that sample an ERROR verdict (its reason
is the failure; no check runs), journals it marked as failed, and generates it again when the run
is resumed; every other sample of the batch is kept. Failures of the backend as a whole (a server
that cannot be reached, a request past its deadline) still raise and stop the run.
"""

from __future__ import annotations


class FailedOutput(str):
    """An output that is "" and carries `error`, the reason it could not be generated."""

    error: str

    def __new__(cls, error: str) -> FailedOutput:
        obj = super().__new__(cls, "")
        obj.error = str(error)
        return obj

    def __repr__(self) -> str:
        return f"FailedOutput({self.error!r})"

    def __reduce__(self) -> tuple[type[FailedOutput], tuple[str]]:
        return (FailedOutput, (self.error,))
