"""The pictures in RUN_DIR/eval/: confusion matrix, training curves, confidently wrong images.

matplotlib with the Agg backend (no display needed); every function returns the figure
and `save` writes it as PNG. No TensorFlow here.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

MAX_LABEL_CHARS = 24  # longer class names are shortened on the axes (the report keeps them whole)
ANNOTATE_UP_TO = 20  # write the value in each cell for at most this many classes


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed): figures render to files."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display: render to files
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(figure)
    return path


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """At most `limit` characters, the middle elided: names that share a long prefix stay distinct."""
    name = str(name)
    if len(name) <= limit:
        return name
    head = (limit - 1) * 2 // 3
    return name[:head] + "…" + name[len(name) - (limit - 1 - head):]


def confusion_layout(num_classes: int) -> dict:
    """Figure size (inches) and tick font size that keep a num_classes² matrix readable.

    Up to ~12 classes a fixed 7-inch plot; beyond, each class gets a fixed strip of
    0.22 inch (~16 pt at 72 pt/inch), so tick labels never overlap: the font is set to fit
    the strip, between 6 and 11 pt. 120 classes gives a ~30-inch figure (3,000 px at 100 dpi).
    """
    n = max(int(num_classes), 1)
    cell = 0.55 if n <= 12 else max(0.22, 7.0 / n)
    side = max(5.0, n * cell)
    fontsize = float(np.clip(cell * 72 * 0.62, 6.0, 11.0))
    return {"side": side, "figsize": (side + 2.8, side + 2.2), "fontsize": fontsize, "annotate": n <= ANNOTATE_UP_TO}


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix"):
    """Row-normalised confusion matrix (rows: true class, columns: predicted class).

    `matrix` holds counts; each row is divided by its total, so a cell reads "the share of
    class r predicted as c" and the diagonal is per-class recall. Empty rows stay 0.
    """
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    normalized = normalize_rows(counts)
    n = len(class_names)
    layout = confusion_layout(n)
    fontsize = layout["fontsize"]
    figure, axes = plt.subplots(figsize=layout["figsize"])
    from matplotlib.colors import PowerNorm

    # Square-root colour scale: a 2% confusion is still visible next to a 90% diagonal.
    image = axes.imshow(normalized, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest",
                        aspect="equal")
    big = 14 if n > 40 else 11
    labels = [short_label(name) for name in class_names]
    axes.set_xticks(range(n))
    axes.set_yticks(range(n))
    if n > 12:
        axes.set_xticklabels(labels, rotation=90, fontsize=fontsize)
    else:
        axes.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
    axes.set_yticklabels(labels, fontsize=fontsize)
    axes.set_xlabel("predicted class", fontsize=big)
    axes.set_ylabel("true class", fontsize=big)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    axes.set_title(f"{title}\n{int(total)} images, accuracy {accuracy:.3f} (rows normalised: diagonal = recall)",
                   fontsize=big + 1)
    if n > 1:  # faint grid between cells so a row can be followed across a large matrix
        axes.set_xticks(np.arange(-0.5, n, 1), minor=True)
        axes.set_yticks(np.arange(-0.5, n, 1), minor=True)
        axes.grid(which="minor", color="#dddddd", linewidth=0.3 if n > 40 else 0.6)
        axes.tick_params(which="minor", length=0)
    if layout["annotate"]:
        for r in range(n):
            for c in range(n):
                if counts[r, c] == 0:
                    continue
                value = normalized[r, c]
                axes.text(c, r, f"{value:.2f}\n({int(counts[r, c])})", ha="center", va="center",
                          fontsize=max(fontsize - 2, 6), color="white" if value > 0.4 else "black")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.035, pad=0.02, ticks=[0, 0.05, 0.1, 0.25, 0.5, 0.75, 1])
    colorbar.ax.tick_params(labelsize=big - 1)
    colorbar.set_label("share of the true class (square-root colour scale)", fontsize=big - 1)
    return figure


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def training_curves_figure(history: Sequence[dict], stage_names: Sequence[str] = ()):
    """Loss, accuracy and learning rate per epoch, with the stage boundaries marked.

    `history` is history.csv as dicts (epoch is 0-based and runs on across stages; `stage`
    is the stage index). Boundaries are dashed lines; each stage's name sits above its span.
    """
    plt = pyplot()
    from matplotlib.ticker import ScalarFormatter

    rows = sorted(history, key=lambda r: float(r["epoch"]))
    epochs = np.array([float(r["epoch"]) + 1 for r in rows])

    def column(key):
        values = [r.get(key) for r in rows]
        return None if all(v in (None, "") for v in values) else np.array(
            [float(v) if v not in (None, "") else np.nan for v in values])

    stages = [int(float(r.get("stage") or 0)) for r in rows]
    panels = [("loss", ["loss", "val_loss"]), ("accuracy", ["accuracy", "val_accuracy"]), ("learning rate", ["lr"])]
    panels = [(name, [k for k in keys if column(k) is not None]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    figure, axes_list = plt.subplots(len(panels) or 1, 1, figsize=(9, 2.6 * max(len(panels), 1)), sharex=True,
                                     squeeze=False, layout="constrained")
    axes_list = axes_list[:, 0]
    starts = [i for i in range(len(stages)) if i == 0 or stages[i] != stages[i - 1]]
    for axes, (name, keys) in zip(axes_list, panels):
        for key in keys:
            style = "--" if key.startswith("val_") else "-"
            axes.plot(epochs, column(key), style, marker="o", markersize=3, label=key)
        axes.set_ylabel(name)
        values = np.concatenate([column(k) for k in keys])
        finite = values[np.isfinite(values)]
        if name == "learning rate" and len(finite) and np.all(finite > 0) and finite.max() > 3 * finite.min():
            axes.set_yscale("log")  # staged LRs span orders of magnitude: later stages would sit on 0
        else:
            formatter = ScalarFormatter(useOffset=False, useMathText=True)
            formatter.set_powerlimits((-3, 4))  # a small LR as "x 10^-4" above the axis; losses plain
            axes.yaxis.set_major_formatter(formatter)
            _pad_flat_range(axes, [column(k) for k in keys])
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
        for i in starts[1:]:
            axes.axvline(epochs[i] - 0.5, color="grey", linestyle=":", linewidth=1.2)
    top = axes_list[0]
    for j, i in enumerate(starts):  # the stage names, centred over each span, above the first panel
        end = starts[j + 1] if j + 1 < len(starts) else len(stages)
        middle = (epochs[i] + epochs[end - 1]) / 2
        index = stages[i]
        label = stage_names[index] if index < len(stage_names) else f"stage {index}"
        top.annotate(f"{index + 1}: {label}", xy=(middle, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=9,
                     color="dimgrey")
    if len(epochs):
        for axes in axes_list:
            axes.set_xlim(epochs.min() - 0.6, epochs.max() + 0.6)
    axes_list[-1].set_xlabel("epoch")
    if len(epochs) <= 30:
        axes_list[-1].set_xticks(epochs)
    figure.suptitle("Training curves (dotted lines: stage boundaries)")
    return figure


def _pad_flat_range(axes, series) -> None:
    """Nearly constant curves (one epoch, a constant LR) get a y-range of +-5% around them, not ticks
    that differ in the fifth digit."""
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in series])
    values = values[np.isfinite(values)]
    if not len(values):
        return
    low, high = values.min(), values.max()
    middle = (low + high) / 2
    span = max(abs(middle) * 0.05, 1e-12)
    if high - low < span:
        axes.set_ylim(middle - span, middle + span)


def confidently_wrong_figure(images: Sequence[np.ndarray], true_names: Sequence[str], predicted_names: Sequence[str],
                             confidences: Sequence[float], title: str = "Most confidently wrong", overlays=None):
    """A grid of misclassified images, most confident first, each titled true / predicted (p).

    overlays: the same images with a heat map of what made the model predict its class (tlkit.tools.explain); when given,
    each row of images gets a row of their overlays below it.
    """
    plt = pyplot()
    count = len(images)
    if count == 0:
        figure, axes = plt.subplots(figsize=(6, 2))
        axes.axis("off")
        axes.text(0.5, 0.5, f"{title}: no misclassified images", ha="center", va="center", fontsize=12)
        return figure
    columns = min(4, count)
    rows = math.ceil(count / columns)
    per_row = 1 if overlays is None else 2  # image row, then its heat-map row
    height = 3.5 if overlays is None else 6.6  # inches per row of images (and of their overlays)
    figure, axes_grid = plt.subplots(rows * per_row, columns, figsize=(3.0 * columns, height * rows), squeeze=False,
                                     layout="constrained")
    for axes in axes_grid.ravel():
        axes.axis("off")
    for k in range(count):
        row, column = divmod(k, columns)
        image = np.asarray(images[k])
        smooth = "nearest" if image.shape[0] < 96 else None
        axes = axes_grid[row * per_row, column]
        axes.imshow(np.clip(image, 0, 255).astype(np.uint8), interpolation=smooth)
        axes.set_title(
            f"true: {short_label(true_names[k], 22)}\n"
            f"pred: {short_label(predicted_names[k], 22)} ({confidences[k]:.2f})",
            fontsize=9, color="firebrick",
        )
        if overlays is not None:
            axes = axes_grid[row * per_row + 1, column]
            axes.imshow(np.asarray(overlays[k]), interpolation=smooth)
            axes.set_title(f"why {short_label(predicted_names[k], 22)}: Grad-CAM", fontsize=8, color="dimgrey")
    figure.suptitle(title + ("\n(under each image: where the evidence for the predicted class lies, red = most)"
                             if overlays is not None else ""), fontsize=12)
    return figure
