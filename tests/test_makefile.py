"""The Makefile's artefact targets expand to complete commands at every scale they support (`make -n`):
no empty grid (a `:=` variable read before it is defined expands to nothing, as Table 8's proportions once
did at small and paper scale)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = yaml.safe_load((ROOT / "experiments" / "artefacts.yaml").read_text())
CASES = [(e["target"], s) for e in ENTRIES for s in e["scales"]]


@pytest.mark.parametrize("target,scale", CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_artefact_target_expands_without_empty_values(target, scale):
    r = subprocess.run(["make", "-n", "--no-print-directory", target, f"SCALE={scale}", "STAMP=/dev/null"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    commands = [ln for ln in r.stdout.splitlines() if "taskneurons." in ln]
    assert commands, r.stdout
    empty = [ln for ln in commands if re.search(r"=\[\]|=\s|=$|\[,|,\]|,,", ln)]
    assert not empty, "\n".join(empty)
