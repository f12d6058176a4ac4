"""Export of continual results (python -m taskneurons.export, taskneurons.export_continual): every method
that keeps weights, after any finished stage, as a standard HF folder that ``from_pretrained`` loads with
identical logits; the folder is the model the run evaluated (its stage fingerprint, or its scores on the
run's own test examples); bad input is one ConfigError before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose
from taskneurons.errors import ConfigError

ORDER = ["cl_dbpedia", "cl_amazon"]
# methods whose stage weights are the evaluated model: the run recorded its fingerprint after each stage
FINGERPRINTED = ("seqft", "mtl", "migu", "ncft")


def _continual_run(root: Path, method: str, monkeypatch) -> Path:
    from taskneurons.continual.__main__ import continual_job
    from taskneurons.runtime.app import run_entry

    run_dir = root / method
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(run_dir)  # outside Hydra the run's folder is the working directory
    cfg = compose("continual", ["continual/scale=tiny", f"continual/method={method}", f"continual.order=[{','.join(ORDER)}]",
                                "logger=none", "optim.lr=1e-2", "optim.max_steps=3", "data.max_test=12",
                                "eval.cls_scorers=[loglik]", f"paths.output_root={root}/out"])
    assert run_entry(cfg, continual_job) is not None
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_runs")
    with pytest.MonkeyPatch.context() as mp:
        return {m: _continual_run(root, m, mp)
                for m in ("seqft", "mtl", "migu", "ncft", "wncft", "seqlora", "olora", "pertask")}


def _logits(model, tok) -> torch.Tensor:
    batch = tok(["Review: a fine film. Sentiment:", "Topic of: the senate voted"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("method,stage,task", [
    ("seqft", 1, None), ("seqft", 2, None), ("mtl", None, None), ("migu", 2, None), ("ncft", 1, None),
    ("ncft", 2, None), ("wncft", 2, "cl_dbpedia"), ("wncft", 2, "cl_amazon"), ("seqlora", 2, None),
    ("olora", 1, None), ("olora", 2, None)])
def test_a_stage_exports_as_the_model_the_run_evaluated(runs, tmp_path, method, stage, task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taskneurons.api import export_continual
    from taskneurons.continual.export import open_continual_run, stage_model
    from taskneurons.models.fingerprint import model_fingerprint

    folder = tmp_path / "hf"
    record = export_continual(runs[method], folder, stage=stage, task=task, verify=True)
    k = stage or 1 if method == "mtl" else stage
    assert record["stage"] == k and record["method"] == method and record["task"] == task
    assert json.loads((folder / "taskneurons_export.json").read_text())["stage"] == k
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()

    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    in_memory = stage_model(open_continual_run(runs[method]), stage, task)
    assert torch.equal(_logits(loaded, tok), _logits(in_memory.model, in_memory.tok))  # the round trip is exact
    assert not any("lora_" in n for n, _ in loaded.named_parameters())  # adapters merged: a plain model

    info = _metrics(runs[method])["stage_info"][k - 1]
    if method in FINGERPRINTED:  # bit-identical to the model the run evaluated after stage k
        assert model_fingerprint(loaded) == info["model_fingerprint"]
    # re-scored on the run's own test examples, the export reproduces the run's row
    for t, v in record["verify"].items():
        assert v["comparable"] and v["run"] == v["export"], (t, v)
        # merged LoRA adds B·A into W once instead of beside it: equal to rounding, not to the bit
        assert abs(v["gold_loglik_run"] - v["gold_loglik_export"]) <= (2e-4 if "lora" in method else 0), (t, v)
    assert set(record["verify"]) == ({task} if task else set(ORDER + ["cl_yahoo", "cl_agnews"]))


def test_wncft_exports_differ_per_task_only_in_the_trained_neurons(runs, tmp_path):
    """Each task's W-NCFT model is the NCFT model with other values in the FFN rows of the trained sets."""
    from taskneurons.continual.export import open_continual_run, stage_model
    from taskneurons.neurons.pools import neuron_pools

    run = open_continual_run(runs["wncft"])
    a = stage_model(run, 2, "cl_dbpedia").model.state_dict()
    b = stage_model(run, 2, "cl_amazon").model
    ffn = {n for n, mod in b.named_modules() for p in neuron_pools(b, str(run.cfg.neurons.definition))
           for m in p.rows if mod is m.module}
    b = b.state_dict()
    changed = {n.removesuffix(".weight").removesuffix(".bias") for n in a if not torch.equal(a[n], b[n])}
    assert changed and changed <= ffn


@pytest.mark.parametrize("args,needle", [
    ({"stage": 0}, "finished stages 1..2"), ({"stage": 3}, "finished stages 1..2"),
    ({"stage": 1, "task": "cl_amazon"}, "leave task out"),
])
def test_bad_stage_or_task_is_one_error_before_the_model_loads(runs, tmp_path, monkeypatch, args, needle):
    import taskneurons.continual.export as export

    monkeypatch.setattr(export, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(ConfigError, match=needle):
        export.stage_model(export.open_continual_run(runs["ncft"]), **args)


def test_bad_runs_are_named(runs, tmp_path, monkeypatch):
    import taskneurons.continual.export as export

    monkeypatch.setattr(export, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    cases = [
        (lambda: export.stage_model(export.open_continual_run(runs["wncft"])), "name the task"),
        (lambda: export.stage_model(export.open_continual_run(runs["wncft"]), task="sst2"), "not a task of this run"),
        (lambda: export.stage_model(export.open_continual_run(runs["pertask"])), "keeps no weights"),
        (lambda: export.open_continual_run(tmp_path / "nothing"), "metrics.json: no such file"),
    ]
    for call, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            call()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "metrics.json").write_text((runs["ncft"] / "metrics.json").read_text().replace('"ncft"', '"seqft"', 1))
    with pytest.raises(ConfigError, match="metrics.json"):
        export.open_continual_run(damaged)


def test_the_export_command_as_a_user_types_it(runs, tmp_path, capsys):
    from taskneurons.export import main

    main([str(runs["seqlora"]), str(tmp_path / "hf"), "--verify"])
    out = capsys.readouterr().out
    assert "verify cl_dbpedia: score run" in out and f"exported to {tmp_path / 'hf'}" in out
    with pytest.raises(SystemExit) as e:
        main([str(runs["wncft"]), str(tmp_path / "hf2")])
    assert e.value.code == 2 and "error: task" in capsys.readouterr().err
