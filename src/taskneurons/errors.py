"""The one error type a user sees for bad configs or bad data."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad configuration or data, found before any model is loaded.

    Carries every problem found, each naming the config key or file:line and how to fix it, so a
    user fixes them all in one go instead of one per run.
    """

    def __init__(self, problems: str | list[str]):
        # the same problem found by two checks (e.g. an entry point's and the session's) is said once
        self.problems = [problems] if isinstance(problems, str) else list(dict.fromkeys(problems))
        super().__init__("; ".join(self.problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems: " + "; ".join(self.problems)


def raise_if_any(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)
