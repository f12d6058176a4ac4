"""Checks of a composed config that need no model (they live in ``taskneurons.runtime.validation``)."""

from __future__ import annotations

from taskneurons.runtime.validation import build_task_specs, checked_task_specs, validate_common

__all__ = ["build_task_specs", "checked_task_specs", "validate_common"]
