"""``make report SCALE=...``: every paper artefact, run where missing, gathered into one README + W&B run.

experiments/artefacts.yaml lists the artefacts that have a make target ({name, target, paper, scales});
PAPER_ARTEFACTS lists everything the paper reports, so an artefact nobody has built yet is listed as
missing instead of silently absent. An artefact whose ``outputs/results/<name>/<scale>/result.json``
exists and was built by this code (its ``code_hash``) is reused; otherwise ``make <target> SCALE=<scale> SEEDS=<n>`` runs it (its sweep reuses
finished jobs).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from taskneurons import EXPERIMENTS_DIR, PROJECT_ROOT
from taskneurons.errors import ConfigError
from taskneurons.report.artefacts import SCALES, md_table, output_root, render_body, results_dir
from taskneurons.runtime.atomic import atomic_write_json, atomic_write_text
from taskneurons.runtime.code_hash import code_hash
from taskneurons.runtime.metadata import git_state

# every result the paper reports (Table 3 and Tables 12-14 describe the setup and data, not results)
PAPER_ARTEFACTS = ("Table 1", "Table 2", "Table 4", "Table 5", "Table 6", "Table 7", "Table 8",
                   "Table 9", "Table 10", "Table 11", "Fig. 2", "Fig. 3", "Fig. 4", "Fig. 5", "Fig. 6")


def load_artefacts(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or EXPERIMENTS_DIR / "artefacts.yaml"
    entries = yaml.safe_load(path.read_text()) or []
    problems = [f"{path}: entry {e!r} needs name, target, paper and scales" for e in entries
                if not isinstance(e, dict) or not {"name", "target", "paper", "scales"} <= set(e)]
    if problems:
        raise ConfigError(problems)
    return entries


def make_targets(makefile: Path | None = None) -> set[str]:
    makefile = makefile or PROJECT_ROOT / "Makefile"
    if not makefile.is_file():
        # an installed wheel has no Makefile: the artefacts' sweeps are make targets of a source checkout
        raise ConfigError(f"{makefile} not found: `report all` runs the Makefile's targets, so run it in a source "
                          "checkout (git clone + make install); `report table1|table2|fig5 <sweep_dir>` work anywhere")
    text = makefile.read_text()
    return set(re.findall(r"^([A-Za-z0-9_-]+):", text, flags=re.M))


def check_request(entries: list[dict], scale: str, only: list[str] | None, seeds: int) -> list[dict]:
    if scale not in SCALES:
        raise ConfigError(f"SCALE={scale} must be one of {', '.join(SCALES)}")
    if seeds < 1:
        raise ConfigError(f"SEEDS={seeds} must be a whole number >= 1")
    names = [e["name"] for e in entries]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"unknown artefact {', '.join(unknown)}: choose from {', '.join(names)} (experiments/artefacts.yaml)")
    return [e for e in entries if not only or e["name"] in only]


def run_missing(entries: list[dict], scale: str, seeds: int, targets: set[str], run: bool) -> dict[str, dict]:
    status: dict[str, dict] = {}
    for e in entries:
        res = results_dir(e["name"], scale) / "result.json"
        st: dict[str, Any] = {"entry": e, "result": res}
        if scale not in e["scales"]:
            st["status"] = f"not defined at {scale} scale (scales: {', '.join(e['scales'])})"
        elif res.is_file() and _built_by_this_code(res):
            st["status"] = "reused"
        elif e["target"] not in targets:
            st["status"] = f"missing: no make target `{e['target']}` yet"
        elif not run:
            st["status"] = "missing: not run (--no-run)"
        else:
            cmd = ["make", "--no-print-directory", e["target"], f"SCALE={scale}", f"SEEDS={seeds}"]
            print(f"report: running {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, cwd=PROJECT_ROOT).returncode
            st["seconds"] = round(time.perf_counter() - t0, 1)
            st["status"] = "ran" if rc == 0 and res.is_file() else (
                f"failed (exit {rc})" if rc else "missing: the target ran but wrote no result.json")
        status[e["name"]] = st
    return status


def _built_by_this_code(result: Path) -> bool:
    """Whether this code built the artefact; one built by other code (or damaged) is built again."""
    try:
        return json.loads(result.read_text()).get("code_hash") == code_hash()
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def _section(name: str, st: dict, readme_dir: Path) -> list[str]:
    e = st["entry"]
    out = [f"## {e['paper']} — `{name}` ({st['status']}" + (f", {st['seconds']} s" if "seconds" in st else "") + ")", ""]
    if not st["result"].is_file():
        return out + [f"No result: `make {e['target']} SCALE=...` writes `{st['result']}`.", ""]
    r = json.loads(st["result"].read_text())
    rel = Path("..") / st["result"].parent.relative_to(output_root()) if st["result"].is_relative_to(output_root()) else st["result"].parent
    return out + [f"{r.get('title', '')}", "", *render_body(r, level=3, figure_dir=rel), ""]


def verdict_section(scale: str, readme_dir: Path) -> list[str]:
    """The verdict table (report/verdicts.py) that opens the report, and verdicts.json beside the README.
    The registry is checked against every artefact of experiments/artefacts.yaml (a report of a few of them,
    ``--only``, still lists every claim: those of the others say "no data")."""
    from taskneurons.report.claims import load_registry
    from taskneurons.report.measures import MEASURES, PREMISES, Sources
    from taskneurons.report.verdicts import evaluate, load_results, reasons_md, summary_line, verdict_table

    registry = load_registry(artefacts=[e["name"] for e in load_artefacts()], measures=set(MEASURES),
                             checks=set(PREMISES))
    names = sorted({c.artefact for c in registry.claims})
    verdicts = evaluate(registry, load_results(names, scale, output_root()), Sources(output_root(), scale),
                        MEASURES, PREMISES)
    atomic_write_json(readme_dir / "verdicts.json", {"scale": scale, "verdicts": [v.as_dict() for v in verdicts]})
    lines = ["## Verdicts: the paper's claims at this scale", "", summary_line(verdicts),
             "Verdict rules, power and the registry: [docs/evidence.md](../../docs/evidence.md) and "
             "`experiments/claims.yaml`. Effects are ours minus the contrast's second side, in the claim's units; "
             "MDE = the smallest effect the test detects with 80 % power at α = 0.05.", "",
             md_table(verdict_table(verdicts)), "", *reasons_md(verdicts), ""]
    return lines


def write_readme(status: dict[str, dict], scale: str, entries: list[dict]) -> Path:
    readme_dir = output_root() / "report"
    git = git_state()
    covered = {e["paper"] for e in entries} | {p for e in entries for p in _expand(e["paper"])}
    lines = [f"# Paper artefacts at {scale} scale", "",
             f"git `{git.get('sha')}`{' (dirty)' if git.get('dirty') else ''}, written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
             "Intervals are 95 %: bootstrap over test examples for one run, Student's t over seeds for several;"
             " p-values are paired sign-flip tests over the same test examples (pooled over seeds).", "",
             *verdict_section(scale, readme_dir),  # the verdicts open the report, before the artefact list
             "| artefact | paper | status |", "|---|---|---|"]
    lines += [f"| `{n}` | {st['entry']['paper']} | {st['status']} |" for n, st in status.items()]
    missing = [p for p in PAPER_ARTEFACTS if p not in covered]
    if missing:
        lines += ["", "Paper artefacts with no entry in experiments/artefacts.yaml yet (missing): " + ", ".join(missing) + "."]
    lines += ["", "W&B: the report run (group `report_" + scale + "`) holds every cell as a summary metric "
              "`<artefact>/<row>/<task>` (mean, lo, hi, p); open its Tables and Media panels. Upload with "
              f"`wandb sync {readme_dir}/wandb/offline-run-*`.", ""]
    for n, st in status.items():
        lines += _section(n, st, readme_dir)
    atomic_write_text(readme_dir / "README.md", "\n".join(lines) + "\n")
    return readme_dir / "README.md"


def _expand(paper: str) -> list[str]:
    """'Tables 9-11' -> ['Table 9', 'Table 10', 'Table 11']; 'Fig. 2' -> ['Fig. 2']."""
    m = re.match(r"(Tables?|Figs?\.)\s*(\d+)\s*[-–]\s*(\d+)", paper)
    if not m:
        return [paper]
    word = "Table" if m.group(1).startswith("Table") else "Fig."
    return [f"{word} {i}" for i in range(int(m.group(2)), int(m.group(3)) + 1)]


def log_report_run(status: dict[str, dict], scale: str, readme: Path) -> str | None:
    """One W&B run (offline by default) in group report_<scale>: every cell as a summary metric, tables, images."""
    try:
        import wandb
    except ImportError:
        return None
    import os

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        run = wandb.init(project="taskneurons", group=f"report_{scale}", job_type="report", name=f"report-{scale}",
                         dir=str(readme.parent), config={"scale": scale, "git": git_state()})
    except Exception as e:  # W&B must never cost the report
        print(f"report: W&B could not start ({e}); README written without it")
        return None
    summary: dict[str, float] = {}
    for name, st in status.items():
        if not st["result"].is_file():
            continue
        r = json.loads(st["result"].read_text())
        for key, c in (r.get("cells") or {}).items():
            for field in ("mean", "lo", "hi", "p"):
                if isinstance(c.get(field), int | float):
                    summary[f"{key}/{field}"] = float(c[field])
        for tname, table in r.get("tables", {}).items():
            run.log({f"{name}/{tname}": wandb.Table(columns=[str(c) for c in table["columns"]],
                                                    data=[[None if v is None else str(v) for v in row] for row in table["rows"]])})
        for fig in r.get("figures", []):
            run.log({f"{name}/{Path(fig).stem}": wandb.Image(str(st["result"].parent / fig))})
    verdicts = readme.parent / "verdicts.json"
    if verdicts.is_file():  # the verdict table as a W&B table, and each verdict as a summary string
        from taskneurons.report.verdicts import Verdict, verdict_table

        vs = [Verdict(**v) for v in json.loads(verdicts.read_text())["verdicts"]]
        table = verdict_table(vs)
        run.log({"verdicts": wandb.Table(columns=table["columns"], data=[[str(x) for x in row] for row in table["rows"]])})
        summary.update({f"verdict/{v.claim}": v.verdict for v in vs})
    run.summary.update(summary)
    path = run.dir
    run.finish()
    return path
