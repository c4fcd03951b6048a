"""The schedule-law figure: each series' curves (points) and the Multi-Power Law's prediction
(lines), one panel per size."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display on the machines that run the workflow

import matplotlib.pyplot as plt  # noqa: E402

from scalinglab import atomic  # noqa: E402


def draw(panels: list[dict], out) -> None:
    """`panels`: [{title, lines: [{name, steps, loss, pred_steps, pred}]}]."""
    cols = min(3, max(1, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, line in enumerate(panel["lines"]):
            color = f"C{i % 10}"
            ax.plot(line["pred_steps"], line["pred"], color=color, lw=1.2)
            ax.plot(line["steps"], line["loss"], "o", ms=2.5, color=color, label=line["name"])
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Multi-Power Law fitted per size: points measured, lines predicted")
    fig.tight_layout()
    atomic.write_with(out, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)
