"""docs/quickstart.md runs as written: its code blocks, each in a fresh interpreter from an unrelated folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import quickstart_code


def run_block(tag: str, tmp_path) -> str:
    script = tmp_path / f"quickstart_{tag}.py"
    script.write_text(quickstart_code(tag))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_tiny_quickstart_runs(tmp_path):
    out = run_block("tiny", tmp_path)
    assert "neurons; overlap with the control" in out and "task set off" in out and "exported to" in out


@pytest.mark.slow
def test_smollm2_quickstart_runs(tmp_path):
    out = run_block("smollm2", tmp_path)
    results = eval(out.strip().splitlines()[-1])  # the printed dict of accuracies
    assert set(results) == {"original", "random off", "task set off"}
    assert all(0 <= v <= 100 for v in results.values())
