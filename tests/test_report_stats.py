"""Known answers for report/stats.py, random-control draws, the matrix filter, and the report's bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from taskneurons.report import stats


def test_bootstrap_interval_matches_the_normal_theory_interval():
    x = np.random.default_rng(1).normal(50, 10, size=1000)
    e = stats.bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert e.mean == pytest.approx(x.mean())
    assert (e.hi - e.lo) / 2 == pytest.approx(half, rel=0.1)
    assert e.lo < 50 < e.hi and e.method == "bootstrap over 1000 test examples"


def test_bootstrap_of_a_constant_has_zero_width_and_coverage_is_about_95_percent():
    e = stats.bootstrap_ci([100] * 30)
    assert e.lo == e.hi == e.mean == 100
    rng = np.random.default_rng(0)
    covered = 0
    for k in range(100):
        e = stats.bootstrap_ci(100 * rng.binomial(1, 0.7, 200), n_boot=400, seed=k)
        covered += e.lo <= 70 <= e.hi
    assert 85 <= covered <= 100


def test_t_interval_over_seeds_equals_scipy():
    vals = [61.0, 64.5, 58.0]
    e = stats.t_interval(vals)
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean(vals), scale=sps.sem(vals))
    assert (e.lo, e.hi) == pytest.approx((lo, hi))
    assert e.method == "t over 3 seeds"
    assert stats.cell_estimate([[100, 0, 100], [0, 0, 100], [100, 100, 100]]).method == "t over 3 seeds"
    assert stats.t_interval([5.0]).lo is None


def test_paired_test_on_binary_outcomes_is_mcnemar_exact():
    rng = np.random.default_rng(3)
    a = 100 * rng.binomial(1, 0.7, 80)
    b = 100 * rng.binomial(1, 0.5, 80)
    r = stats.paired_test(a, b)
    d = a - b
    k, n = int((d > 0).sum()), int((d != 0).sum())
    assert r["p"] == pytest.approx(sps.binomtest(k, n, 0.5).pvalue)
    assert r["diff"] == pytest.approx(d.mean()) and "McNemar" in r["method"]


def test_paired_test_exact_and_monte_carlo_agree_with_scipy_permutation_test():
    rng = np.random.default_rng(4)
    for n in (10, 22):
        a = rng.normal(0.4, 1, n)
        b = rng.normal(0, 1, n)
        ref = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                                   n_resamples=np.inf if n <= 12 else 50_000, random_state=0, vectorized=True).pvalue
        got = stats.paired_test(a, b)["p"]
        assert got == pytest.approx(ref, abs=1e-9 if n <= 12 else 0.01), n
    assert stats.paired_test([1, 2], [1, 2])["p"] == 1.0
    with pytest.raises(ValueError):
        stats.paired_test([1, 2], [1])


def test_mean_of_means_and_alignment_by_example_id():
    a = {"ids": ["x", "y", "z"], "scores": [100, 0, 100]}
    b = {"ids": ["z", "x", "w"], "scores": [0, 100, 100]}
    assert stats.align(a, b) == ([100, 100], [100, 0])
    m = stats.mean_records([a, {"ids": ["x", "y", "z"], "scores": [0, 0, 100]}])
    assert m["scores"] == [50, 0, 100] and m["draws"] == [[100, 0, 100], [0, 0, 100]]
    e = stats.mean_of_means([[[100, 100, 0, 0]], [[100] * 3]])
    assert e.mean == pytest.approx(75) and e.lo <= 75 <= e.hi


def test_diagonal_dominance_score_and_its_interval():
    change = np.array([[-30.0, -10.0], [-6.0, -20.0]])
    assert stats.dominance_score(change) == pytest.approx(-25 - (-8))
    ids = [f"e{i}" for i in range(40)]
    base = {t: {"ids": ids, "scores": [100] * 40} for t in ("a", "b")}
    # own neurons off: every example wrong; others' off: nothing changes
    deact = {i: {j: {"ids": ids, "scores": [0 if i == j else 100] * 40} for j in ("a", "b")} for i in ("a", "b")}
    e = stats.dominance_bootstrap(base, deact, ["a", "b"])
    assert e.mean == pytest.approx(-100) and e.lo == pytest.approx(-100) and e.hi == pytest.approx(-100)


def test_random_controls_differ_per_source_seed_and_draw_and_are_reproducible(tiny_llama):
    from omegaconf import OmegaConf

    from taskneurons.neurons.identify import control_set, restrict_matrices, validate_neurons_config
    from taskneurons.neurons.neuronset import NeuronSet, select_top
    from taskneurons.neurons.pools import neuron_pools

    model, _ = tiny_llama
    pools = neuron_pools(model)
    sizes = {p.key: p.size for p in pools}
    g = torch_gen()
    scores = {k: g(n) for k, n in sizes.items()}
    ref = NeuronSet(select_top(scores, sizes, 0.1, "per_module"), sizes, {"model": "tiny_llama", "definition": "output_units"})
    n = OmegaConf.create({"control_seed": 0, "seed": 1, "definition": "output_units", "matrices": "all"})
    fp = {(s, d): control_set("random", ref, pools, "tiny_llama", n, source=s, draw=d).fingerprint()
          for s in ("rt", "bbc") for d in range(3)}
    assert len(set(fp.values())) == 6, "every (source, draw) is a different set"
    again = control_set("random", ref, pools, "tiny_llama", n, source="rt", draw=1)
    assert again.fingerprint() == fp[("rt", 1)] and again.counts() == ref.counts()
    other_seed = OmegaConf.merge(n, {"seed": 2})
    assert control_set("random", ref, pools, "tiny_llama", other_seed, source="rt", draw=1).fingerprint() != fp[("rt", 1)]
    # neurons.matrices: W1 keeps gate/up only, W2 down only; the random control follows the counts
    w1, w2 = restrict_matrices(ref, pools, "W1"), restrict_matrices(ref, pools, "W2")
    assert {k[1] for k, v in w1.indices.items() if v.numel()} == {"gate_proj", "up_proj"}
    assert {k[1] for k, v in w2.indices.items() if v.numel()} == {"down_proj"}
    assert w1.count() + w2.count() == ref.count()
    rw1 = control_set("random", w1, pools, "tiny_llama", n, source="rt")
    assert rw1.counts() == w1.counts()
    base = {"proportion": 0.1, "set": "task", "definition": "output_units", "scope": "per_module", "reduction": "mean",
            "token_scope": "target", "split": "train", "control_seeds": 3}
    assert validate_neurons_config(OmegaConf.create({**base, "matrices": "W2"})) == []
    bad = " ".join(validate_neurons_config(OmegaConf.create({**base, "matrices": "W3", "control_seeds": 0})))
    assert "neurons.matrices='W3'" in bad and "neurons.control_seeds=0" in bad
    inter = validate_neurons_config(OmegaConf.create({**base, "definition": "intermediate", "matrices": "W1"}))
    assert inter and "output_units" in inter[0]


def torch_gen():
    import torch

    g = torch.Generator().manual_seed(0)
    return lambda n: torch.rand(n, generator=g)


def test_report_lists_artefacts_without_target_or_entry_as_missing(tmp_path, monkeypatch):
    from taskneurons.errors import ConfigError
    from taskneurons.report import collect

    monkeypatch.setenv("TASKNEURONS_OUTPUT", str(tmp_path))
    entries = [{"name": "table1", "target": "table1", "paper": "Table 1", "scales": ["tiny", "small"]},
               {"name": "table9", "target": "no_such_target", "paper": "Tables 9-11", "scales": ["tiny"]},
               {"name": "table6", "target": "table6", "paper": "Table 6", "scales": ["paper"]}]
    status = collect.run_missing(entries, "tiny", 1, {"table1", "table6"}, run=False)
    assert status["table9"]["status"] == "missing: no make target `no_such_target` yet"
    assert status["table6"]["status"].startswith("not defined at tiny scale")
    assert status["table1"]["status"] == "missing: not run (--no-run)"
    readme = collect.write_readme(status, "tiny", entries).read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("Paper artefacts with no entry"))
    assert "Fig. 2" in line and "Table 10" not in line and "Table 1," not in line
    # a report of a few artefacts still opens with every claim's verdict: the others have no data
    assert "## Verdicts" in readme and "`E4.table5.wncft_above_ncft` (inconclusive)" in readme
    with pytest.raises(ConfigError, match="unknown artefact fig99"):
        collect.check_request(entries, "tiny", ["fig99"], 1)
    with pytest.raises(ConfigError, match="SEEDS=0"):
        collect.check_request(entries, "tiny", None, 0)
