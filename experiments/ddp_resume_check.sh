#!/bin/bash
# Manual check (about 3 CPU-minutes, not part of `make test`): neuron-only training on 2 CPU ranks
# (trainer=ddp, gloo) is SIGKILLed (rank 0) after its first checkpoint, then the same command is rerun:
# both ranks resume from rank 0's checkpoint and the merged weights must equal an uninterrupted
# 1-process run on the same global batches. Run from the repository root: bash experiments/ddp_resume_check.sh
set -u
export TASKNEURONS_DATA=${TASKNEURONS_DATA:-../shared/data} WANDB_MODE=offline HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/ddp_resume_check}; rm -rf "$OUT"; mkdir -p "$OUT"
ARGS="model=tiny_llama logger=csv data.max_train=24 data.max_test=6 neurons.max_examples=12 eval.cls_scorers=[loglik]
 trainer.enable_progress_bar=false task=[rotten_tomatoes] optim.max_steps=6 optim.lr=1e-3 checkpoint_every=1 save_model=true"
DDP="trainer=ddp trainer.devices=2 trainer.accelerator=cpu"
TASKNEURONS_OUTPUT=$OUT/root $PY -m taskneurons.train $ARGS $DDP hydra.run.dir=$OUT/killed > "$OUT/killed.log" 2>&1 &
PID=$!
until ls "$OUT"/root/state/train/*/train_checkpoint.pt.json >/dev/null 2>&1; do sleep 0.2; done
kill -9 $PID; wait $PID 2>/dev/null; echo "SIGKILLed rank 0 (pid $PID) after its first checkpoint"
sleep 8; echo "ranks left running: $(pgrep -f "hydra.run.dir=\"$(realpath $OUT)/killed\"" | wc -l)"
TASKNEURONS_OUTPUT=$OUT/root $PY -m taskneurons.train $ARGS $DDP hydra.run.dir=$OUT/resumed > "$OUT/resumed.log" 2>&1 || { echo "rerun failed: $OUT/resumed.log"; exit 1; }
TASKNEURONS_OUTPUT=$OUT/root1 $PY -m taskneurons.train $ARGS neurons.store_dir=$OUT/root/neurons hydra.run.dir=$OUT/one > "$OUT/one.log" 2>&1 || { echo "1-process run failed: $OUT/one.log"; exit 1; }
OUT=$OUT $PY - <<'PY'
import glob, json, os
from safetensors.torch import load_file
out = os.environ["OUT"]
def metrics(d):
    x = json.load(open(f"{out}/{d}/metrics.json"))
    return x.get("payload", x)
r, o = metrics("resumed"), metrics("one")
print("resumed from batch", r["training"]["resumed_from_batch"], "on", r["training"]["distributed"]["world_size"], "ranks")
wr = load_file(glob.glob(f"{out}/resumed/model/*.safetensors")[0])
wo = load_file(glob.glob(f"{out}/one/model/*.safetensors")[0])
diff = max((wr[k] - wo[k]).abs().max().item() for k in wr)
print(f"max |resumed DDP - uninterrupted 1 process| = {diff:.3g}; loss_last {r['training']['loss_last']} vs {o['training']['loss_last']}")
raise SystemExit(0 if diff < 1e-6 else 1)
PY
