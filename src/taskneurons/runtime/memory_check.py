"""Pre-flight: before the model loads, compare the job's estimated peak memory (``models/memory.py``)
with what this device has; a job that cannot fit is one ``error:`` line (ResourceError, exit 2) with the
options that would fit, instead of minutes of loading and an OOM kill.

Available memory: CUDA -> free memory of the first device (``torch.cuda.mem_get_info``); CPU ->
MemAvailable (/proc/meminfo, or psutil) plus what this process already holds, capped by a cgroup limit
(v2 ``memory.max``, v1 ``memory.limit_in_bytes``). ``TASKNEURONS_MEMORY_LIMIT_MB`` replaces the
measurement (tests, or a share of a node). ``preflight.memory=false`` skips the check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from taskneurons.errors import ResourceError
from taskneurons.models.memory import GB, Estimate, JobShape, ModelShape, model_shape, peak, with_changes
from taskneurons.models.precision import uses_cuda
from taskneurons.runtime.precision import what_trains

log = logging.getLogger(__name__)
LIMIT_ENV = "TASKNEURONS_MEMORY_LIMIT_MB"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _own_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_available() -> tuple[int, str]:
    """(bytes this job may still use, where the number comes from)."""
    kb = _meminfo_kb("MemAvailable")
    if kb is not None:
        free, src = kb * 1024, "MemAvailable"
    else:
        try:
            import psutil

            free, src = int(psutil.virtual_memory().available), "psutil available"
        except ImportError:
            return 0, "unknown"
    free += _own_rss()  # the estimate counts this process from its start
    for limit_path, usage_path, name in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "cgroup memory.max"),
                                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                          "/sys/fs/cgroup/memory/memory.usage_in_bytes", "cgroup memory limit")):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and limit < 2**60:  # "max" (not a number) or the v1 "no limit" value: unlimited
            room = limit - (usage or 0) + _own_rss()
            if room < free:
                free, src = room, name
    return free, src


def available(cfg: Any) -> tuple[int, str, bool]:
    """(bytes, their source, on CUDA)."""
    cuda = uses_cuda(cfg.trainer.get("accelerator", "auto")) if cfg.get("trainer") is not None else False
    forced = os.environ.get(LIMIT_ENV)
    if forced:
        return int(float(forced) * 2**20), LIMIT_ENV, cuda
    if cuda:
        import torch

        device = int(os.environ.get("LOCAL_RANK", 0)) % max(torch.cuda.device_count(), 1)  # this rank's GPU
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}", True
    free, src = cpu_available()
    return free, src, False


def _lora_params(cfg: Any, shape: ModelShape) -> int:
    lora = (cfg.get("continual") or {}).get("lora") or {}
    r = int(lora.get("r", 8))
    targets = len(lora.get("target_modules") or [None, None])
    return shape.layers * targets * r * 2 * shape.hidden  # A (r x in) + B (out x r), square projections


def job_shape(cfg: Any, shape: ModelShape) -> JobShape:
    trains = what_trains(cfg)
    n = cfg.get("neurons") or {}
    job_name = str(cfg.get("job"))
    iv = cfg.get("intervention") or {}
    attribution = n.get("set") in ("task", "random") and not n.get("path") and (
        job_name == "identify" or (job_name == "train" and iv.get("name") == "finetune_neurons")
        or (job_name == "evaluate" and iv.get("name") == "deactivate")
        or (job_name == "continual" and trains == "neurons"))
    data = cfg.data
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "") or "").lower()  # a name, or a _target_ such as ...FSDPStrategy
    devices = trainer.get("devices", 1)
    proportion = 1.0 if n.get("set") == "all_ffn" else float(n.get("proportion", 0.1) or 0.1)
    ev = cfg.get("eval") or {}
    return JobShape(
        trains=trains, dtype=str(cfg.model.dtype), mixed_bf16=str(trainer.get("precision", "")).startswith("bf16"),
        batch=int(data.batch_size), seq=int(data.max_prompt_tokens) + int(data.max_target_tokens),
        target=int(data.max_target_tokens), proportion=proportion,
        lora_params=_lora_params(cfg, shape) if trains == "lora" else 0, attribution=bool(attribution),
        attribution_batch=int(n.get("micro_batch_size") or n.get("batch_size") or 8),
        evaluates=job_name != "identify", eval_batch=int(data.get("eval_batch_size", 16)),
        gen_tokens=max(int(ev.get("gen_max_new_tokens", 32) or 0), int(ev.get("cls_max_new_tokens", 8) or 0)),
        shards=int(devices) if "fsdp" in strategy and str(devices).isdigit() else 1)


def options_that_fit(cfg: Any, shape: ModelShape, job: JobShape, room: int) -> list[str]:
    """Changes to this job whose estimate fits in ``room`` bytes, as overrides with their estimates."""
    continual = str(cfg.get("job")) == "continual"
    candidates: list[tuple[str, JobShape]] = []
    if job.trains in ("full", "lora"):
        neurons = "continual/method=ncft" if continual else "intervention=finetune_neurons"
        # fp32 masters are full fine-tuning's recipe under model.dtype=auto; neuron rows keep the base in bf16
        base = "bfloat16" if job.mixed_bf16 else job.dtype
        rows = with_changes(job, trains="neurons", attribution=True, dtype=base, mixed_bf16=False)
        candidates.append((f"{neurons} (neuron rows only)", rows))
        if job.batch > 1:
            candidates.append((f"{neurons} data.batch_size=1", with_changes(rows, batch=1)))
    if job.trains == "full" and continual:
        candidates.append(("continual/method=seqlora (LoRA adapters)",
                           with_changes(job, trains="lora", lora_params=_lora_params(cfg, shape))))
    if job.trains != "none" and job.batch > 1:
        candidates.append(("data.batch_size=1", with_changes(job, batch=1)))
    if job.dtype == "float32" and job.trains != "full":
        candidates.append(("model.dtype=bfloat16", with_changes(job, dtype="bfloat16")))
    out = [f"{what}: about {peak(shape, j).total / GB:.1f} GB" for what, j in candidates if peak(shape, j).total <= room]
    if job.trains == "full":
        for n in (2, 4, 8, 16, 32, 64):
            if peak(shape, with_changes(job, shards=n)).total <= room:
                out.append(f"FSDP on {n} GPUs of this size (trainer=fsdp trainer.devices={n}): about "
                           f"{peak(shape, with_changes(job, shards=n)).total / GB:.1f} GB each")
                break
    return out


def check_memory(cfg: Any) -> Estimate | None:
    """Raise ResourceError when the job cannot fit; return the estimate (None: not checked)."""
    if not bool((cfg.get("preflight") or {}).get("memory", True)) or cfg.get("model") is None:
        return None
    try:
        shape, source = model_shape(cfg.model, cfg.paths.get("model_cache"))
    except Exception as e:  # an estimate that cannot be made must not stop a job that may well fit
        log.warning("memory pre-flight skipped: cannot read the model's shape (%s)", e)
        return None
    if shape is None:
        log.info("memory pre-flight skipped: %s", source)
        return None
    job = job_shape(cfg, shape)
    est = peak(shape, job)
    room, where, cuda = available(cfg)
    if room <= 0 or est.total <= room:
        return est
    options = options_that_fit(cfg, shape, job, room)
    act = est.parts.get("activations", 0)
    hint = ""
    if act and est.total - act <= room:  # only the activations (an upper bound) make it not fit: say so
        hint = (f"; activations are {act / GB:.2f} GB of the estimate, counted at the token caps "
                f"(data.max_prompt_tokens={cfg.data.max_prompt_tokens} + max_target_tokens="
                f"{cfg.data.max_target_tokens}): if the task's examples are much shorter the job may fit as is")
    device = "this GPU" if cuda else "this machine"
    fix = ("options that would fit: " + "; ".join(options)) if options else (
        "none of neuron-only training, a batch of 1, bf16 weights or FSDP on up to 64 GPUs fits: use a larger machine")
    raise ResourceError(
        f"{cfg.model.name} ({_count(shape.params)} parameters, {source}) needs about {est.describe()} at its peak, "
        f"but {device} has {room / GB:.2f} GB available ({where}); {fix}{hint}; preflight.memory=false runs it anyway "
        f"(nothing was loaded)")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"
