"""The built wheel works on its own: installed (not editable) into a fresh venv that sees the main venv's
dependencies but not its editable taskneurons, it composes its packaged Hydra configs, runs an entry point on
a tiny model from an unrelated folder, and runs the tiny quickstart."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, quickstart_code

# what a checkout holds beside the sources: none of it may reach the wheel's build
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "outputs", "wandb", "multirun", "*.egg-info",
                              "__pycache__", ".pytest_cache", ".ruff_cache")


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.e2e
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    src = tmp_path / "src_copy"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
        str(src)], tmp_path)
    wheel = next((tmp_path / "dist").glob("taskneurons-*.whl"))

    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    sh([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], tmp_path)
    # the main venv's packages (torch, transformers, …) as a plain path: its .pth files, among them the
    # editable taskneurons, are not processed there, so only the wheel's taskneurons is importable
    site = Path(sh([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    (site / "main_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", TOKENIZERS_PARALLELISM="false", TASKNEURONS_OUTPUT=str(elsewhere / "outputs"))
    where = sh([str(py), "-c", "import taskneurons; print(taskneurons.__file__); print(taskneurons.CONF_DIR)"],
               elsewhere, env).split()
    assert Path(where[0]).is_relative_to(venv), where
    assert (Path(where[1]) / "model" / "tiny_llama.yaml").is_file()
    assert (Path(where[1]).parent / "experiments" / "paper_numbers.yaml").is_file()

    assert "== Configuration groups ==" in sh([str(py), "-m", "taskneurons.train", "--help"], elsewhere, env)
    out = sh([str(py), "-m", "taskneurons.identify", "model=tiny_llama", "logger=csv", "task=rotten_tomatoes",
              "data.max_train=16", "data.max_test=4", "neurons.max_examples=8", "trainer.enable_progress_bar=false"],
             elsewhere, env)
    sets = list((elsewhere / "outputs" / "neurons").rglob("*.json"))
    assert sets, f"identify wrote no neuron set under {elsewhere / 'outputs'}:\n{out[-2000:]}"

    (elsewhere / "quickstart.py").write_text(quickstart_code("tiny"))
    assert "exported to" in sh([str(py), "quickstart.py"], elsewhere, env)


@pytest.mark.parametrize("module", ["taskneurons.analyze.__main__", "taskneurons.bench.__main__",
                                    "taskneurons.report.__main__", "taskneurons.report.continual",
                                    "taskneurons.gpu_check", "taskneurons.export"])
def test_help_of_the_argument_entry_points(module, monkeypatch, capsys):
    """``--help`` prints a usage line naming the command as a user types it, and exits 0."""
    import importlib

    mod = importlib.import_module(module)
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    entry = getattr(mod, "cli", None) or mod.main
    try:
        entry()
    except SystemExit as e:
        assert e.code in (0, None)
    command = module.removesuffix(".__main__")
    assert f"python -m {command}" in capsys.readouterr().out
