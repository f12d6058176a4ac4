"""model.dtype=auto: which dtype each device gets, the recipe per kind of training, and that the resolved
dtype is part of a result's identity and of its run metadata."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose
from taskneurons.errors import ConfigError
from taskneurons.models import precision
from taskneurons.models.precision import precision_plan, resolve_dtype
from taskneurons.runtime.precision import apply_precision, what_trains
from taskneurons.runtime.resume import config_key


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("avx512_bf16",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_bf16_only_on_a_cpu_with_bf16_units(bf16_cpu):
    r = resolve_dtype("auto", "auto")
    assert (r.dtype, r.requested) == ("bfloat16", "auto") and "AVX512-BF16" in r.why
    assert resolve_dtype("float32", "auto").dtype == "float32"  # fp32 stays selectable
    assert resolve_dtype("bfloat16", "cpu").dtype == "bfloat16"


def test_auto_is_fp32_on_a_cpu_without_bf16_units(plain_cpu):
    r = resolve_dtype("auto", "cpu")
    assert r.dtype == "float32" and "slower" in r.why


def test_auto_on_cuda_follows_the_devices_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "gpu").dtype == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", "gpu").dtype == "float32"
    assert resolve_dtype("float16", "gpu").dtype == "float16"  # fp16 is a GPU's choice to make


@pytest.mark.parametrize("units, want", [(("avx512_bf16",), "bfloat16"), ((), "float32")])
def test_fp16_on_a_cpu_is_resolved_with_a_reason(monkeypatch, units, want):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: units)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = resolve_dtype("float16", "cpu")
    assert r.dtype == want and "float16 on a CPU" in r.why


def test_recipes_per_kind_of_training(bf16_cpu):
    full = precision_plan("auto", "auto", "full")
    assert (full.weights.dtype, full.trainer_precision) == ("float32", "bf16-mixed")  # fp32 master weights
    for trains in ("none", "neurons", "lora"):
        plan = precision_plan("auto", "auto", trains)
        assert (plan.weights.dtype, plan.trainer_precision) == ("bfloat16", None)
    # an explicit request is kept as it is
    assert precision_plan("bfloat16", "auto", "full").trainer_precision is None
    assert precision_plan("float32", "auto", "full").weights.dtype == "float32"


def test_every_entry_points_job_knows_what_it_trains():
    assert what_trains(compose("evaluate", ["model=smollm2_135m"])) == "none"
    assert what_trains(compose("identify", ["model=smollm2_135m"])) == "none"
    assert what_trains(compose("train", ["intervention=finetune_full"])) == "full"
    assert what_trains(compose("train", ["intervention=finetune_neurons"])) == "neurons"
    for method, kind in [("ncft", "neurons"), ("wncft", "neurons"), ("seqlora", "lora"), ("olora", "lora"),
                         ("seqft", "full"), ("pertask", "full"), ("mtl", "full")]:
        assert what_trains(compose("continual", [f"continual/method={method}"])) == kind, method


def test_the_resolved_dtype_is_part_of_the_results_identity(bf16_cpu):
    auto = compose("evaluate", ["model=smollm2_135m", "task=[sst2]"])
    fp32 = compose("evaluate", ["model=smollm2_135m", "task=[sst2]", "model.dtype=float32"])
    bf16 = compose("evaluate", ["model=smollm2_135m", "task=[sst2]", "model.dtype=bfloat16"])
    for cfg in (auto, fp32, bf16):
        apply_precision(cfg, announce=False)
    assert auto.model.dtype == "bfloat16" and fp32.model.dtype == "float32"
    assert config_key(auto) != config_key(fp32)  # a bf16 result is never reused for an fp32 request
    full = compose("train", ["model=smollm2_135m", "intervention=finetune_full"])
    apply_precision(full, announce=False)
    assert (full.model.dtype, full.trainer.precision) == ("float32", "bf16-mixed")


def test_an_unknown_dtype_is_one_line_naming_the_key():
    cfg = compose("evaluate", ["model=tiny_llama", "model.dtype=float8"])
    with pytest.raises(ConfigError, match=r"model.dtype='float8' is not one of auto, float32"):
        apply_precision(cfg)


def test_the_resolved_precision_is_printed_once_and_recorded_in_run_meta(tmp_path, data_dir, monkeypatch, capsys):
    from taskneurons.evaluate import evaluate_job
    from taskneurons.runtime.app import run_entry

    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("avx512_bf16",))
    monkeypatch.chdir(tmp_path)
    cfg = compose("evaluate", ["model=tiny_llama", "model.dtype=auto", "task=[sst2]", "data.max_test=4",
                               "logger=none", f"paths.output_root={tmp_path}", "eval.cls_scorers=[loglik]"])
    metrics = run_entry(cfg, evaluate_job)
    assert metrics is not None
    err = capsys.readouterr().err
    assert err.count("precision: model.dtype=auto -> bfloat16") == 1
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["precision"]["resolved"] == "bfloat16" and meta["precision"]["requested"] == "auto"
