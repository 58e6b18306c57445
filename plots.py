"""Small plotting functions shared by the scripts. Each takes arrays already computed and
returns a matplotlib Figure; `save` writes it atomically and closes it; `minmax` scales maps
to [0, 1] for display (kernel_vis.py, cam.py, guided_backprop.py)."""
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
import numpy as np  # noqa: E402

from cli import UserError  # noqa: E402
from files import atomic_path  # noqa: E402

# The report (report/build.py) prints every figure at its own size, capped at the text width, so a
# figure no wider than PRINT_WIDTH_IN prints its fonts at the point sizes set here. Graders read
# print: no text in a figure below MIN_FONT_PT (tests check it with `font_sizes`).
PRINT_WIDTH_IN = 6.5
MIN_FONT_PT = 7
DPI = 200


def check_format(path):
    """A one-line error, before any work, for a figure path whose ending matplotlib cannot write."""
    kinds = FigureCanvasBase.get_supported_filetypes()  # {"png": "Portable Network Graphics", ...}
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in kinds:
        raise UserError(f"cannot write a figure as {str(path)!r}: end the name in one of "
                        f".{', .'.join(sorted(kinds))} (e.g. .png or .pdf)")


def save(fig, path, dpi=DPI):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1])
    plt.close(fig)


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (shorter window at the start), same length as `values`."""
    values = np.asarray(values, dtype=float)
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


SPLIT_NAMES = {"val": "validation", "test": "test"}


HALF_WIDTH_IN = 3.2  # printed width of a figure the report sets beside another: two fit the text width
PAD_IN = 0.1         # save() adds this margin on each side (matplotlib's bbox_inches="tight" padding)


def batch_conditions(flip: bool, crop: int, dropout: float, label_smoothing: float) -> str:
    """How a training batch differs from an evaluated one, for plot_loss's footnote."""
    said = (["augmented"] if flip or crop else []) + (["dropout on"] if dropout else []) + \
           (["label smoothing"] if label_smoothing else [])
    return ", ".join(said) or "no augmentation, dropout or label smoothing"


def plot_loss(history: dict, title: str, eval_names=("val", "test"),
              conditions="augmented, dropout on, label smoothing"):
    """Per-step training loss (raw and smoothed), the per-epoch training loss measured in eval
    mode (history rows' train_eval_loss, see training.fit) and per-epoch evaluation losses, x in
    epochs. Printable at half the text width (HALF_WIDTH_IN, so the report sets two networks' plots
    side by side), no text under MIN_FONT_PT; the legend sits under the axes (it never hides a
    curve) and a footnote says what each curve is; `conditions` (batch_conditions) says how
    the training batches differ from evaluated images."""
    steps = np.asarray(history["step_loss"])
    epochs = history["epochs"]
    steps_per_epoch = len(steps) / max(len(epochs), 1)
    x = np.arange(1, len(steps) + 1) / steps_per_epoch
    # inches from the bottom: footnote (0.05-0.65), legend (0.7-1.25), ticks and x label, axes (1.65-3.1), title
    width, height = HALF_WIDTH_IN - 2 * PAD_IN, 3.5  # every text lies inside: prints HALF_WIDTH_IN wide
    fig = plt.figure(figsize=(width, height))
    axes_width = width - 0.65
    ax = fig.add_axes((0.55 / width, 1.65 / height, axes_width / width, 1.45 / height))
    ax.plot(x, steps, color="tab:blue", alpha=0.25, lw=0.8, label="training loss, running (per step)")
    ax.plot(x, smooth(steps, max(int(steps_per_epoch) // 5, 1)), color="tab:blue", lw=1.8,
            label="training loss, running (smoothed)")
    curves = [("train_eval", "tab:green", "s-", "training loss, eval mode (per epoch)")]
    curves += [(name, color, "o-", f"{SPLIT_NAMES.get(name, name)} loss (per epoch)") for name, color in zip(eval_names, ("tab:orange", "tab:red"))]
    drawn = [steps]
    for name, color, style, label in curves:
        key = f"{name}_loss"
        if epochs and key in epochs[0]:
            values = [float(e[key]) for e in epochs]
            ax.plot([e["epoch"] for e in epochs], values, style, color=color, ms=3, label=label)
            drawn.append(values)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("cross-entropy loss", fontsize=8)
    ax.set_title("\n".join(textwrap.wrap(title, 40)), fontsize=8)
    ax.tick_params(labelsize=7)
    top = max(max(np.percentile(steps, 99), 0.5), *(max(v) for v in drawn[1:])) if len(steps) else 1.0
    ax.set_ylim(0, min(top * 1.1, 5))
    shade_low_res(ax, epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(-0.5 / axes_width, -0.38 / 1.45), frameon=False,
              borderaxespad=0, handlelength=1.5, labelspacing=0.25)
    held_out = " and ".join(SPLIT_NAMES.get(n, n) for n in eval_names if epochs and f"{n}_loss" in epochs[0])
    held_out = held_out or "held-out"
    n = history.get("train_eval_images")
    subset = f"the same {n:,} training images every epoch" if n else "a fixed subset of the training images"
    # Why the running training curve can lie above the validation one: it is measured while training.
    fig.text(0.05 / width, 0.05 / height, "\n".join(textwrap.wrap(
        f"Running: each step's batch as training sees it ({conditions}). In eval mode: "
        f"{subset}, like the {held_out} images: plain cross-entropy, no augmentation. {held_out.capitalize()} "
        "minus eval mode training loss is the overfitting gap.", 54)), fontsize=7, color="0.3", va="bottom")
    return fig


def shade_low_res(ax, epochs: list):
    """Grey the epochs trained on smaller images (progressive resizing, history rows' image_size):
    their evaluation points, at full size, sit above the rest for that reason."""
    sizes = [int(e["image_size"]) for e in epochs if "image_size" in e]
    if len(sizes) != len(epochs) or not sizes or min(sizes) == max(sizes):
        return
    low = min(sizes)
    n_low = sum(s == low for s in sizes)  # the first n_low epochs (training.fit puts them first)
    ax.axvspan(0, n_low, color="0.92", zorder=0, lw=0)
    ax.text(n_low / 2, 0.03 * ax.get_ylim()[1], f"trained at {low}×{low}", ha="center", va="bottom", fontsize=7,
            color="0.3")


def plot_confusion(cm: np.ndarray, classes, title: str):
    """Confusion matrix heatmap: rows are true classes, columns predicted classes."""
    import seaborn as sns

    # HALF_WIDTH_IN wide, so the report sets two networks' matrices side by side, each printed at its
    # own size with every text >= MIN_FONT_PT; a 3-digit count at 7 pt fits a cell of a 10 x 10 matrix.
    fig, ax = plt.subplots(figsize=(HALF_WIDTH_IN - 0.45, 3.2))  # the tick labels stick out of the figure
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, ax=ax,  # counts are printed
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7})
    ax.set_xlabel("Predicted class", fontsize=8)
    ax.set_ylabel("True class", fontsize=8)
    ax.set_title("\n".join(textwrap.fill(line, 46) for line in title.split("\n")), fontsize=7.5)
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.tick_params(axis="x", rotation=45)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.tick_params(axis="y", rotation=0)
    return fig


def minmax(t, dims=None):
    """A torch tensor rescaled to [0, 1] over `dims` (min -> 0, max -> 1; default: every dim
    but the first, i.e. each map of a batch (N, ...) on its own, as Zhou et al. display CAMs);
    a constant slice becomes 0."""
    dims = tuple(range(1, t.ndim)) if dims is None else dims
    lo, hi = t.amin(dims, keepdim=True), t.amax(dims, keepdim=True)
    return (t - lo) / (hi - lo).clamp_min(1e-12)


def show_image(ax, image: np.ndarray, title: str | None = None, title_size: float = 8, **kw):
    """Draw an image given as (C, H, W) or (H, W) array: grayscale or RGB, no axes; the title
    at `title_size` points (>= MIN_FONT_PT for a figure printed at its own size)."""
    kw_title_size = max(title_size, MIN_FONT_PT)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3:
        image = image.transpose(1, 2, 0)
        ax.imshow(image, **kw)
    else:
        ax.imshow(image, cmap=kw.pop("cmap", "gray"), **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=kw_title_size)


def plot_examples(images, titles, suptitle: str):
    """A row of images, each with its own (multi-line) title; 1.6 in per image, so a pair prints
    at its own size in half the report's text width with 7-8 pt text."""
    fig, axes = plt.subplots(1, max(len(images), 2), figsize=(1.6 * max(len(images), 2), 2.5), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        show_image(ax, image, title, title_size=7)
    for ax in axes[0][len(images):]:
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    return fig


def font_sizes(fig) -> list:
    """The point size of every non-empty text in `fig` (titles, labels, ticks, legends,
    annotations), drawn first so that tick labels exist."""
    fig.canvas.draw()
    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip()]
