"""Task x task heatmaps (paper Fig. 5): score change of task j after intervening with task i's neurons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taskneurons.runtime.figures import save_figure  # noqa: E402


def save_change_heatmaps(change: dict[str, dict[str, dict[str, float]]], tasks: list[str], path: Path, title: str) -> Path:
    """One panel per set kind (task, random); rows = whose neurons, columns = evaluated task."""
    kinds = list(change)
    mats = {k: np.array([[change[k][i].get(j, np.nan) for j in tasks] for i in tasks]) for k in kinds}
    lim = max(1.0, float(np.nanmax(np.abs(np.stack(list(mats.values()))))))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds) + 1, 4 + 0.25 * len(tasks)), squeeze=False)
    for n, (ax, kind) in enumerate(zip(axes[0], kinds, strict=True)):
        im = ax.imshow(mats[kind], cmap="RdBu", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        # rows are the same tasks in every panel: label them once, on the left
        ax.set_yticks(range(len(tasks)), tasks if n == 0 else [])
        ax.set_xlabel("evaluated task")
        if n == 0:
            ax.set_ylabel("whose neurons (or their random control)")
        ax.set_title(f"deactivate {kind} set")
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                v = mats[kind][i, j]
                if not np.isnan(v):
                    # RdBu is dark at both ends: white text there, black on the pale middle
                    color = "white" if abs(v) > 0.6 * lim else "black"
                    ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="score change (points)")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
