"""Checks of a continual config that need no model: method, order, W-NCFT/LoRA options, run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taskneurons.continual.methods import METHODS
from taskneurons.continual.rows import VARIANTS

IDENTITIES = ("oracle", "inferred")
NEURONS_FROM = ("current", "pretrained")


def order_name(cfg: Any) -> str:
    named = cfg.continual.get("named_order") or {}
    if named and list(named.get("tasks") or []) == list(cfg.continual.order):
        return str(named.name)
    return "custom"


def validate_continual(cfg: Any) -> list[str]:
    p: list[str] = []
    c = cfg.continual
    method = c.method.get("name") if c.get("method") else None
    if method not in METHODS:
        p.append(f"continual.method '{method}' is unknown; choose continual/method=one of {', '.join(METHODS)}")
    order = c.get("order")
    if not order or isinstance(order, str):
        p.append("continual.order must be a non-empty list of task names, e.g. \"continual.order=[cl_sst2,cl_rte]\"")
        return p
    names = list(cfg.get("tasks") or {})
    outside = [t for t in order if t not in names]
    if outside:
        p.append(f"continual.order: {outside} not in benchmark {cfg.benchmark.name} {names}; "
                 "choose tasks of the benchmark or another benchmark= (order4-6 use cl_long8)")
    repeated = sorted({t for t in order if list(order).count(t) > 1})
    if repeated:
        p.append(f"continual.order: {repeated} repeated; each task appears once in an order")
    w = c.wncft
    if w.variant not in VARIANTS:
        p.append(f"continual.wncft.variant='{w.variant}' must be one of {', '.join(VARIANTS)}")
    if w.task_identity not in IDENTITIES:
        p.append(f"continual.wncft.task_identity='{w.task_identity}' must be one of {', '.join(IDENTITIES)}")
    if int(w.vector_examples) < 1:
        p.append(f"continual.wncft.vector_examples={w.vector_examples} must be >= 1")
    if method in ("ncft", "wncft"):
        from taskneurons.neurons.identify import validate_neurons_config

        p += validate_neurons_config(cfg.neurons, cfg.model.name, list(order))
        if c.method.get("neurons_from") not in NEURONS_FROM:
            p.append(f"continual.method.neurons_from='{c.method.get('neurons_from')}' must be one of {', '.join(NEURONS_FROM)}")
    if method == "migu":
        q = c.method.get("quantile")
        try:
            ok = 0 <= float(q) < 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            p.append(f"continual.method.quantile={q} must be in [0, 1) (MIGU: rows above this quantile of a layer's "
                     "output magnitudes update)")
    if method in ("seqlora", "olora"):
        lc = c.lora
        if int(lc.r) < 1:
            p.append(f"continual.lora.r={lc.r} must be >= 1")
        if not list(lc.target_modules):
            p.append("continual.lora.target_modules must name at least one module")
    if method == "olora":
        for k in ("lambda1", "lambda2"):
            if float(c.method.get(k, 0)) < 0:
                p.append(f"continual.method.{k}={c.method.get(k)} must be >= 0")
    if c.method.get("lr") is not None and float(c.method.lr) <= 0:
        p.append(f"continual.method.lr={c.method.lr} must be > 0")
    if float(cfg.optim.lr) <= 0:
        p.append(f"optim.lr={cfg.optim.lr} must be > 0")
    return p


def run_dir_problems(out: Path, key: str | None) -> list[str]:
    """A run folder that already holds a continual run of another configuration is not reused."""
    path = Path(out) / "metrics.json"
    if not path.is_file() or key is None:
        return []
    try:
        old = json.loads(path.read_text())
        old = old.get("payload", old)
    except (OSError, ValueError):
        return []
    if old.get("job") == "continual" and old.get("config_key") not in (None, key):
        return [f"run directory {out} holds a continual run of another configuration or code version ({old.get('method')} on "
                f"{old.get('order_name')}, key {old.get('config_key')} != {key}); resume it with its own overrides "
                "or choose a new hydra.run.dir"]
    return []
