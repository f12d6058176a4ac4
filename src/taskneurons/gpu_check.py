"""GPU check at 7B shapes (``make gpu-check``): one script, a few minutes, JSON under outputs/bench/.

A random-init model of Llama-2-7b's shapes in bf16 (all 32 layers when memory allows, else as many as
fit: the JSON says how many) measures what the paper-scale jobs cost on this device:

- attribution (``neurons.attribution.attribute``): tokens/s and peak memory;
- one optimizer step of neuron-only fine-tuning at 10 % of the FFN units (delta rows, AdamW) and of
  full fine-tuning (AdamW on every weight): seconds per step and peak memory;
- label log-likelihood scoring (``eval.scoring.label_loglik``) against one plain forward of the same prompts.

``--dry`` runs the same code on tiny shapes on the CPU (the test suite runs it). Random weights: the
numbers are costs, never quality.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from taskneurons.models.precision import DTYPES, resolve_dtype

# Llama-2-7b (meta-llama/Llama-2-7b-hf config.json) and a tiny stand-in for the dry run
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 256, "max_position_embeddings": 256}
TARGET_TOKENS = 16  # target tokens at the end of every training/attribution sequence


def layer_params(shape: dict[str, int]) -> int:
    h, i = shape["hidden_size"], shape["intermediate_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h  # q, o, k, v, gate/up/down, two norms


def plan_layers(shape: dict[str, int], free_bytes: int, batch: int, seq: int) -> int:
    """Layers that fit full fine-tuning with AdamW in bf16: weights, grads and two moments (8 bytes per
    parameter) plus activations kept for backward (about 40 bf16 values per token per hidden unit)."""
    per_layer = 8 * layer_params(shape) + 40 * 2 * batch * seq * shape["hidden_size"]
    fixed = 8 * 2 * shape["vocab_size"] * shape["hidden_size"] + 4 * batch * seq * shape["vocab_size"]
    fit = int((0.85 * free_bytes - fixed) // per_layer)
    return max(1, min(shape["num_hidden_layers"], fit))


def build_model(shape: dict[str, int], layers: int, device: torch.device,
                dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**shape, "num_hidden_layers": layers}, tie_word_embeddings=False)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype directly: no fp32 copy of 7B weights
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def sft_batches(n: int, batch: int, seq: int, vocab: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (batch, seq), generator=g)
        labels = torch.full_like(ids, -100)
        labels[:, -TARGET_TOKENS:] = ids[:, -TARGET_TOKENS:]
        out.append({"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)})
    return out


class Meter:
    """Wall time and peak memory of one phase: CUDA peak allocated, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def peak_gb(self) -> float:
        if self.device.type == "cuda":
            return round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        with open("/proc/self/status") as f:  # Linux: the process's peak RSS (VmHWM), kB
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20, 3)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # Linux: 5 -> clear_refs resets VmHWM to the current RSS, so each phase reports its own peak
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def run(self, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, float]:
        """(seconds per call after warm-up, peak GB of this phase)."""
        self.reset_peak()
        for _ in range(warmup):
            fn()
        self.sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / repeats, self.peak_gb()


def check_attribution(model, batches, meter: Meter) -> dict[str, Any]:
    from taskneurons.neurons.attribution import attribute
    from taskneurons.neurons.pools import neuron_pools

    pools = neuron_pools(model, "output_units")
    seconds, peak = meter.run(lambda: attribute(model, batches, pools, "mean", "target"), repeats=1)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return {"tokens_per_s": round(tokens / seconds, 1), "tokens": tokens, "seconds": round(seconds, 3), "peak_gb": peak}


def time_training_steps(model, batch, params, lr: float, meter: Meter) -> tuple[float, float]:
    """Seconds per AdamW step on ``params`` (after a warm-up step) and the phase's peak GB; model in train mode."""
    from taskneurons.models.loss import target_only_loss

    opt = torch.optim.AdamW(params, lr=lr)
    model.train()

    def step() -> None:
        target_only_loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return meter.run(step, repeats=3)


def check_neuron_ft(model, batch, meter: Meter, proportion: float = 0.1) -> dict[str, Any]:
    from taskneurons.neurons.neuronset import NeuronSet, random_like
    from taskneurons.neurons.pools import neuron_pools
    from taskneurons.neurons.sparse_finetune import NeuronDeltas

    pools = neuron_pools(model, "output_units")
    sizes = {p.key: p.size for p in pools}
    nset = NeuronSet(random_like({k: max(1, round(proportion * n)) for k, n in sizes.items()}, sizes, seed=0), sizes)
    for p in model.parameters():
        p.requires_grad_(False)
    deltas = NeuronDeltas(pools, nset)
    deltas.attach()
    try:
        seconds, peak = time_training_steps(model, batch, deltas.parameters(), 1e-4, meter)
    finally:
        deltas.detach()
        model.eval()
    return {"proportion": proportion, "trainable_params": deltas.n_trainable(), "step_s": round(seconds, 4), "peak_gb": peak}


def check_full_ft(model, batch, meter: Meter) -> dict[str, Any]:
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        seconds, peak = time_training_steps(model, batch, model.parameters(), 1e-5, meter)
        out: dict[str, Any] = {"trainable_params": sum(p.numel() for p in model.parameters()),
                               "step_s": round(seconds, 4), "peak_gb": peak}
    except torch.OutOfMemoryError as e:
        out = {"error": f"out of memory: {str(e).splitlines()[0]}"}
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return out


@torch.no_grad()
def check_scoring(model, meter: Meter, batch: int, prompt_len: int, vocab: int) -> dict[str, Any]:
    from taskneurons.eval.scoring import label_loglik

    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, vocab, (prompt_len,), generator=g).tolist() for _ in range(batch)]
    labels = [[5], [6, 7], [8, 9, 10]]  # three labels of 1-3 tokens (e.g. "positive" / "neutral" / "negative")
    ids = torch.tensor(prompts, device=meter.device)
    loglik_s, loglik_peak = meter.run(lambda: label_loglik(model, prompts, labels, 0, "sum"), repeats=3)
    forward_s, forward_peak = meter.run(lambda: model(input_ids=ids, use_cache=False), repeats=3)
    return {"prompts": batch, "prompt_tokens": prompt_len, "labels": len(labels), "loglik_s": round(loglik_s, 4),
            "forward_s": round(forward_s, 4), "loglik_over_forward": round(loglik_s / forward_s, 3),
            "loglik_peak_gb": loglik_peak, "forward_peak_gb": forward_peak}


def run_check(dry: bool, out_dir: Path, layers: int | None = None, batch: int = 4, seq: int = 512) -> dict[str, Any]:
    from taskneurons.runtime.atomic import atomic_write_json
    from taskneurons.runtime.metadata import git_state

    use_cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    shape = TINY if dry else LLAMA2_7B
    if dry:
        batch, seq = 2, 32
    if layers is None:
        layers = plan_layers(shape, torch.cuda.mem_get_info(device)[0], batch, seq) if use_cuda else shape["num_hidden_layers"]
    # the same resolution as every entry point's model.dtype=auto (bf16 on a GPU that computes it fast)
    resolved = resolve_dtype("auto", "gpu" if use_cuda else "cpu")
    model = build_model(shape, layers, device, DTYPES[resolved.dtype])
    meter = Meter(device)
    batches = sft_batches(2 if dry else 4, batch, seq, shape["vocab_size"], device)
    result: dict[str, Any] = {
        "check": "gpu_check", "dry": dry, "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
        "dtype": resolved.dtype, "dtype_why": resolved.why, "torch": torch.__version__, "git_sha": git_state().get("sha"),
        "model": {"shape": "tiny" if dry else "Llama-2-7b", "layers": layers, "of_layers": shape["num_hidden_layers"],
                  "params": sum(p.numel() for p in model.parameters()), "random_init": True},
        "batch": batch, "seq": seq, "target_tokens": TARGET_TOKENS,
    }
    result["attribution"] = check_attribution(model, batches, meter)
    result["neuron_ft_10pct"] = check_neuron_ft(model, batches[0], meter)
    result["full_ft_adamw"] = check_full_ft(model, batches[0], meter)
    result["scoring"] = check_scoring(model, meter, batch, seq, shape["vocab_size"])
    if "step_s" in result["full_ft_adamw"]:
        result["neuron_over_full_step"] = round(result["neuron_ft_10pct"]["step_s"] / result["full_ft_adamw"]["step_s"], 3)
    out = Path(out_dir) / ("gpu_check_dry.json" if dry else "gpu_check.json")
    atomic_write_json(out, result)
    result["path"] = str(out)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m taskneurons.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("--dry", action="store_true", help="tiny shapes on the CPU (what the tests run)")
    ap.add_argument("--out", default="outputs/bench", help="folder for gpu_check.json (default outputs/bench)")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: as many of 32 as fit)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    args = ap.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; make gpu-check runs on a GPU machine (python -m taskneurons.gpu_check --dry "
                         "runs the same code on tiny shapes on the CPU)")
    result = run_check(args.dry, Path(args.out), args.layers, args.batch, args.seq)
    m = result["model"]
    print(f"{result['device']}: {m['shape']} {m['layers']}/{m['of_layers']} layers, bf16, batch {result['batch']} x {result['seq']} tokens")
    print(f"  attribution      {result['attribution']['tokens_per_s']:>12} tokens/s   peak {result['attribution']['peak_gb']} GB")
    for name in ("neuron_ft_10pct", "full_ft_adamw"):
        r = result[name]
        print(f"  {name:<16} " + (f"{r['step_s']:>12} s/step     peak {r['peak_gb']} GB" if "step_s" in r else r["error"]))
    s = result["scoring"]
    print(f"  label loglik     {s['loglik_s']:>12} s  vs one forward {s['forward_s']} s  (x{s['loglik_over_forward']})")
    print(f"results: {result['path']}")
    return result


if __name__ == "__main__":
    main()
