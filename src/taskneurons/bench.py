"""`make bench`: speed and memory as ratios against a baseline measured in the same run.

Each benchmark writes outputs/bench/<name>.json. Not a test: numbers are reported, not asserted; the
targets from DESIGN.md are written beside them with a pass/fail flag so regressions are visible.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from taskneurons import PROJECT_ROOT
from taskneurons.data.encoding import encode_example, pad
from taskneurons.data.loading import load_tasks
from taskneurons.data.tasks import task_spec_from_config
from taskneurons.eval.scoring import label_loglik
from taskneurons.models.loading import load_model_and_tokenizer
from taskneurons.runtime.atomic import atomic_write_json

OUT = PROJECT_ROOT / "outputs" / "bench"
MID_LLAMA = dict(config=dict(model_type="llama", hidden_size=768, intermediate_size=3072, num_hidden_layers=6,
                             num_attention_heads=12, num_key_value_heads=4, tie_word_embeddings=False))


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_models(which: list[str]) -> dict[str, tuple[Any, Any]]:
    """SmolLM2, and a random-init Llama about 3x its FFN width that shares its real tokenizer (so label
    strings are 1-2 tokens, as with any real model, not the bytes of the test tokenizer)."""
    smol = load_model_and_tokenizer(OmegaConf.load(PROJECT_ROOT / "conf" / "model" / "smollm2_135m.yaml"))
    models = {}
    for name in which:
        if name == "smollm2_135m":
            models[name] = smol
        else:
            tok = smol[1]
            config = AutoConfig.for_model(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **MID_LLAMA["config"])
            torch.manual_seed(0)
            models[name] = (AutoModelForCausalLM.from_config(config).eval(), tok)
    return models


def starter_batches(tok, task: str, n: int, batch_size: int, max_tokens: int):
    tcfg = OmegaConf.load(PROJECT_ROOT / "conf" / "task" / f"{task}.yaml")
    spec = task_spec_from_config(task, tcfg)
    data = load_tasks([spec], None, 0, n, 0, splits=("test",))[task]
    enc = [encode_example(tok, spec, ex, max_tokens, 16) for ex in data.test]
    prompts = [e.prompt_ids for e in enc]
    labels = [tok(spec.target_prefix + lab, add_special_tokens=False).input_ids for lab in spec.labels]
    return [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)], labels


@torch.no_grad()
def bench_loglik(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Label log-likelihood scoring vs one plain forward over the same prompt batches (target <= 1.2)."""
    rows = {}
    for mname, (model, tok) in models.items():
        for task in ("rotten_tomatoes", "bbc_topic"):
            batches, labels = starter_batches(tok, task, 64, 16, 128)

            def plain(batches=batches, tok=tok, model=model):
                for b in batches:
                    ids, mask = pad(b, tok.pad_token_id, "left")
                    model(input_ids=ids, attention_mask=mask)

            def scored(batches=batches, tok=tok, model=model, labels=labels):
                for b in batches:
                    label_loglik(model, b, labels, tok.pad_token_id)

            t_plain, t_scored = timed(plain), timed(scored)
            rows[f"{mname}/{task}"] = {
                "labels": len(labels), "label_tokens": [len(x) for x in labels], "prompts": sum(len(b) for b in batches),
                "plain_forward_s": round(t_plain, 4), "loglik_s": round(t_scored, 4),
                "ratio": round(t_scored / t_plain, 3), "target": 1.2, "meets_target": t_scored / t_plain <= 1.2,
            }
    return rows


BENCHES: dict[str, Callable[[dict], dict]] = {"loglik": bench_loglik}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=list(BENCHES), choices=list(BENCHES))
    ap.add_argument("--models", nargs="*", default=["smollm2_135m", "mid_llama"])
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    models = load_models(args.models)
    for name in args.only:
        result = {"benchmark": name, "threads": torch.get_num_threads(), "results": BENCHES[name](models)}
        path = Path(OUT) / f"{name}.json"
        atomic_write_json(path, result)
        for key, row in result["results"].items():
            print(f"{name:8s} {key:34s} ratio={row['ratio']:.3f} (target <= {row['target']}) {'ok' if row['meets_target'] else 'MISSED'}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
