"""The error types a user sees: each is one ``error:`` line and a non-zero exit (``runtime/app.py``).

- ``ConfigError`` (exit 2): bad configuration or data, found before any model is loaded.
- ``ResourceError`` (exit 2, a ConfigError): the job cannot fit in this machine's memory (pre-flight).
- ``NumericalError`` (exit 3, a ConfigError): a NaN/inf loss, gradient, score or logit stopped the job; the
  config was valid but its numbers are not (learning rate, float16, a bad row, damaged weights).
"""

from __future__ import annotations


class ConfigError(Exception):
    """Bad configuration or data, found before any model is loaded.

    Carries every problem found, each naming the config key or file:line and how to fix it, so a
    user fixes them all in one go instead of one per run.
    """

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        # the same problem found by two checks (e.g. an entry point's and the session's) is said once
        self.problems = [problems] if isinstance(problems, str) else list(dict.fromkeys(problems))
        super().__init__("; ".join(self.problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems: " + "; ".join(self.problems)


class ResourceError(ConfigError):
    """The job's estimated peak memory is more than the device has (checked before the model loads)."""


class NumericalError(ConfigError):
    """A non-finite value (NaN/inf) in training, evaluation or attribution: the job stops, no result is written.

    A subclass of ConfigError so every place that turns a ConfigError into one line (or, in a sweep, a
    failed job) handles it the same way; its own exit code (3) tells a script "numbers", not "config"."""

    exit_code = 3


def raise_if_any(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)
