"""Printed tables and written artefacts (table.md + PNG + result.json + W&B) of the analyze commands,
each with the paper's numbers, or its stated trend, beside ours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.table import Table

from taskneurons.analyze.artefact import CAP_KEYS, job_caps, sweep_command, this_command, write_artefact
from taskneurons.analyze.proportions import LINES, trend
from taskneurons.report.artefacts import md_table, paper_numbers
from taskneurons.report.curves import Panel, save_curves


def _pct(p: float) -> str:
    return f"{p * 100:g}%"


def _out(cfg: Any, artefact: str) -> Path:
    return Path(cfg.analyze.results_dir) / artefact / str(cfg.analyze.scale)


def _commands(cfg: Any, artefact: str, sweeps: list[str | None] = ()) -> list[str]:
    """The make command (the targets pass it in TASKNEURONS_ARTEFACT_CMD), the sweep, and this analysis."""
    cmds = [os.environ.get("TASKNEURONS_ARTEFACT_CMD")] + [sweep_command(Path(s)) for s in sweeps if s]
    return [c for c in cmds if c] + [this_command()]


def _cfg_caps(cfg: Any) -> dict[str, Any]:
    out = {}
    for k in CAP_KEYS:
        v = OmegaConf.select(cfg, k, default=None)
        if v is not None:
            out[k] = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
    return out


def _caps_seeds(jobs: list[tuple[Path, dict]]) -> tuple[dict[str, Any], list[int], str]:
    caps = job_caps(jobs[0][0] / "config.yaml") if jobs else {}
    return caps, sorted({int(m.get("seed", 0)) for _, m in jobs}), str(jobs[0][1].get("model")) if jobs else ""


def _write(cfg: Any, artefact: str, title: str, tables: dict, paper: dict, figures: list[Path], md: str,
           caps: dict, model: str, seeds: list[int], sweeps: list[str | None] = ()) -> None:
    path = write_artefact(_out(cfg, artefact), artefact=artefact, scale=str(cfg.analyze.scale), title=title, tables=tables,
                          paper=paper, figures=figures, commands=_commands(cfg, artefact, sweeps), caps=caps, model=model,
                          seeds=seeds, markdown=md, logger_cfg=cfg.logger)
    print(f"{artefact}: {path.parent / 'table.md'}")


# --- Table 8 ---------------------------------------------------------------------------------------

def overlap_rich(table: dict, props: list[float]) -> Table:
    t = Table(title="overlap rate (%, Jaccard of the unions of training-task and test-task sets)")
    t.add_column("pair")
    for p in props:
        t.add_column(_pct(p), justify="right")
    for pair, by_p in table.items():
        t.add_row(pair, *[f"{by_p[p]['jaccard'] * 100:.1f}" for p in props])
    return t


def table8_artefact(cfg: Any, table: dict, props: list[float], metrics: dict) -> None:
    paper = paper_numbers("generalization")
    p8 = paper.get("table8", {})
    cols = ["pair"] + [f"ours {_pct(p)}" for p in props] + [f"paper {_pct(p)}" for p in p8.get("columns", [])]
    rows = [[pair] + [round(by_p[p]["jaccard"] * 100, 1) for p in props] + list(p8.get("rows", {}).get(pair, []))
            for pair, by_p in table.items()]
    layers = sorted(next(iter(next(iter(table.values())).values()))["per_layer"])
    lcols = ["pair", "proportion"] + [f"L{layer}" for layer in layers]
    lrows = [[pair, p] + [round(by_p[p]["per_layer"][layer] * 100, 1) for layer in layers] for pair, by_p in table.items() for p in props]
    png = save_curves([Panel(f"{pair}: per-layer overlap", [float(x) for x in layers],
                             {_pct(p): [by_p[p]["per_layer"][layer] * 100 for layer in layers] for p in props},
                             "layer", "overlap (%)") for pair, by_p in table.items()],
                      _out(cfg, "table8") / "table8_per_layer.png", "Table 8 per layer: Jaccard of unions")
    trends = paper.get("trends", {}).get("table8", [])
    ours = [f"{pair}: {trend([by_p[p]['jaccard'] for p in props])}" for pair, by_p in table.items()]
    md = (md_table({"columns": cols, "rows": rows}, 1) + "\n\nPaper's stated trends: " + "; ".join(trends) + "\n\nOurs: " + "; ".join(ours)
          + "\n\nPer layer (%):\n\n" + md_table({"columns": lcols, "rows": lrows}, 1))
    _write(cfg, "table8", "Table 8: overlap rate of training vs test neuron sets by proportion",
           {"table8": {"columns": cols, "rows": rows}, "per_layer": {"columns": lcols, "rows": lrows}},
           {"table8": {"columns": ["pair"] + [_pct(p) for p in p8.get("columns", [])],
                       "rows": [[k, *v] for k, v in p8.get("rows", {}).items()]}, "trends": trends},
           [png], md, _cfg_caps(cfg), str(cfg.model.name), [int(cfg.seed)])


# --- Fig. 2 / Fig. 6 -------------------------------------------------------------------------------

def fig2_rich(table: dict) -> Table:
    t = Table(title="Fig. 2: ID / OOD scores by proportion of fine-tuned task neurons")
    for c in ("group", "proportion", *LINES, "mean"):
        t.add_column(c, justify="right")
    for g, by_p in table.items():
        for p, row in by_p.items():
            t.add_row(g, _pct(p), *[("–" if row[c] is None else f"{row[c]:.1f}") for c in (*LINES, "mean")])
    return t


def fig2_artefact(cfg: Any, table: dict, jobs: list) -> None:
    paper = paper_numbers("generalization")
    points = paper.get("fig2_points", {})
    cols = ["group", "proportion", *LINES, "mean", "paper OOD-CLS", "paper OOD-GEN"]
    rows = [[g, p, *[row[c] for c in (*LINES, "mean")], points.get(g, {}).get("OOD-CLS", {}).get(p),
             points.get(g, {}).get("OOD-GEN", {}).get(p)] for g, by_p in table.items() for p, row in by_p.items()]
    panels = [Panel(f"({'a' if g.startswith('CLS') else 'b'}) {g}", list(by_p),
                    {c: [row[c] for row in by_p.values()] for c in (*LINES, "mean") if any(row[c] is not None for row in by_p.values())},
                    "proportion of task neurons fine-tuned", "score") for g, by_p in sorted(table.items())]
    png = save_curves(panels, _out(cfg, "fig2") / "fig2.png", "Fig. 2: specialisation (ID) vs generalisation (OOD)")
    trends = paper.get("trends", {}).get("fig2", [])
    ours = [f"{g} {c}: {trend([row[c] for row in by_p.values()])}" for g, by_p in table.items() for c in LINES
            if any(row[c] is not None for row in by_p.values())]
    md = (md_table({"columns": cols, "rows": rows}, 1) + "\n\nPaper (Fig. 2 has no numbers; the points come from the starred rows of "
          "Tables 9-11). Stated trends:\n\n" + "\n".join(f"- {x}" for x in trends) + "\n\nOurs:\n\n" + "\n".join(f"- {x}" for x in ours))
    caps, seeds, model = _caps_seeds(jobs)
    _write(cfg, "fig2", "Fig. 2: ID and OOD performance by proportion of fine-tuned task neurons",
           {"fig2": {"columns": cols, "rows": rows}}, {"points": points, "trends": trends}, [png], md, caps, model, seeds,
           [cfg.analyze.sweep_dir])


def fig6_rich(table: dict) -> Table:
    props = sorted({p for by_p in table.values() for p in by_p})
    t = Table(title="Fig. 6: each task trained alone, its own score by proportion")
    t.add_column("task")
    for p in props:
        t.add_column(_pct(p), justify="right")
    for task, by_p in table.items():
        t.add_row(task, *[("–" if by_p.get(p) is None else f"{by_p[p]:.1f}") for p in props])
    return t


def fig6_artefact(cfg: Any, table: dict, jobs: list) -> None:
    paper = paper_numbers("generalization")
    props = sorted({p for by_p in table.values() for p in by_p})
    cols = ["task"] + [_pct(p) for p in props] + ["ours: trend"]
    rows = [[t] + [by_p.get(p) for p in props] + [trend([by_p.get(p) for p in props])] for t, by_p in table.items()]
    groups = {k: list(v) for k, v in OmegaConf.to_container(cfg.analyze.groups, resolve=True).items()}
    panels = [Panel(name, props, {t: [table[t].get(p) for p in props] for t in groups[key] if t in table},
                    "proportion of task neurons fine-tuned", "score") for name, key in (("CLS tasks", "train_cls"), ("GEN tasks", "train_gen"))
              if any(t in table for t in groups[key])]
    png = save_curves(panels, _out(cfg, "fig6") / "fig6.png", "Fig. 6: specialisation of each task trained alone")
    trends = paper.get("trends", {}).get("fig6", [])
    md = md_table({"columns": cols, "rows": rows}, 1) + "\n\nPaper's stated trend (no numbers): " + "; ".join(trends)
    caps, seeds, model = _caps_seeds(jobs)
    _write(cfg, "fig6", "Fig. 6: single-task specialisation by proportion", {"fig6": {"columns": cols, "rows": rows}},
           {"trends": trends}, [png], md, caps, model, seeds, [cfg.analyze.sweep_dir])


# --- Tables 9-11 -----------------------------------------------------------------------------------

def controlled_rich(table: dict) -> Table:
    t = Table(title="Tables 9-11: OOD score by overlap rate (rows) and trained size (columns)")
    for c in ("pair", "overlap", "size", "score", "achieved overlap %"):
        t.add_column(c, justify="right")
    for pair, d in table.items():
        for o, by_s in d["cells"].items():
            for s, v in by_s.items():
                t.add_row(pair, _pct(o), _pct(s), "–" if v is None else f"{v:.1f}", f"{d['achieved'][o][s]:.1f}")
    return t


def _our_starred(cfg: Any, pair: str, sizes: list[float], n_paper: int) -> list[list]:
    """Our uncontrolled runs (Fig. 2 sweep) at their Table 8 overlap, like the paper's starred rows,
    when fig2 and table8 results of this scale exist."""
    import json

    root = Path(cfg.analyze.results_dir)
    f2, t8 = root / "fig2" / str(cfg.analyze.scale) / "result.json", root / "table8" / str(cfg.analyze.scale) / "result.json"
    if not (f2.is_file() and t8.is_file()):
        return []
    fig2, table8 = json.loads(f2.read_text())["tables"]["fig2"], json.loads(t8.read_text())["tables"]["table8"]
    group = "CLS-trained" if pair.startswith("CLS") else "GEN-trained"
    col = fig2["columns"].index("OOD-CLS" if pair.endswith("CLS") else "OOD-GEN")
    t8row = next((r for r in table8["rows"] if r[0] == pair), None)
    out = []
    for s in sizes:
        score = next((r[col] for r in fig2["rows"] if r[0] == group and float(r[1]) == s), None)
        head = f"ours {_pct(s)}"
        if score is None or t8row is None or head not in table8["columns"]:
            continue
        ov = t8row[table8["columns"].index(head)]
        out.append([f"{ov}%* (ours, uncontrolled, size {_pct(s)})"] + [score if x == s else None for x in sizes] + [None] * n_paper)
    return out


def table9_artefact(cfg: Any, table: dict, jobs: list) -> None:
    paper = paper_numbers("generalization").get("controlled", {})
    tables, md_parts, paper_out = {}, [], {}
    for pair, d in table.items():
        sizes = sorted({s for by_s in d["cells"].values() for s in by_s})
        pp = paper.get(pair, {})
        psizes = paper.get("sizes", [])
        cols = ["overlap"] + [f"ours {_pct(s)}" for s in sizes] + [f"paper {_pct(s)}" for s in psizes]
        rows = [[_pct(o)] + [by_s.get(s) for s in sizes] + list(pp.get("rows", {}).get(o, [None] * len(psizes)))
                for o, by_s in d["cells"].items()]
        rows += _our_starred(cfg, pair, sizes, len(psizes))
        for s, (ov, score) in (pp.get("starred") or {}).items():
            rows.append([f"{ov}%* (paper, uncontrolled, size {_pct(s)})"] + [None] * len(sizes)
                        + [score if x == s else None for x in psizes])
        name = pp.get("table", pair)
        tables[pair] = {"columns": cols, "rows": rows}
        paper_out[pair] = pp
        md_parts.append(f"## {name}, {pair}\n\n" + md_table({"columns": cols, "rows": rows}, 1))
        by_size = [f"size {_pct(s)}: {trend([d['cells'][o].get(s) for o in d['cells']])} with overlap" for s in sizes]
        by_ov = [f"overlap {_pct(o)}: {trend([d['cells'][o].get(s) for s in sizes])} with size" for o in d["cells"]]
        md_parts.append("Ours: " + "; ".join(by_size + by_ov))
    trends = paper_numbers("generalization").get("trends", {}).get("table9", [])
    panels = [Panel(f"{pair}: OOD score", sorted(d["cells"]),
                    {f"size {_pct(s)}": [d["cells"][o].get(s) for o in sorted(d["cells"])]
                     for s in sorted({s for by_s in d["cells"].values() for s in by_s})},
                    "overlap rate |T ∩ N_y| / |T|", "mean OOD score") for pair, d in table.items()]
    png = save_curves(panels, _out(cfg, "table9") / "table9.png", "Tables 9-11: controlled overlap")
    md = "\n\n".join(md_parts) + "\n\nPaper's stated trends: " + "; ".join(trends)
    caps, seeds, model = _caps_seeds(jobs)
    _write(cfg, "table9", "Tables 9-11: OOD performance at controlled overlap and trained size", tables,
           {**paper_out, "trends": trends}, [png], md, caps, model, seeds, [cfg.analyze.sweep_dir])


# --- Fig. 3 / Table 4 ------------------------------------------------------------------------------

def similarity_rich(curves: dict, panels: dict) -> Table:
    t = Table(title="Fig. 3: per-layer similarity (mean over models)")
    t.add_column("panel")
    t.add_column("test task")
    t.add_column("per layer")
    for name, by_task in curves.items():
        for task, vals in by_task.items():
            t.add_row(f"({name}) {panels[name][0]}", task, " ".join(f"{v:.3f}" for v in vals))
    return t


def fig3_artefact(cfg: Any, metrics: dict, panels: dict) -> None:
    curves = metrics["curves"]
    n_layers = len(next(iter(next(iter(curves.values())).values())))
    layers = list(range(n_layers))
    cols = ["panel", "test task"] + [f"L{i}" for i in layers] + ["ours: trend"]
    rows = [[name, task] + [round(v, 4) for v in vals] + [trend(vals)] for name, by_task in curves.items() for task, vals in by_task.items()]
    png = save_curves([Panel(f"({name}) {panels[name][0]}", [float(x) for x in layers], by_task, "layer", "cosine similarity")
                       for name, by_task in curves.items()], _out(cfg, "fig3") / "fig3.png",
                      f"Fig. 3: similarity of task-neuron parameters ({metrics['option']}, k={metrics['proportion']:g})")
    trends = paper_numbers("generalization").get("trends", {}).get("fig3", [])
    md = (md_table({"columns": cols, "rows": rows}, 3) + "\n\nPaper's stated trends (no numbers):\n\n" + "\n".join(f"- {x}" for x in trends))
    jobs = [(Path(p).parent, {"seed": cfg.seed, "model": metrics["model"]}) for p in metrics["models"].values()]
    caps, seeds, model = _caps_seeds(jobs)
    out = _out(cfg, "fig3")
    from taskneurons.runtime.atomic import atomic_write_json

    atomic_write_json(out / "similarity.json", metrics)  # Table 4 reads it
    _write(cfg, "fig3", "Fig. 3: per-layer parameter similarity of training vs test task neurons",
           {"fig3": {"columns": cols, "rows": rows}}, {"trends": trends}, [png], md, caps, model, seeds, [cfg.analyze.sweep_dir])


def table4_rich(rows: dict) -> Table:
    t = Table(title="Table 4: similarity vs OOD score, over the fully fine-tuned models")
    for c in ("test task", "n", "Pearson r (p)", "Spearman rho (p)"):
        t.add_column(c, justify="right")
    for task, r in rows.items():
        t.add_row(task, str(r["n"]), _rp(r["pearson_r"], r["pearson_p"]), _rp(r["spearman_rho"], r["spearman_p"]))
    return t


def _rp(r: float | None, p: float | None) -> str:
    return "undefined (constant input)" if r is None else f"{r:.2f} ({p:.2f})"


def table4_artefact(cfg: Any, metrics: dict) -> None:
    paper = paper_numbers("generalization").get("table4", {})
    rows_in = metrics["correlation"]
    cols = ["test task", "n", "Pearson r", "p", "Spearman rho", "p", "paper r", "paper p", "paper rho", "paper p"]
    rows = [[t, r["n"], r["pearson_r"], r["pearson_p"], r["spearman_rho"], r["spearman_p"], *paper.get(t, [None] * 4)]
            for t, r in rows_in.items()]
    md = md_table({"columns": cols, "rows": rows}, 2) + "\n\n" + "; ".join(paper_numbers("generalization").get("trends", {}).get("table4", []))
    sim = Path(metrics["similarity_file"])
    _write(cfg, "table4", "Table 4: correlation of neuron-parameter similarity with OOD performance",
           {"table4": {"columns": cols, "rows": rows}},
           {"table4": {"columns": ["test task", "r", "p", "rho", "p"], "rows": [[k, *v] for k, v in paper.items()]}},
           [], md, _cfg_caps(cfg), str(metrics.get("model")), [int(cfg.seed)], [cfg.analyze.sweep_dir] if cfg.analyze.sweep_dir else [])
    _ = sim
