"""Stop signals (SIGTERM, SIGINT, SIGUSR1): keep what exists, exit 128 + signal number.

Schedulers send SIGTERM (SLURM with ``--signal``: SIGUSR1) some time before they kill a job. Every entry
point installs one handler through ``runtime/app.py run_entry``:

- outside a training loop it raises ``Interrupted`` at once: finished steps are already in the job
  state, the step in progress is redone by the rerun;
- inside a training loop (``STOP.defer()``, set by ``lit/resume.py ResumeCheckpoint``) it only records
  the signal; the callback saves a checkpoint at the end of the current batch and raises ``Interrupted``;
- inside ``STOP.deferred()`` (a state file and its checksum sidecar being written) the signal waits
  until the block is complete.

Lightning's Trainer adds its own SIGTERM handler during fit/test: it sets ``trainer.received_sigterm``
and stops the loop with ``SIGTERMException``, a ``SystemExit`` whose code is 0 (which made a preempted
job look finished). It keeps the handler that was there before, so ours still runs; run_entry maps a
``SIGTERMException`` to the same interrupted exit.

Between the jobs of a sweep run in one process (Hydra's basic launcher) the handler stays installed and
only records a signal (``STOP.between_jobs()``); the next job starts interrupted, so a signal that lands
in that gap is never lost to the default action (which would kill the sweep with no summary and no
requeue). ``SweepSummary.on_multirun_end`` restores the previous handlers.

Requeue under SLURM: ``preemption.requeue`` instantiates Lightning's ``SLURMEnvironment``
(``conf/preemption/slurm_requeue.yaml``); on its ``requeue_signal`` the job is requeued with
``scontrol requeue`` after its state is saved.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def as_signal(value: Any) -> signal.Signals:
    """``SIGTERM``, ``TERM``, 15 or a ``signal.Signals`` -> the signal (ValueError names a bad one)."""
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
        try:
            return signal.Signals[name]
        except KeyError:
            raise ValueError(f"unknown signal '{value}'") from None
    return signal.Signals(int(value))


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, so that ``except Exception`` in library code lets it pass."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(self.signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """The process's stop-signal state: which signal arrived, whether it may interrupt right now."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._defer = 0
        self._raised = False
        self._previous: dict[int, Any] = {}
        self._idle = False  # between two jobs of a sweep: a signal now belongs to the next job

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self, signals: Any = STOP_SIGNALS) -> None:
        """Handle ``signals`` in this (main) thread until ``restore()``; resets any earlier request, except
        one that arrived between two jobs of a sweep (``between_jobs``): the job then stops at its first ``check``."""
        pending = self.signum if self._idle else None
        self.signum, self._defer, self._raised, self._idle = pending, 0, False, False
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. a launcher's worker)
        for s in signals:
            sig = as_signal(s)
            if sig not in self._previous:
                self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def between_jobs(self) -> None:
        """A job ended and another of the sweep may follow in this process: keep recording signals."""
        self._idle, self._raised = True, True

    def restore(self) -> None:
        self._idle = False
        if threading.current_thread() is threading.main_thread():
            for sig, previous in self._previous.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: keeping what is finished, then exiting with %d", signal_name(signum), 128 + signum)
        if self._defer or self._raised:
            return  # the training loop (or the block being written) acts on it at its next safe point
        self.raise_now()

    def raise_now(self) -> None:
        """Raise ``Interrupted`` for the recorded signal (once: cleanup after it is not interrupted again)."""
        self._raised = True
        raise Interrupted(self.signum if self.signum is not None else signal.SIGTERM)

    def stopping(self) -> None:
        """The job is shutting down: further signals are only recorded, not raised into the cleanup."""
        self._raised = True

    def defer(self) -> None:
        self._defer += 1

    def undefer(self) -> None:
        self._defer = max(self._defer - 1, 0)

    def check(self) -> None:
        """Raise now if a signal arrived while deferred and nothing defers it any more."""
        if self.requested and not self._defer and not self._raised:
            self.raise_now()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a signal must not cut in half (it is acted on right after the block)."""
        self.defer()
        try:
            yield
        finally:
            self.undefer()
        self.check()


STOP = StopSignals()


def requeue_signal(env: Any) -> signal.Signals:
    return as_signal(getattr(env, "requeue_signal", None) or signal.SIGUSR1)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array jobs, else the job id."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def maybe_requeue(env: Any, signum: int) -> bool:
    """Requeue this SLURM job when ``env`` (a Lightning SLURMEnvironment) asks for it on ``signum``.

    Only the first task (SLURM_PROCID 0) requeues; the other ranks just exit.
    """
    if env is None or not getattr(env, "auto_requeue", False) or signum != requeue_signal(env):
        return False
    job = slurm_job_id()
    if job is None:
        log.warning("preemption.requeue is set but this is not a SLURM job (no SLURM_JOB_ID): not requeued")
        return False
    if int(os.environ.get("SLURM_PROCID", "0")) != 0:
        return False
    try:
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("could not requeue SLURM job %s: %s", job, e)
        return False
    if r.returncode != 0:
        log.warning("scontrol requeue %s failed (%d): %s", job, r.returncode, r.stderr.strip())
        return False
    log.warning("requeued SLURM job %s; it resumes from the saved state when it starts again", job)
    return True
