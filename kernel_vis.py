"""Look inside a trained CNN: its first-layer kernels, what each kernel does to an image, the
feature maps along the network, the filters of deeper layers, and how Gabor-like the kernels are.

    python kernel_vis.py                                           # runs/fashionmnist-cnn/model.pt, test image #0
    python kernel_vis.py --checkpoint runs/cifar10-gap/model.pt --image my_photo.png
    python kernel_vis.py --checkpoint runs/cifar10-dense/model.pt --index 7
    python kernel_vis.py --checkpoint runs/cifar10-gap/model.pt --layers conv1 conv2 res2_1.conv1

Works with any checkpoint of cnn.CNN (Fashion-MNIST CNN, CIFAR-10 "dense" net) or cnn.GAPNet
(CIFAR-10 "gap" net); it never trains, and runs on the CPU (one image). Writes to
<checkpoint folder>/kernels/ (or --out-dir); a chosen sample or layers go to a folder named after
them (kernels-index-7/, kernels-image-my_photo/, kernels-layers-conv1-conv2/), so the standard
figures, which the report uses, stay:

- kernels.png      every kernel of the first conv layer, each min-max normalized to [0, 1] on its
                   own (RGB kernels: over their three channels together, drawn as colour images)
- filtered.png     the sample image, then its convolution with each first-layer kernel (the
                   layer's own stride, padding and bias), each normalized to [0, 1]
- feature_maps.png the sample image and the first channel of every activation and pooling stage
                   in forward order (see `feature_path` for which stages are shown)
- feature_maps_<layer>.png / filters_<layer>.png  for each of --layers (default: the first, the
                   middle and the last conv layer, from low-level to abstract; the assignment asks
                   for at most three): every output channel's feature map (after the layer's
                   activation) and every kernel (first input channel; RGB for the first layer), one
                   panel per output channel (--max-channels caps them); those of other layers,
                   left by an earlier run, are deleted
- gabor.png, gabor.json  a 2-D Gabor function fitted to each first-layer kernel, for the trained
                   network and for an untrained one of the same shape (see `fit_gabor`); --seed
                   seeds that untrained network (with the run's own --seed it is the very network
                   training started from) and the fit's random starts

The sample: test image --index (default 0, the first test image), or any image file --image,
converted to the model's channels, center-cropped to a square and resized to the training size,
then normalized with the checkpoint's mean and std.
"""
import cli  # first, before torch: Ctrl-C while the libraries load ends in one line
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares
from torch import nn

import data
import files
import hooks
import plots
from cnn import ResidualBlock
from training import build_model, load_checkpoint

DEFAULT_CHECKPOINT = "runs/fashionmnist-cnn/model.pt"
DATASET_TITLES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
GABOR_PARAMS = ("amplitude", "x0", "y0", "sigma_x", "sigma_y", "theta", "frequency", "phase", "offset")
# A kernel counts as Gabor-like when the fitted Gabor explains >= 70% of its pixel variance.
# Chance level, measured with this fit on uniform-noise kernels (16 each; 10th/50th/90th
# percentile of R^2): 3x3 0.80/0.96/1.00, 5x5 0.42/0.54/0.60, 7x7 0.26/0.31/0.38. So 0.7 lies
# above what noise reaches for k >= 5, while for 3x3 kernels (9 pixels, 9 parameters) nearly
# every kernel passes: there only the untrained baseline (same shape, default init) says anything.
GABOR_THRESHOLD = 0.7
MIN_GABOR_KERNEL = 5  # smallest kernel size for which the Gabor share means something


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="model.pt of a CNN or GAPNet written by fashionmnist.py or cifar10.py")
    cli.add_common_args(p)
    s = p.add_argument_group("sample image (one of)").add_mutually_exclusive_group()
    s.add_argument("--index", type=int, default=0, help="index of the test image to look at")
    s.add_argument("--image", type=Path, help="any image file (PNG, JPEG, ...) instead of a test image")
    f = p.add_argument_group("figures")
    f.add_argument("--layers", nargs="+",
                   help="conv layers for feature_maps_<layer>.png and filters_<layer>.png "
                        "(default: the first, middle and last; names as in the model, e.g. conv1_1 or "
                        "res2_1.conv1)")
    f.add_argument("--max-channels", type=cli.positive_int,
                   help="at most this many channels per feature-map or filter figure (default: all)")
    f.add_argument("--gabor-threshold", type=float, default=GABOR_THRESHOLD,
                   help="R^2 from which a kernel counts as Gabor-like")
    args = p.parse_args(argv)
    if args.index < 0:
        p.error(f"--index must be >= 0, got {args.index}")
    if not 0 < args.gabor_threshold < 1:
        p.error(f"--gabor-threshold must be between 0 and 1, got {args.gabor_threshold}")
    args.out_dir = Path(args.out_dir) if args.out_dir else default_out_dir(args)
    return args


def default_out_dir(args) -> Path:
    """<checkpoint folder>/kernels for the standard figures (test image #0, default layers); a
    chosen sample or chosen layers get a folder named after them."""
    parts = ["kernels"]
    if args.image is not None:
        parts.append(f"image-{cli.slug(args.image.stem)}")
    elif args.index:
        parts.append(f"index-{args.index}")
    if args.layers:
        parts.append("layers-" + "-".join(cli.slug(layer) for layer in args.layers))
    return Path(args.checkpoint).parent / "-".join(parts)


# ---- the sample image ------------------------------------------------------------------------------

def load_image(path, channels: int, size) -> torch.Tensor:
    """Any image file as uint8 (1, C, H, W) at the model's size (see data.load_image)."""
    return data.load_image(path, channels, size)


def image_size(ckpt) -> tuple[int, int]:
    """(H, W) the model was trained on."""
    if ckpt["dataset"] in data.DATASETS:
        return data.DATASETS[ckpt["dataset"]][2][:2]
    size = ckpt["model"]["args"].get("image_size", 32)
    return size, size


def sample_from_test_set(ds, index: int):
    """Test image `index` as uint8 (1, C, H, W) and its caption."""
    if index >= len(ds.x_test):
        raise cli.UserError(f"--index {index} is out of range: the test set has {len(ds.x_test)} images "
                            f"(0 to {len(ds.x_test) - 1})")
    return ds.x_test[index:index + 1], f"test image #{index} ({ds.classes[ds.y_test[index]]})"


# ---- compute ------------------------------------------------------------------------------------------

def short_name(name: str) -> str:
    """Module name without the `features.` container prefix: conv1_1, res2_1.conv1."""
    return name.removeprefix("features.")


def conv_layers(model: nn.Module) -> list:
    """[(short name, nn.Conv2d)] in definition order (the forward order of CNN and GAPNet)."""
    return [(short_name(n), m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def first_conv(model: nn.Module):
    """(name, module) of the first convolutional layer; a UserError for a model without one."""
    convs = conv_layers(model)
    if not convs:
        raise cli.UserError(f"the checkpoint holds a {type(model).__name__}, which has no convolutional layer; "
                            "pass a CNN or GAPNet checkpoint (e.g. python fashionmnist.py --model cnn)")
    return convs[0]


def kernels(conv: nn.Conv2d) -> torch.Tensor:
    """The layer's kernels (C_out, C_in, k, k), each min-max normalized to [0, 1] on its own.

    An RGB kernel is normalized over its three channels together, so its colours keep their
    relative weights."""
    return plots.minmax(conv.weight.detach().float(), (1, 2, 3))


def filter_responses(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The layer's convolution of one normalized image x (1, C_in, H, W) with each kernel k on
    its own, exactly F.conv2d(x, W[k:k+1], b[k:k+1], stride, padding, dilation): (C_out, H', W')."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else None
    with torch.no_grad():
        return torch.cat([F.conv2d(x, w[k:k + 1], None if b is None else b[k:k + 1],
                                   conv.stride, conv.padding, conv.dilation)[0]
                          for k in range(w.shape[0])])


def trace(model: nn.Module, x: torch.Tensor):
    """Run x (1, C, H, W) through the model; return ([(name, module, output)] for every leaf
    module in the order it ran, outputs detached, and the logits (1, classes))."""
    modules = dict(model.named_modules())
    # eval mode: batch norm on its running statistics, as the network classifies
    with hooks.eval_mode(model), torch.no_grad(), hooks.record_outputs(model) as outputs:
        logits = model(x)
    return [(short_name(n), modules[n], out.detach()) for n, out in outputs.items()], logits


LEAF_KINDS = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "relu", nn.MaxPool2d: "maxpool",
              nn.AvgPool2d: "avgpool"}


def _leaf_kinds(model: nn.Module, records) -> list:
    """[(name, kind, output)] for the records that are feature-map stages of a CNN: kind is conv,
    bn, relu, skip+relu (a residual block's relu2, which acts on x + bn2(conv2(.))), maxpool or
    avgpool. Global average pooling (a 1x1 map), dropout and the dense head are left out."""
    modules = {short_name(n): m for n, m in model.named_modules()}
    leaves = []
    for name, module, out in records:
        kind = LEAF_KINDS.get(type(module))
        if kind is None or out.ndim != 4:
            continue
        parent = modules.get(name.rpartition(".")[0])
        if isinstance(parent, ResidualBlock) and module is parent.relu2:
            kind = "skip+relu"
        leaves.append((name, kind, out))
    return leaves


def _stages(model: nn.Module, records):
    """Group the leaf outputs into the stages feature_path shows.

    A stage ends at every ReLU and every 2x2 pool; its kind names the modules run since the
    previous stage, e.g. conv+bn+relu, conv+maxpool (a stage pooling straight after its conv),
    bn+relu, maxpool, and conv+bn+skip+relu for a residual block's output.
    Returns [(name, kind, output (1, C, H, W), convs run since the previous ReLU)]."""
    stages, chain, convs = [], [], []
    for name, kind, out in _leaf_kinds(model, records):
        chain.append(kind)
        if kind == "conv":
            convs.append(name)
        if kind != "conv" and kind != "bn":
            stages.append((name, "+".join(chain), out, convs))
            chain = []
            if kind.endswith("relu"):
                convs = []
    return stages


def feature_path(model: nn.Module, records) -> list:
    """[(name, kind, output (1, C, H, W))] for every activation and pooling stage, forward order,
    from the records of a `trace`.

    CNN: conv+bn+relu of each conv, then each pool. GAPNet: the stem's relu, each stage's pool and
    relu, and inside each residual block relu1 (conv1+bn1+relu1) and relu2 (the block's output)."""
    return [(name, kind, out) for name, kind, out, _ in _stages(model, records)]


def conv_feature_maps(model: nn.Module, records, layers) -> dict:
    """{conv name: (description, maps (C, H, W))}, from the records of a `trace`: for each conv
    layer in `layers`, the output of the first ReLU after it (its activation, after batch norm,
    pooling or a residual sum in between), which is what the network passes on; the raw conv
    output if no ReLU follows."""
    stages = _stages(model, records)
    leaves = _leaf_kinds(model, records)
    order = [name for name, _, _ in leaves]
    maps = {}
    for layer in layers:
        stage = next((s for s in stages if s[1].endswith("relu") and layer in s[3]), None)
        if stage is None:
            maps[layer] = (f"{layer} (its raw output)", leaves[order.index(layer)][2][0])
            continue
        between = [kind for _, kind, _ in leaves[order.index(layer) + 1:order.index(stage[0]) + 1]]
        maps[layer] = (f"{layer} → {' → '.join(between)} (output of {stage[0]})", stage[2][0])
    return maps


def layer_filters(conv: nn.Conv2d, rgb: bool) -> torch.Tensor:
    """Kernels to draw for a conv layer: (C_out, 3, k, k) RGB if `rgb`, else the first input
    channel (C_out, 1, k, k); each min-max normalized on its own."""
    w = conv.weight.detach().float()
    return plots.minmax(w if rgb else w[:, :1], (1, 2, 3))


# ---- Gabor fits ---------------------------------------------------------------------------------------

def gabor(params, xx, yy):
    """2-D Gabor function on the pixel grid (xx, yy) (Daugman 1985; Jones & Palmer 1987):
    A exp(-(x'^2 / 2 sx^2 + y'^2 / 2 sy^2)) cos(2 pi f x' + phase) + offset, with (x', y') the
    coordinates rotated by theta about (x0, y0); f in cycles per pixel, along x'."""
    a, x0, y0, sx, sy, theta, f, phase, c = params
    dx, dy = xx - x0, yy - y0
    xr = dx * np.cos(theta) + dy * np.sin(theta)
    yr = -dx * np.sin(theta) + dy * np.cos(theta)
    return a * np.exp(-0.5 * (xr ** 2 / sx ** 2 + yr ** 2 / sy ** 2)) * np.cos(2 * np.pi * f * xr + phase) + c


def fit_gabor(kernel: np.ndarray, seed: int = 0, n_random: int = 8) -> dict:
    """Least-squares fit of a Gabor function to one (k, k) kernel.

    The kernel is standardized first (R^2 does not change). Starts: a grid of 4 orientations x
    3 frequencies x 2 phases, plus `n_random` starts drawn with `seed`; the best fit is kept.
    Bounds: amplitude >= 0 (the phase carries the sign), centre within the kernel, 0.5 <= sigma
    <= k, theta in [0, pi], frequency in [0, 0.5] (Nyquist), phase in [-pi, pi].
    Returns {"params": {name: value} in the kernel's own units, "r2", "fitted": (k, k)}; R^2 is
    1 - SS_res / SS_tot over the kernel's pixels (0 for a constant kernel)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    k = kernel.shape[0]
    mean, std = kernel.mean(), kernel.std()
    if std < 1e-12:
        return {"params": None, "r2": 0.0, "fitted": np.full_like(kernel, mean)}
    z = (kernel - mean) / std
    yy, xx = np.mgrid[:k, :k] - (k - 1) / 2  # pixel centres, origin at the kernel's centre
    half = k / 2
    lower = [0, -half, -half, 0.5, 0.5, 0, 0, -np.pi, -np.inf]
    upper = [np.inf, half, half, k, k, np.pi, 0.5, np.pi, np.inf]
    rng = np.random.default_rng(seed)
    starts = [(t, f, ph) for t in np.pi * np.array([1, 3, 5, 7]) / 8 for f in (0.08, 0.2, 0.35)
              for ph in (0.0, np.pi / 2)]
    starts += [(rng.uniform(0, np.pi), rng.uniform(0.02, 0.48), rng.uniform(-np.pi, np.pi))
               for _ in range(n_random)]
    residual = lambda p: (gabor(p, xx, yy) - z).ravel()
    bounds = (lower, upper)
    # Screen every start with a few iterations, then run the 3 best to convergence: the same
    # optimum as running all to convergence on our test kernels, about 4x faster.
    screened = sorted((least_squares(residual, [1.5, 0, 0, k / 4, k / 4, theta, freq, phase, 0.0],
                                     bounds=bounds, max_nfev=15) for theta, freq, phase in starts),
                      key=lambda fit: fit.cost)
    best = min((least_squares(residual, fit.x, bounds=bounds, max_nfev=200) for fit in screened[:3]),
               key=lambda fit: fit.cost)
    r2 = 1 - 2 * best.cost / (z ** 2).sum()  # cost = SS_res / 2; SS_tot of z = sum z^2
    params = dict(zip(GABOR_PARAMS, best.x.tolist()))
    params["amplitude"] = float(params["amplitude"] * std)  # back to the kernel's units
    params["offset"] = float(params["offset"] * std + mean)
    return {"params": params, "r2": float(r2), "fitted": gabor(best.x, xx, yy) * std + mean}


def gabor_kernels(weight: torch.Tensor) -> np.ndarray:
    """The (C_out, k, k) kernels the Gabor fit sees: the kernel itself for one input channel, the
    mean over input channels otherwise (RGB: the kernel's response to an achromatic pattern,
    shown equally to the three normalized channels; colour-opponent kernels score low)."""
    return weight.detach().double().mean(1).numpy()


def fit_gabors(weight: torch.Tensor, seed: int) -> list:
    return [fit_gabor(k, seed=seed + i) for i, k in enumerate(gabor_kernels(weight))]


def gabor_report(trained: list, untrained: list, threshold: float, kernel_size: int, in_channels: int,
                 weight_correlation: float | None = None) -> dict:
    """The numbers gabor.json holds: per-kernel R^2 and the share of kernels with R^2 >= threshold,
    for the trained network and an untrained one of the same shape; weight_correlation: Pearson
    correlation of the trained and untrained first-layer weights (near 1: the untrained network
    is the trained one's own starting point and training moved the kernels little)."""
    def summary(fits):
        r2 = np.array([f["r2"] for f in fits])
        return {"r2": r2.round(4).tolist(), "share_above_threshold": float((r2 >= threshold).mean()),
                "median_r2": float(np.median(r2))}

    pixels = kernel_size ** 2
    meaningful = kernel_size >= MIN_GABOR_KERNEL
    return {
        "threshold": threshold, "kernel_size": kernel_size, "pixels": pixels,
        "gabor_parameters": len(GABOR_PARAMS),
        "fitted_to": "the kernel" if in_channels == 1 else f"the mean of its {in_channels} input channels",
        "meaningful": meaningful, "weight_correlation_trained_untrained": weight_correlation,
        "caveat": None if meaningful else (
            f"{kernel_size}x{kernel_size} kernels have {pixels} pixels for {len(GABOR_PARAMS)} Gabor "
            f"parameters, so almost any kernel fits; a Gabor share means something only for kernels of "
            f"{MIN_GABOR_KERNEL}x{MIN_GABOR_KERNEL} or larger, and only against the untrained share"),
        "trained": {**summary(trained), "params": [f["params"] for f in trained]},
        "untrained": summary(untrained),
    }


def untrained_first_conv(ckpt, seed: int) -> nn.Conv2d:
    """First conv layer of a freshly initialized network of the checkpoint's class and arguments,
    default init after torch.manual_seed(seed). fashionmnist.py and cifar10.py seed the same way right
    before building their model, so with the run's --seed this is the trained network's own
    initialization (gabor.json's weight correlation tells which case it is)."""
    torch.manual_seed(seed)
    return first_conv(build_model(ckpt["model"]["name"], ckpt["model"]["args"]))[1]


# ---- figures ------------------------------------------------------------------------------------------

def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    """(rows, cols) near-square, at most max_cols wide, rows filled evenly."""
    cols = min(max(math.ceil(math.sqrt(n)), 1), max_cols)
    rows = math.ceil(n / cols)
    return rows, math.ceil(n / rows)


def plot_panels(panels, titles, suptitle: str, cbar_label: str | None = None, cmap="gray",
                panel_size=1.5, title_size=7, max_cols=8, wide=False, input_first=False):
    """Images (C, H, W) or (H, W) with values in [0, 1] in a grid, a title over each, and one
    colour bar for all (0 to 1) when cbar_label is given. wide: as few rows as max_cols allows.
    input_first: the first panel is the input image, drawn in gray (or RGB) whatever `cmap`."""
    import matplotlib.pyplot as plt

    n = len(panels)
    rows, cols = grid_shape(n, max_cols) if not wide else (math.ceil(n / max_cols), 0)
    cols = cols or math.ceil(n / rows)
    title_lines = max(str(t).count("\n") + 1 for t in titles)
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained", figsize=(
        panel_size * cols + (0.9 if cbar_label else 0),
        (panel_size + 0.13 * title_lines) * rows + 0.25 + 0.18 * (suptitle.count("\n") + 1)))
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, (ax, panel, title) in enumerate(zip(axes.flat, panels, titles)):
        plots.show_image(ax, np.asarray(panel), None, cmap="gray" if input_first and i == 0 else cmap,
                         vmin=0, vmax=1)
        ax.set_title(title, fontsize=title_size)
    fig.suptitle(suptitle, fontsize=9)
    if cbar_label:
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        fig.colorbar(mappable, ax=axes, fraction=0.04 if rows > 1 else 0.08, shrink=min(1.0, 0.5 + 0.1 * rows),
                     label=cbar_label)
    return fig


def as_display(image_uint8: torch.Tensor) -> np.ndarray:
    """uint8 (1, C, H, W) -> float (C, H, W) in [0, 1]."""
    return image_uint8[0].float().numpy() / 255


def plot_kernels(k01: torch.Tensor, network: str, layer: str):
    rgb = k01.shape[1] == 3
    panels = k01.numpy() if rgb else k01[:, 0].numpy()
    how = "each drawn as an RGB image, its 3 channels scaled together" if rgb else "gray scale"
    return plot_panels(panels, [f"#{i}" for i in range(len(panels))],
                       f"{network}: the {len(panels)} kernels of the first conv layer ({layer}, "
                       f"{k01.shape[-2]}x{k01.shape[-1]})\neach min-max normalized to [0, 1] on its own "
                       f"(0 = its most negative weight, 1 = its most positive); {how}",
                       cbar_label="normalized weight" + (" (each colour channel)" if rgb else ""))


def plot_filtered(image01, caption, responses: torch.Tensor, network: str, layer: str):
    panels = [image01] + list(plots.minmax(responses, (1, 2)).numpy())
    titles = ["input:\n" + caption] + [f"kernel #{i}" for i in range(len(responses))]
    h, w = responses.shape[-2:]
    return plot_panels(panels, titles,
                       f"{network}: the sample image convolved with each kernel of {layer} "
                       f"(its stride, padding and bias; before batch norm and ReLU)\n"
                       f"each {h}x{w} output min-max normalized to [0, 1] on its own (white = strongest response)",
                       cbar_label="normalized response", input_first=True)


def plot_feature_path(image01, caption, path, network: str):
    panels, titles = [image01], ["input:\n" + caption]
    for name, kind, out in path:
        first = out[0, 0]  # (H, W): the first channel, as the assignment asks
        titles.append(f"{name}\n{kind}\n{tuple(out.shape[1:])}" + ("\n(all equal)" if first.max() == first.min() else ""))
        panels.append(plots.minmax(first, (0, 1)).numpy())
    return plot_panels(panels, titles,
                       f"{network}: the sample through the network, first channel of every activation and "
                       f"pooling stage\ntitle: stage, what ran since the previous panel, output shape (C, H, W); "
                       f"each panel min-max normalized on its own",
                       cbar_label="normalized activation", cmap="viridis", panel_size=1.9,
                       title_size=7, max_cols=7, wide=True, input_first=True)


def grid_style(n: int) -> dict:
    """Smaller panels in more columns for wide layers, so 192 channels still fit a page."""
    return dict(panel_size=1.0, max_cols=16, title_size=5) if n > 64 else {}


def plot_layer_maps(maps: torch.Tensor, description: str, network: str, max_channels: int | None):
    shown = maps[:max_channels]
    cap = f"the first {len(shown)} of {len(maps)} channels" if len(shown) < len(maps) else f"all {len(maps)} channels"
    panels = [plots.minmax(m, (0, 1)).numpy() for m in shown]
    titles = [f"ch {i}" + (" (0)" if m.max() == m.min() else "") for i, m in enumerate(shown)]
    return plot_panels(panels, titles,
                       f"{network}: feature maps of {description}\n{cap}, {tuple(maps.shape[-2:])} each, "
                       f"each min-max normalized on its own ((0): all zero for this image)",
                       cbar_label="normalized activation", cmap="viridis", **grid_style(len(shown)))


def plot_layer_filters(k01: torch.Tensor, layer: str, in_channels: int, network: str, max_channels: int | None):
    shown = k01[:max_channels]
    rgb = shown.shape[1] == 3
    cap = f"the first {len(shown)} of {len(k01)}" if len(shown) < len(k01) else f"all {len(k01)}"
    what = "drawn as RGB" if rgb else (f"input channel 0 of {in_channels}" if in_channels > 1 else "")
    return plot_panels(shown.numpy() if rgb else shown[:, 0].numpy(), [f"#{i}" for i in range(len(shown))],
                       f"{network}: learned filters of {layer}, {cap} ({k01.shape[-2]}x{k01.shape[-1]}"
                       f"{', ' + what if what else ''})\neach min-max normalized to [0, 1] on its own",
                       cbar_label="normalized weight" + (" (each colour channel)" if rgb else ""),
                       **grid_style(len(shown)))


def plot_gabor(kernels_k: np.ndarray, fits: list, report: dict, network: str, n_best: int = 8):
    """The best-fitting kernels (top row) above their fitted Gabor functions (bottom row)."""
    import matplotlib.pyplot as plt

    order = np.argsort([-f["r2"] for f in fits])[:n_best]
    fig, axes = plt.subplots(2, len(order), squeeze=False, layout="constrained",
                             figsize=(1.6 * max(len(order), 4) + 0.5, 4.6))
    for col, i in enumerate(order):
        kern, fitted = kernels_k[i], fits[i]["fitted"]
        lo, hi = min(kern.min(), fitted.min()), max(kern.max(), fitted.max())  # same scale for both
        plots.show_image(axes[0, col], kern, f"kernel #{i}\nR² = {fits[i]['r2']:.2f}", vmin=lo, vmax=hi)
        axes[0, col].title.set_fontsize(8)
        plots.show_image(axes[1, col], fitted, "its fitted Gabor", vmin=lo, vmax=hi)
        axes[1, col].title.set_fontsize(8)
    t, tr, un = report["threshold"], report["trained"], report["untrained"]
    caveat = "" if report["meaningful"] else (
        f"\ncaveat: {report['kernel_size']}x{report['kernel_size']} kernels have {report['pixels']} pixels "
        f"for 9 parameters, so nearly anything fits: compare with the untrained share")
    fig.suptitle(f"{network}: first-layer kernels most like a Gabor function ({report['fitted_to']})\n"
                 f"R² ≥ {t}: {100 * tr['share_above_threshold']:.0f}% of trained kernels, "
                 f"{100 * un['share_above_threshold']:.0f}% of an untrained network's{caveat}", fontsize=9)
    return fig


# ---- main ---------------------------------------------------------------------------------------------

def network_title(ckpt, checkpoint) -> str:
    dataset = DATASET_TITLES.get(ckpt["dataset"], ckpt["dataset"])
    return f"{dataset} {ckpt['model']['name']} ({Path(checkpoint).parent.name})"


def pick_layers(model, requested) -> list:
    names = [n for n, _ in conv_layers(model)]
    if requested is None:  # first, middle, last: how features change with depth, in three layers
        return [names[i] for i in sorted({round(k * (len(names) - 1) / 2) for k in range(3)})]
    unknown = [n for n in requested if n not in names]
    if unknown:
        raise cli.UserError(f"--layers: no conv layer named {unknown[0]!r}; this model has {', '.join(names)}")
    return list(dict.fromkeys(requested))


def file_name(prefix: str, layer: str) -> str:
    return f"{prefix}_{layer.replace('.', '-')}.png"


def load_sample(args, ckpt, in_channels: int):
    """The sample as uint8 (1, C, H, W) and its caption: --image, else test image --index."""
    if args.image is not None:
        return load_image(args.image, in_channels, image_size(ckpt)), args.image.name
    return sample_from_test_set(data.load_dataset(ckpt["dataset"], args.data_dir), args.index)


def compute(model: nn.Module, ckpt, x: torch.Tensor, layers, seed: int, threshold: float) -> dict:
    """Everything the figures and gabor.json show, for one normalized image x (1, C, H, W),
    from one `trace` of the model (feature path, per-layer maps and prediction alike)."""
    layer, conv = first_conv(model)
    records, logits = trace(model, x)
    prob, pred = logits.softmax(1)[0].max(0)
    convs = dict(conv_layers(model))
    trained_fits = fit_gabors(conv.weight, seed)
    untrained = untrained_first_conv(ckpt, seed).weight.detach()
    corr = torch.corrcoef(torch.stack([conv.weight.detach().flatten(), untrained.flatten()]))[0, 1].item()
    return {
        "layer": layer, "layers": layers,
        "predicted": (ckpt["classes"][pred], prob),        # class name, probability (0-dim tensor)
        "kernels": kernels(conv),                           # (C_out, C_in, k, k) in [0, 1]
        "responses": filter_responses(conv, x),             # (C_out, H', W')
        "path": feature_path(model, records),               # [(name, kind, (1, C, H, W))]
        "maps": conv_feature_maps(model, records, layers),  # {layer: (description, (C, H, W))}
        "filters": {name: (layer_filters(c, rgb=c is conv and c.in_channels == 3), c.in_channels)
                    for name, c in convs.items() if name in layers},   # {layer: ((C_out, 1|3, k, k), C_in)}
        "gabor_kernels": gabor_kernels(conv.weight),        # (C_out, k, k), what the fits saw
        "trained_fits": trained_fits, "correlation": corr,
        "report": gabor_report(trained_fits, fit_gabors(untrained, seed), threshold, conv.kernel_size[0],
                               conv.in_channels, round(corr, 4)),
    }


def figures(result: dict, network: str, image01, caption: str, max_channels):
    """(file name, figure) for every figure of `result` (see compute), drawn one at a time so
    that each can be saved and closed before the next."""
    layer = result["layer"]
    yield "kernels.png", plot_kernels(result["kernels"], network, layer)
    yield "filtered.png", plot_filtered(image01, caption, result["responses"], network, layer)
    yield "feature_maps.png", plot_feature_path(image01, caption, result["path"], network)
    for name in result["layers"]:
        description, fmap = result["maps"][name]
        k01, in_channels = result["filters"][name]
        yield file_name("feature_maps", name), plot_layer_maps(fmap, description, network, max_channels)
        yield file_name("filters", name), plot_layer_filters(k01, name, in_channels, network, max_channels)
    yield "gabor.png", plot_gabor(result["gabor_kernels"], result["trained_fits"], result["report"], network)


def write_figures(result: dict, out: Path, network: str, image01, caption: str, max_channels) -> list:
    """Save every figure into out; returns the file names written, in order."""
    written = []
    for name, fig in figures(result, network, image01, caption, max_channels):
        plots.save(fig, out / name)
        written.append(name)
    return written


def remove_stale_figures(out: Path, written) -> list:
    """Delete feature_maps_<layer>.png / filters_<layer>.png this run did not write: left by an
    earlier model or --layers, they would sit beside this model's figures as if they were its."""
    stale = sorted(p for pattern in ("feature_maps_*.png", "filters_*.png") for p in out.glob(pattern)
                   if p.name not in written)
    for p in stale:
        p.unlink()
    return [p.name for p in stale]


def print_summary(network: str, caption: str, out: Path, written, stale, result: dict):
    report, layer, corr = result["report"], result["layer"], result["correlation"]
    print(f"{network}: sample {caption.splitlines()[0]}, {caption.splitlines()[1]}")
    print(f"wrote to {out}: {', '.join(written)}")
    if stale:
        print(f"removed stale figures of other layers: {', '.join(stale)}")
    print(f"Gabor fits of the {len(result['trained_fits'])} {layer} kernels ({report['kernel_size']}x"
          f"{report['kernel_size']}, {report['fitted_to']}): R^2 >= {report['threshold']} for "
          f"{100 * report['trained']['share_above_threshold']:.0f}% of trained kernels vs "
          f"{100 * report['untrained']['share_above_threshold']:.0f}% untrained "
          f"(median R^2 {report['trained']['median_r2']:.2f} vs {report['untrained']['median_r2']:.2f}); "
          f"trained and untrained weights correlate {corr:.2f}"
          + (" (the untrained net is this run's own initialization)" if corr > 0.5 else ""))
    if report["caveat"]:
        print(f"caveat: {report['caveat']}")


def main(argv=None):
    args = parse_args(argv)
    model, ckpt = load_checkpoint(args.checkpoint)
    in_channels = first_conv(model)[1].in_channels    # a UserError for a model without convs
    layers = pick_layers(model, args.layers)
    x_uint8, caption = load_sample(args, ckpt, in_channels)
    x = data.normalize(x_uint8, ckpt["mean"], ckpt["std"])  # (1, C, H, W)
    result = compute(model, ckpt, x, layers, args.seed, args.gabor_threshold)
    predicted, prob = result["predicted"]
    caption += f"\npredicted {predicted} ({100 * prob:.0f}%)"
    network = network_title(ckpt, args.checkpoint)
    written = write_figures(result, args.out_dir, network, as_display(x_uint8), caption, args.max_channels)
    files.write_json(args.out_dir / "gabor.json", {"checkpoint": str(args.checkpoint), "layer": result["layer"],
                                                 "layers": layers, **result["report"]})  # layers: the report's page order
    written.append("gabor.json")
    print_summary(network, caption, args.out_dir, written, remove_stale_figures(args.out_dir, written), result)


if __name__ == "__main__":
    cli.run(main)
