"""Resident memory of this process (Linux ``/proc``): read by the benchmarks and the methods artefact."""

from __future__ import annotations


def status_mb(field: str) -> float:
    """A /proc/self/status field (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so a peak is the measured work's
    # own, not the model loading's (which briefly holds two copies of the weights).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
