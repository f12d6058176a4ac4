"""Scale out: sweeps through Hydra launchers, DDP training/attribution on 2 CPU processes (gloo),
SLURM shapes and the one-line errors for what cannot run, the GPU check's CPU dry path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose, run_here, tiny
from taskneurons import CONF_DIR
from taskneurons.data import sampling
from taskneurons.data.sampling import StepBatchSampler
from taskneurons.runtime.distributed import strategy_problems
from taskneurons.runtime.launchers import cpu_cores, job_threads, launch_problems, oversubscription
from test_entrypoints import run

SMALL = ["model=tiny_llama", "logger=csv", "data.max_train=24", "data.max_test=6", "neurons.max_examples=12",
         "eval.cls_scorers=[loglik]", "eval.gen_max_new_tokens=4", "trainer.enable_progress_bar=false"]
DDP2 = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


def payload(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return doc.get("payload", doc) if "sha256" in doc else doc


def hydra_compose(config: str, overrides: list[str]):
    from hydra import compose as hc
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hc(config_name=config, overrides=overrides, return_hydra_config=True)


# --- launchers ----------------------------------------------------------------------------------------
def test_joblib_threads_per_job_and_oversubscription_warning():
    cfg = hydra_compose("train", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert job_threads(cfg.hydra, None, cores=8) == 4  # cores // n_jobs
    assert oversubscription(cfg.hydra, None, cores=8) is None
    warning = oversubscription(cfg.hydra, 3, cores=4)
    assert "n_jobs=2 x 3 threads per job = 6 threads on 4 CPU cores" in warning
    cfg = hydra_compose("train", ["hydra/launcher=joblib"])  # n_jobs=-1: one job per core, one thread each
    assert job_threads(cfg.hydra, None, cores=4) == 1 and oversubscription(cfg.hydra, None, cores=4) is None
    cfg = hydra_compose("train", ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"])
    assert job_threads(cfg.hydra, None, cores=8) == 3


@pytest.mark.parametrize("shape,gpus", [("gpu_a100", 4), ("cpu", None)])
def test_slurm_shapes_compose_and_every_value_overrides(shape, gpus, monkeypatch):
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    extra = ["trainer=ddp", "trainer.devices=4"] if gpus else []
    cfg = hydra_compose("train", [f"launcher/slurm={shape}", *extra, "hydra.launcher.partition=p1",
                                  "hydra.launcher.timeout_min=30", "hydra.launcher.mem_gb=8", "hydra.launcher.cpus_per_task=2"])
    lc = cfg.hydra.launcher
    assert lc._target_.endswith("SlurmLauncher")
    assert (lc.partition, lc.timeout_min, lc.mem_gb, lc.cpus_per_task) == ("p1", 30, 8, 2)
    assert lc.gpus_per_node == gpus and lc.tasks_per_node == (gpus or 1)
    assert launch_problems(cfg) == []
    cfg = hydra_compose("identify", [f"launcher/slurm={shape}"])  # no partition anywhere
    assert any("hydra.launcher.partition is not set" in p for p in launch_problems(cfg))
    if gpus:
        cfg = hydra_compose("train", [f"launcher/slurm={shape}", "hydra.launcher.partition=p", "trainer=ddp",
                                      "trainer.devices=4", "hydra.launcher.gpus_per_node=2"])
        assert "trainer.devices=4 but hydra.launcher.gpus_per_node=2" in launch_problems(cfg)[0]


@pytest.mark.e2e
def test_slurm_without_partition_is_one_line_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_here(["taskneurons.train", "--multirun", "launcher/slurm=cpu", "model=tiny_llama", "seed=1,2",
                  f"hydra.sweep.dir={sweep}"], env={"SBATCH_PARTITION": ""})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: hydra.launcher.partition is not set"), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not list(sweep.glob("*/job_status.json")), "no job may start"


@pytest.mark.e2e
@pytest.mark.parametrize("launcher,extra", [
    ("joblib", ["hydra.launcher.n_jobs=2"]),
    ("submitit_local", ["hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]),
])
def test_sweep_through_launcher_summary_failure_isolation_and_resume(tmp_path, launcher, extra):
    sweep = tmp_path / "sweep"
    args = ["taskneurons.evaluate", "--multirun", f"hydra/launcher={launcher}", *extra, "model=tiny_gpt2",
            "task=rotten_tomatoes", "logger=csv", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]
    env = {"TASKNEURONS_OUTPUT": str(tmp_path / "outputs")}  # its own state: nothing reused from other tests
    r = run([*args, "data.max_test=4,0"], env=env)
    assert r.returncode != 0  # the failed job is reported...
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"completed": 1, "failed": 1}, summary
    ok, bad = sorted(summary["jobs"], key=lambda j: j["num"])
    assert ok["status"] == "completed" and "data.max_test=4" in ok["overrides"]
    assert bad["status"] == "failed" and "data.max_test=0" in bad["error"]
    assert payload(sweep / "0" / "metrics.json")["tasks"]["rotten_tomatoes"]["n"] == 4  # ...the other one finished
    assert not (sweep / "1" / "metrics.json").exists()
    code = json.loads((sweep / "0" / "run_meta.json").read_text())["git"]["sha"]
    threads = max(cpu_cores() // 2, 1) if launcher == "joblib" else 1  # jobs share the cores
    assert f"{threads} torch threads" in (sweep / "0" / "evaluate.log").read_text()
    if launcher != "joblib":
        return  # resume is the job's own (outputs/state/), whatever the launcher: checked once, under joblib
    # the same sweep again: the finished job is reused from its state, not recomputed
    r = run([*args, "data.max_test=4"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    # results are keyed by config and code version: a commit in between (shared checkout) recomputes
    expected = "reused" if json.loads((sweep / "0" / "run_meta.json").read_text())["git"]["sha"] == code else "completed"
    assert summary["jobs"][0]["status"] == expected, summary


# --- strategies -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("config,overrides,needle", [
    ("evaluate", ["trainer=ddp"], "trainer=ddp does not apply to evaluate"),
    ("identify", ["trainer=fsdp"], "trainer=fsdp does not apply to identify"),
    ("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4096"], "trainer.devices=4096 but this machine has"),
    ("train", ["trainer=fsdp"], "trainer=fsdp shards full fine-tuning"),
    ("train", ["trainer=fsdp", "intervention=finetune_full"], "CUDA" if not torch.cuda.is_available() else None),
    ("train", ["trainer=deepspeed", "intervention=finetune_full"], "CUDA" if not torch.cuda.is_available() else None),
    ("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=3"], "must split evenly"),
    ("train", ["trainer.devices=2", "trainer.accelerator=cpu"], "needs a distributed strategy: add trainer=ddp"),
    ("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], None),
    ("identify", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], None),
])
def test_strategy_configs_compose_and_say_what_cannot_run(config, overrides, needle):
    cfg = compose(config, overrides)
    problems = strategy_problems(cfg, config)
    if needle is None:
        assert problems == []
        assert cfg.trainer.strategy.entry == f"taskneurons.{config}"
    else:
        assert len(problems) >= 1 and any(needle in p for p in problems), problems


def test_step_batch_sampler_ranks_split_each_global_batch(monkeypatch):
    whole = list(StepBatchSampler(23, 6, seed=3, start=2, stop=7))
    shards = []
    for rank in range(2):
        monkeypatch.setattr(sampling, "_rank_and_world", lambda rank=rank: (rank, 2))
        shards.append(list(StepBatchSampler(23, 6, seed=3, start=2, stop=7)))
    assert len(shards[0]) == len(shards[1]) == len(whole) == 5
    for g, a, b in zip(whole, *shards, strict=True):
        assert sorted(a + b) == sorted(g) and not set(a) & set(b)


def test_a_last_batch_too_small_for_the_ranks_is_found_before_training():
    # 25 examples, batch 8: batches of 8, 8, 8, 1 per epoch; the 1 cannot be split over 2 or 4 ranks
    assert StepBatchSampler(25, 8, seed=0, start=0, stop=4).short_batch(2) == 1
    assert StepBatchSampler(25, 8, seed=0, start=0, stop=4).short_batch(1) is None
    assert StepBatchSampler(25, 8, seed=0, start=0, stop=3).short_batch(4) is None  # the run ends before it
    assert StepBatchSampler(25, 8, seed=0, start=5, stop=8).short_batch(4) == 1  # epoch 2's last batch (index 7)
    assert StepBatchSampler(25, 8, seed=0, start=4, stop=7).short_batch(4) is None
    assert StepBatchSampler(26, 8, seed=0, start=0, stop=40).short_batch(2) is None  # a last batch of 2: one each
    assert StepBatchSampler(24, 8, seed=0, start=0, stop=40).short_batch(8) is None  # no partial batch


@pytest.mark.e2e
def test_ddp_attribution_and_neuron_training_equal_one_process(tmp_path):
    """2 CPU ranks (gloo) vs 1 process: the same scores, the same merged deltas, other weights untouched."""
    from taskneurons.neurons.neuronset import NeuronSet
    from taskneurons.neurons.pools import neuron_pools
    from taskneurons.neurons.sparse_finetune import NeuronDeltas

    common = [*SMALL, "task=[rotten_tomatoes]"]
    train = ["optim.max_steps=3", "optim.lr=1e-3", "save_model=true", "data.batch_size=8"]
    one, ddp_id, ddp_tr = tmp_path / "one", tmp_path / "ddp_identify", tmp_path / "ddp_train"
    # 1 process (this one): identify (into store_one) and train on that set; the DDP runs start their own ranks
    r = run_here(["taskneurons.train", *common, *train, f"neurons.store_dir={tmp_path}/store_one", f"hydra.run.dir={one}"])
    assert r.returncode == 0, r.stderr[-3000:]
    # 2 ranks: attribution split over the ranks, scores summed
    r = run(["taskneurons.identify", *common, *DDP2, f"neurons.store_dir={tmp_path}/store_ddp", f"hydra.run.dir={ddp_id}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = payload(ddp_id / "metrics.json")
    assert m["attribution_ranks"] == 2 and m["tasks"]["rotten_tomatoes"]["source"] == "attribution"
    (set_one,) = (tmp_path / "store_one").rglob("*.json")
    (set_ddp,) = (tmp_path / "store_ddp").rglob("*.json")
    a, b = NeuronSet.load(set_one), NeuronSet.load(set_ddp)
    assert a.scores.keys() == b.scores.keys()
    for k in a.scores:
        torch.testing.assert_close(b.scores[k], a.scores[k], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(b.means[k], a.means[k], rtol=1e-5, atol=1e-7)
    # 2 ranks: neuron-only training on the same set and global batch (each rank half of every batch)
    r = run(["taskneurons.train", *common, *train, *DDP2, f"neurons.path={set_one}",
             f"neurons.store_dir={tmp_path}/store_one", f"hydra.run.dir={ddp_tr}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m_one, m_ddp = payload(one / "metrics.json"), payload(ddp_tr / "metrics.json")
    dist = m_ddp["training"]["distributed"]
    assert dist["world_size"] == 2 and m_one["training"]["distributed"] is None
    assert dist["synchronised_params"] == m_ddp["training"]["trainable_params"] < 0.05 * m_ddp["training"]["total_params"]
    assert m_ddp["training"]["loss_first"] == pytest.approx(m_one["training"]["loss_first"], rel=1e-5)
    assert not (ddp_tr / "csv_rank1").exists() and (ddp_tr / "train_rank1.log").is_file()

    from transformers import AutoModelForCausalLM

    base = tiny("tiny_llama")[0]
    w_one = AutoModelForCausalLM.from_pretrained(one / "model").state_dict()
    w_ddp = AutoModelForCausalLM.from_pretrained(ddp_tr / "model").state_dict()
    # where the selected units live: merge all-ones deltas of the set into a copy of the base
    probe = tiny("tiny_llama")[0]
    deltas = NeuronDeltas(neuron_pools(probe, "output_units"), a)
    with torch.no_grad():
        for p in deltas.parameters():
            p.fill_(1.0)
    deltas.merge()
    changed_any = False
    for name, w0 in base.state_dict().items():
        selected = probe.state_dict()[name] != w0
        assert torch.equal(w_ddp[name][~selected], w0[~selected]), f"{name}: a non-selected weight changed under DDP"
        assert torch.equal(w_one[name][~selected], w0[~selected])
        torch.testing.assert_close(w_ddp[name], w_one[name], rtol=1e-5, atol=1e-7)
        changed_any |= bool((w_ddp[name] != w0).any())
    assert changed_any, "training changed nothing"


# --- GPU check -------------------------------------------------------------------------------------------
def test_gpu_check_dry_path_measures_every_part(tmp_path):
    """make gpu-check's code on tiny shapes on the CPU (no GPU here): every number present and sane."""
    from taskneurons.gpu_check import LLAMA2_7B, layer_params, main, plan_layers

    r = main(["--dry", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "gpu_check_dry.json").read_text())
    assert doc["dry"] and doc["model"]["layers"] == doc["model"]["of_layers"] == 2 and r["path"].endswith("gpu_check_dry.json")
    assert doc["attribution"]["tokens_per_s"] > 0 and doc["attribution"]["tokens"] == 2 * 2 * 32
    ft, full = doc["neuron_ft_10pct"], doc["full_ft_adamw"]
    assert 0 < ft["trainable_params"] < 0.1 * full["trainable_params"] and ft["step_s"] > 0 and full["step_s"] > 0
    assert doc["scoring"]["loglik_s"] > 0 and doc["scoring"]["forward_s"] > 0
    # 7B shapes: 202M parameters per layer (6.74B in all with embeddings); all 32 layers fit 139 GiB, not 24 GiB
    assert layer_params(LLAMA2_7B) == 202_383_360
    assert plan_layers(LLAMA2_7B, 139 * 2**30, 4, 512) == 32
    assert 1 <= plan_layers(LLAMA2_7B, 24 * 2**30, 4, 512) < 32


def test_continual_takes_ddp_and_refuses_the_other_strategies_in_one_line():
    from conftest import compose
    from taskneurons.runtime.distributed import strategy_problems

    ddp = ["continual/scale=tiny", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    cfg = compose("continual", overrides=ddp)
    assert strategy_problems(cfg, "continual") == [] and cfg.trainer.strategy.entry == "taskneurons.continual"
    assert strategy_problems(compose("continual", overrides=["continual/scale=tiny"]), "continual") == []
    assert strategy_problems(compose("continual", overrides=["continual/scale=tiny", "trainer=fsdp"]), "continual") == [
        "trainer=fsdp does not apply to continual (fsdp is for train); use trainer=default"]
    (p,) = strategy_problems(compose("continual", overrides=[*ddp, "data.batch_size=3"]), "continual")
    assert "data.batch_size=3 is the global batch and must split evenly over trainer.devices=2" in p
