"""A trained result of a continual run as a standard Hugging Face folder.

Entry point::

    python -m taskneurons.export RUN_DIR OUT [--stage K] [--task TASK] [--verify] [--push-to-hub OWNER/NAME]

``RUN_DIR`` is a continual run's folder (``metrics.json`` beside its config). Writes the model after
stage ``K`` (1-based; default the last finished stage) to ``OUT`` (``model.safetensors``, ``config.json``,
tokenizer files, and ``taskneurons_export.json`` saying which run, stage and task it is): NCFT / SeqFT /
MIGU / MTL weights as trained, SeqLoRA / O-LoRA adapters merged, W-NCFT's similarity-weighted rows for
``--task``. ``AutoModelForCausalLM.from_pretrained(OUT)`` loads it with the same logits; any HF tool
(``python -m taskneurons.harness --model OUT``, lm-eval, vLLM) can use it. ``--verify`` re-scores the
exported model on the run's own test examples and prints, per task, the run's score beside the export's.
A neuron-only or full fine-tune of ``python -m taskneurons.train`` writes its folder itself
(``save_model=true``); in Python, ``taskneurons.export_hf`` writes any model and
``taskneurons.export_continual`` does what this command does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taskneurons.errors import ConfigError


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m taskneurons.export", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="a continual run's folder (with metrics.json)")
    ap.add_argument("out", help="the folder to write (created; files in it are replaced)")
    ap.add_argument("--stage", type=int, help="export the model after this stage (1-based; default: the last finished)")
    ap.add_argument("--task", help="W-NCFT only: the task whose similarity-weighted rows to write")
    ap.add_argument("--verify", action="store_true",
                    help="re-score the export on the run's test examples and compare with the run's scores")
    ap.add_argument("--push-to-hub", metavar="OWNER/NAME", help="also upload the folder (network and a login needed)")
    args = ap.parse_args(argv)
    from taskneurons.api import export_continual

    try:
        record = export_continual(args.run_dir, args.out, stage=args.stage, task=args.task, verify=args.verify,
                                  push_to_hub=args.push_to_hub)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({k: v for k, v in record.items() if k != "verify"}, indent=1, default=str))
    for task, v in record.get("verify", {}).items():
        if not v["comparable"]:
            print(f"verify {task}: not comparable ({v['why']})")
            continue
        ll = "" if "gold_loglik_run" not in v else \
            f", mean gold log-likelihood run {v['gold_loglik_run']} / export {v['gold_loglik_export']}"
        print(f"verify {task}: score run {v['run']} / export {v['export']} (n={v['n']}){ll}")
    print(f"exported to {args.out}")
    return record


if __name__ == "__main__":
    main()
