"""Contact sheet of rendered images with their labels and ground-truth boxes (for eyeballing a dataset)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

# One fixed colour per boxed finding, so a class looks the same on every sheet.
BOX_COLOURS: dict[str, str] = {
    "Atelectasis": "#1f77b4",
    "Cardiomegaly": "#ff7f0e",
    "Effusion": "#2ca02c",
    "Infiltration": "#d62728",
    "Mass": "#9467bd",
    "Nodule": "#e377c2",
    "Pneumonia": "#bcbd22",
    "Pneumothorax": "#17becf",
}
_FALLBACK_COLOURS = ("#8c564b", "#7f7f7f", "#aec7e8", "#ffbb78")
TILE_INCHES = 3.2
DPI = 100


def write_contact_sheet(images: Sequence[np.ndarray], titles: Sequence[str],
                        boxes: Sequence[dict[str, tuple[int, int, int, int]]], path: str | os.PathLike,
                        columns: int = 4) -> None:
    """Writes a PNG grid of `images` (ceil(n / columns) rows), each titled and with its boxes outlined and named."""
    if not (len(images) == len(titles) == len(boxes)):
        raise ValueError(f"images, titles and boxes differ in length: {len(images)}, {len(titles)}, {len(boxes)}")
    if not images:
        raise ValueError("no images to draw")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib (slow import); Agg, no global switch
    from matplotlib.figure import Figure  # deferred: matplotlib (slow import)
    from matplotlib.patches import Rectangle  # deferred: matplotlib (slow import)

    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(TILE_INCHES * columns, (TILE_INCHES + 0.35) * rows), dpi=DPI)
    FigureCanvasAgg(fig)
    for i, (image, title, image_boxes) in enumerate(zip(images, titles, boxes)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
        ax.set_title(title, fontsize=7, pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
        for k, (name, (x, y, w, h)) in enumerate(sorted(image_boxes.items())):
            colour = BOX_COLOURS.get(name, _FALLBACK_COLOURS[k % len(_FALLBACK_COLOURS)])
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.2))
            ax.text(x, y - 2, name, color=colour, fontsize=6, va="bottom", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.8, "edgecolor": "none"})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.97, wspace=0.04, hspace=0.18)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(os.fspath(path), format="png", facecolor="white")
