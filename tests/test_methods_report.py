"""make methods SCALE=tiny in-process: every scorer against exact ablation on tiny_llama, the artefact files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskneurons.analyze.methods import spearman_ci
from taskneurons.analyze.methods_report import write_methods


def test_spearman_ci_known_answers():
    x = np.arange(50, dtype=float)
    assert spearman_ci(x, 2 * x + 1, n_boot=50)["rho"] == pytest.approx(1.0)
    assert spearman_ci(x, -x, n_boot=50)["rho"] == pytest.approx(-1.0)
    with_nan = np.where(x < 10, np.nan, x)  # unscored units rank last, tied: still monotone with x
    r = spearman_ci(with_nan, x, n_boot=50)
    assert 0.9 < r["rho"] < 1.0 and r["lo"] <= r["rho"] <= r["hi"]
    assert spearman_ci(np.full(50, np.nan), x, n_boot=10)["rho"] is None  # nothing scored: undefined, not 0


def test_methods_artefact_at_tiny_scale(tmp_path):
    path = write_methods("tiny", ["neurons.max_examples=4", "data.max_prompt_tokens=48"], root=tmp_path, n_boot=100)
    result = json.loads(path.read_text())
    n = result["numbers"]
    assert (path.parent / "table.md").is_file() and (path.parent / "ablation_curves.png").is_file()
    tasks, methods = ["rotten_tomatoes", "bbc_topic"], ["grad_x_act", "activation", "integrated_gradients",
                                                         "random", "lape"]
    assert n["tasks"] == tasks
    for t in tasks:
        assert set(n["spearman"][t]) == set(methods)
        assert n["spearman"][t]["grad_x_act"]["signed"]["n_units"] == 640  # every unit of tiny_llama
        for m in methods:
            rho = n["spearman"][t][m]["abs"]
            if m != "lape" or rho["rho"] is not None:  # LAPE may own no unit of a random-init model's task
                assert -1 <= rho["lo"] <= rho["rho"] <= rho["hi"] <= 1
            assert [c["proportion"] for c in n["curves"][t][m]] == [0.01, 0.03, 0.1]
            assert n["curves"][t][m][-1]["random_accuracy"]["n"] == 3
        counts = [c["count"] for c in n["curves"][t]["grad_x_act"]]
        assert counts == sorted(counts) and counts[-1] == 64  # 10 % of each of the six pools (13+13+6, twice)
        assert n["cost"][t]["grad_x_act"]["time_vs_grad_x_act"] == 1.0
        assert n["cost"][t]["exact_ablation"]["seconds"] > n["cost"][t]["activation"]["seconds"]
        assert "0.1" in n["specificity"][t]["grad_x_act"]
    # |g·a| tracks |ΔL| on a random-init model far better than chance; random scores do not
    assert n["spearman"]["rotten_tomatoes"]["grad_x_act"]["abs"]["lo"] > 0.3
    assert abs(n["spearman"]["rotten_tomatoes"]["random"]["abs"]["rho"]) < 0.2


def test_the_small_preset_resolves_model_dtype_auto_before_its_memory_check(tmp_path):
    """`make methods SCALE=small` composes SmolLM2 with `model.dtype: auto`; the memory check needs a concrete
    dtype (it stopped with KeyError 'auto' before), so the preset resolves it as every entry point does."""
    from taskneurons.analyze.methods_report import compose_config
    from taskneurons.models.precision import DTYPES
    from taskneurons.runtime.memory_check import check_memory

    cfg = compose_config("small", [], tmp_path)
    assert cfg.model.dtype_requested == "auto" and cfg.model.dtype in DTYPES
    check_memory(cfg)  # raised KeyError: 'auto'
