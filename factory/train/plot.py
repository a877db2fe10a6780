"""The loss-curve PNG of a training run: train and validation loss against iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(reports: list[dict[str, Any]], png_path: Path, title: str = "") -> Path:
    """Draw train and val loss from metrics reports into `png_path`."""
    # The object API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.add_subplot()
    for kind, key, style in (("train", "train_loss", "-o"), ("val", "val_loss", "-s")):
        points = [(r["iteration"], r[key]) for r in reports if r.get("type") == kind and key in r]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, style, markersize=3, label=f"{kind} loss")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_title(title or "training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    return png_path
