"""The accuracy-matrix heatmap of one continual run, redrawn after every stage (``accuracy_matrix.png``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taskneurons.runtime.figures import save_figure  # noqa: E402


def save_matrix_heatmap(matrix: list[list[float]], stages: list[str], tasks: list[str], path: Path, title: str) -> Path:
    """Rows = after which stage, columns = evaluated task, cells = score."""
    a = np.array(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(tasks), 1.2 + 0.5 * len(stages)))
    im = ax.imshow(a, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(stages)), [f"after {s}" for s in stages])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.1f}", ha="center", va="center", fontsize=8, color="w" if a[i, j] < 60 else "k")
    fig.colorbar(im, ax=ax, label="score")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
