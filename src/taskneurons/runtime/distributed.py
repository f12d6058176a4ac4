"""One job over several devices with Lightning's strategies (``trainer=ddp`` / ``trainer=fsdp``).

Lightning starts the other ranks of a job by running the entry point again in child processes. Its
own command for that repeats ``sys.argv``, which inside a Hydra sweep (``--multirun``) would start a
whole sweep per rank, and points them at a fresh timestamped run directory. The strategies here use
``JobScriptLauncher`` instead: each child runs exactly this job (its own overrides, ``hydra.run.dir`` =
this job's directory), whatever launcher ran the job. Rank 0 writes every file; the others only compute.

``strategy_problems`` turns what cannot work (more devices than exist, a strategy the entry point does
not use) into one config error before any model loads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning.strategies import DDPStrategy as _PLDDPStrategy
from pytorch_lightning.strategies import FSDPStrategy as _PLFSDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from taskneurons.models.precision import uses_cuda  # noqa: F401  (re-exported: callers import it from here)

log = logging.getLogger(__name__)
# what the launcher sets in the parent while the children run; restored after, so the next job of a
# sequential sweep in this process does not think it is a rank of the previous one
_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_KEY_ENV = "TASKNEURONS_RANK0_STATE_KEY"
# strategy kinds by the entry points that accept them (evaluate runs on one device)
APPLIES_TO = {"ddp": ("train", "identify", "continual"), "fsdp": ("train",), "deepspeed": ("train",)}


class _RanksUp:
    """Set while ``run_on_ranks`` runs a job's body on every rank: the fits inside it (one per continual
    stage) reuse those ranks and that process group instead of starting and ending their own."""

    active = False


def global_rank() -> int:
    """This process's rank: from the process group when it exists, else from the launcher's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_global_zero() -> bool:
    return global_rank() == 0


def rank_zero_key(key: str) -> str:
    """The job's state key, as rank 0 computed it: the ranks start later and must not key their state
    differently (the code version is part of the key, and a commit may land in between)."""
    if is_global_zero():
        os.environ[_KEY_ENV] = key  # inherited by the ranks this process starts
        return key
    return os.environ.get(_KEY_ENV, key)


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class JobScriptLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1..n-1 of this Hydra job as ``python -m <entry> <this job's overrides>``."""

    def __init__(self, cluster_environment: Any, num_processes: int, num_nodes: int, entry: str):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.entry = entry

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if _RanksUp.active:  # a fit inside run_on_ranks: every rank is already here, the group is up
            return function(*args, **kwargs)
        parent = not self.cluster_environment.creates_processes_externally
        saved = {k: os.environ.get(k) for k in _DIST_ENV}
        try:
            return super().launch(function, *args, trainer=trainer, **kwargs)
        finally:
            end_process_group()
            if parent:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
                self._wait_children()

    def _wait_children(self) -> None:
        failed = []
        for rank, proc in enumerate(self.procs, start=1):
            try:
                code = proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 600 s"
            if code != 0:
                failed.append(f"rank {rank} ({code})")
        self.procs = []
        if failed:
            raise RuntimeError(f"distributed job: {', '.join(failed)} ended abnormally; see the rank logs in the run directory")

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        hc = HydraConfig.get()
        out_dir = hc.runtime.output_dir
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if os.environ.get("PL_GLOBAL_SEED") is None:
                child_env.pop("PL_GLOBAL_SEED", None)
            command = [sys.executable, "-m", self.entry, *hc.overrides.task,
                       f'hydra.run.dir="{out_dir}"', "hydra.output_subdir=null",
                       f"hydra.job.name={hc.job.name}_rank{local_rank}"]
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=get_original_cwd()))


def end_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class _JobLaunch:
    """Mixin: Lightning's popen launcher replaced by ``JobScriptLauncher`` (entry = ``taskneurons.<job>``)."""

    entry: str

    def _configure_launcher(self) -> None:
        super()._configure_launcher()  # type: ignore[misc]
        launcher = self._launcher  # type: ignore[attr-defined]
        if type(launcher) is _SubprocessScriptLauncher:
            self._launcher = JobScriptLauncher(launcher.cluster_environment, launcher.num_processes,
                                               launcher.num_nodes, self.entry)


class DDPStrategy(_JobLaunch, _PLDDPStrategy):
    """Lightning's DDP; ``entry`` is the module the other ranks run (conf/trainer/ddp.yaml sets it)."""

    def __init__(self, entry: str = "taskneurons.train", **kwargs: Any):
        super().__init__(**kwargs)
        self.entry = entry

    synchronised_params: int | None = None

    def configure_ddp(self) -> None:
        super().configure_ddp()
        # what DDP's reducer all-reduces each step: the parameters it registered (those that require grad)
        self.synchronised_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def distributed_info(trainer: Any) -> dict[str, Any] | None:
    """For metrics.json: strategy, world size and how many elements were synchronised per step."""
    if trainer.world_size <= 1:
        return None
    return {"strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
            "synchronised_params": getattr(trainer.strategy, "synchronised_params", None)}


class FSDPStrategy(_JobLaunch, _PLFSDPStrategy):
    """Lightning's FSDP (full fine-tuning of 7B models over several GPUs)."""

    def __init__(self, entry: str = "taskneurons.train", **kwargs: Any):
        super().__init__(**kwargs)
        self.entry = entry


def decoder_layer_policy(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP auto-wrap policy: one unit per transformer block, whatever the architecture
    (LlamaDecoderLayer, BloomBlock, GPT2Block, ...)."""
    if recurse:
        return True
    name = type(module).__name__
    return name.endswith("DecoderLayer") or name.endswith("Block")


def DeepSpeedStrategy(entry: str = "taskneurons.train", **kwargs: Any) -> Any:  # noqa: N802 (a class factory)
    """Lightning's DeepSpeed strategy with the job launcher (imported only when chosen: deepspeed is optional)."""
    from pytorch_lightning.strategies import DeepSpeedStrategy as _PLDeepSpeed

    cls = type("DeepSpeedStrategy", (_JobLaunch, _PLDeepSpeed), {})
    strategy = cls(**kwargs)
    strategy.entry = entry
    return strategy


# --- configuration checks (before any model loads) ------------------------------------------------------
def strategy_kind(trainer_cfg: Any) -> str:
    """``single``, ``ddp``, ``fsdp`` or ``deepspeed`` from ``trainer.strategy`` (a name or a ``_target_``)."""
    s = trainer_cfg.get("strategy") if hasattr(trainer_cfg, "get") else None
    if s is None:
        return "single"
    name = str(s.get("_target_", "") if hasattr(s, "get") else s).lower().rsplit(".", 1)[-1]
    for kind in ("fsdp", "deepspeed", "ddp"):
        if kind in name:
            return kind
    return "single"


def available_devices(accelerator: str) -> tuple[str, int]:
    """(kind, how many) for ``trainer.accelerator``: CUDA GPUs, or CPU processes (one per core)."""
    if uses_cuda(accelerator):
        return "gpu", torch.cuda.device_count()
    return "cpu", os.cpu_count() or 1


def requested_devices(devices: Any, available: int) -> int:
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1, None):
        return max(available, 1)
    if isinstance(devices, int):
        return devices
    return len(list(devices))  # a list of device indices


def strategy_problems(cfg: Any, entry: str) -> list[str]:
    """One line per thing a distributed config cannot do for ``entry`` (train / identify / evaluate)."""
    t = cfg.trainer
    kind = strategy_kind(t)
    devkind, have = available_devices(t.get("accelerator", "auto"))
    want = requested_devices(t.get("devices", 1), have)
    p: list[str] = []
    if kind != "single" and entry not in APPLIES_TO[kind]:
        used = ", ".join(APPLIES_TO[kind])
        p.append(f"trainer={kind} does not apply to {entry} ({kind} is for {used}); use trainer=default")
        return p
    if kind == "fsdp" and cfg.get("intervention") is not None and cfg.intervention.get("name") == "finetune_neurons":
        p.append("trainer=fsdp shards full fine-tuning (intervention=finetune_full); neuron-only training "
                 "trains a few delta rows: use trainer=ddp")
    if kind in ("fsdp", "deepspeed") and devkind != "gpu":
        p.append(f"trainer={kind} needs CUDA GPUs and this machine has none (trainer.accelerator={t.get('accelerator')}); "
                 "use trainer=ddp trainer.accelerator=cpu to test on CPUs")
    elif want > have and (want > 1 or kind != "single"):  # one device: the paper configs compose on any machine
        what = "CUDA GPUs" if devkind == "gpu" else "CPU cores"
        p.append(f"trainer.devices={t.get('devices')} but this machine has {have} {what}; set trainer.devices<={have}")
    if kind == "single" and want > 1:
        p.append(f"trainer.devices={t.get('devices')} needs a distributed strategy: add trainer=ddp")
    if kind == "ddp" and want > 1 and entry in ("train", "continual"):
        bs = int(cfg.data.batch_size)
        if bs % want:
            p.append(f"data.batch_size={bs} is the global batch and must split evenly over trainer.devices={want}")
    if kind == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            p.append("trainer=deepspeed needs the deepspeed package (pip install deepspeed, on a CUDA machine)")
    return p


def is_distributed(cfg: Any) -> bool:
    return strategy_kind(cfg.trainer) != "single"


def ranks_of(cfg: Any) -> int:
    """How many ranks a job of ``cfg`` trains on (1 without a distributed strategy)."""
    if not is_distributed(cfg):
        return 1
    _, have = available_devices(cfg.trainer.get("accelerator", "auto"))
    return requested_devices(cfg.trainer.get("devices", 1), have)


# --- running code on every rank and exact losses ---------------------------------------------------------
def run_on_ranks(trainer: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(strategy)`` on every rank of ``trainer``'s strategy (Lightning's launcher starts the other
    ranks; the process group is up when ``fn`` runs and ends after it). Trainers that ``fn`` builds with
    the same strategy config fit on these ranks and this group (one per continual stage)."""
    strategy = trainer.strategy

    def body() -> Any:
        strategy.setup_environment()
        _RanksUp.active = True
        try:
            return fn(strategy)
        finally:
            _RanksUp.active = False

    launcher = strategy.launcher
    return launcher.launch(body, trainer=trainer) if launcher is not None else body()


def shard(items: list, rank: int | None = None, world: int | None = None) -> list:
    """This rank's share of ``items`` (r, r+W, ...): what it computes before ``gather_dict``."""
    rank = global_rank() if rank is None else rank
    world = world_size() if world is None else world
    return list(items)[rank::world]


def gather_dict(part: dict) -> dict:
    """Every rank's ``part`` merged (keys are disjoint shards), on every rank; ``part`` itself on one process."""
    if world_size() == 1:
        return dict(part)
    parts: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(parts, part)
    merged: dict = {}
    for p in parts:
        merged.update(p)
    return merged


def compute_device(accelerator: Any) -> torch.device:
    """Where work outside Lightning's loops runs (attribution, task vectors): this rank's GPU when
    ``trainer.accelerator`` resolves to CUDA, else the CPU. Lightning moves the model back to the CPU
    after every fit and test, so callers move it here before such work."""
    if uses_cuda(accelerator):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def this_rank_devices(accelerator: Any) -> Any:
    """``devices`` for a one-device Trainer (evaluation) inside a distributed job: this rank's GPU
    (``[LOCAL_RANK]``), not every rank's GPU 0; one CPU process otherwise."""
    device = compute_device(accelerator)
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return [device.index]
    return 1


def global_batch_loss(local_mean: torch.Tensor, n_local: torch.Tensor) -> torch.Tensor:
    """The loss whose DDP-averaged gradient equals the gradient of one process on the whole global batch.

    Each rank holds ``n_local`` target tokens of the global batch; the global loss is the mean over all
    of them. DDP averages gradients over the ``W`` ranks, so rank r must contribute
    ``W * sum_r / N``. The value returned is the global mean (what one process would log); its gradient
    is that of the scaled local loss.
    """
    world = world_size()
    if world == 1:
        return local_mean
    n_local = n_local.to(local_mean.device, torch.float32)
    local_sum = local_mean.float() * n_local
    both = torch.stack([local_sum.detach(), n_local])
    torch.distributed.all_reduce(both)
    total_sum, n_global = both[0], both[1].clamp(min=1)
    scaled = local_sum * world / n_global
    return scaled + (total_sum / n_global - scaled).detach()
