"""Line plots (paper Figs. 2, 3, 6): one or more panels of named curves over a shared x axis, drawn in
the same style as the heatmaps (Agg backend, 120 dpi, written whole then renamed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from taskneurons.runtime.figures import save_figure  # noqa: E402

# the paper's Fig. 2 colours: ID-CLS blue, OOD-CLS orange, ID-GEN purple, OOD-GEN green, mean red
COLORS = {"ID-CLS": "tab:blue", "OOD-CLS": "tab:orange", "ID-GEN": "tab:purple", "OOD-GEN": "tab:green",
          "mean": "tab:red"}


@dataclass
class Panel:
    title: str
    x: list[float]
    curves: dict[str, list[float | None]]
    xlabel: str = ""
    ylabel: str = ""
    notes: list[str] = field(default_factory=list)  # the paper's stated trend, printed under the panel


def save_curves(panels: list[Panel], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, ys in panel.curves.items():
            pts = [(x, y) for x, y in zip(panel.x, ys, strict=True) if y is not None]
            if pts:
                xs, vs = zip(*pts, strict=True)
                ax.plot(xs, vs, marker="o", label=name, color=COLORS.get(name),
                        linestyle="--" if name == "mean" else "-")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if panel.notes:
            ax.text(0.0, -0.22, "\n".join(panel.notes), transform=ax.transAxes, fontsize=7, va="top", wrap=True)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
