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
                   layer's own stride, padding and bias if any), each normalized to [0, 1]
- feature_maps.png the sample image first, then the first channel of every activation and pooling
                   stage in forward order, each labelled in plain words ('conv 1 + batch norm +
                   ReLU', 'max pool 1') with its shape (see `feature_path`, `stage_labels`)
- feature_stats.json  per stage: its label, shape (C, H, W), share of active units and how its
                   response follows the image's edges or its whole silhouette (see
                   `stage_statistics`), on the sample and averaged over the first --stats-images
                   test images
- feature_maps_<layer>.png / filters_<layer>.png  for each of --layers (default: the first, the
                   middle and the last conv layer, from low-level to abstract; the assignment asks
                   for at most three): the feature maps (after the layer's activation) and the
                   kernels (first input channel; RGB for the first layer) of channels 1-32, each
                   numbered; feature_maps_<layer>_all.png / filters_<layer>_all.png  every channel
                   without numbers, for a layer with more than 32 (--max-channels caps both); those
                   of other layers, left by an earlier run, are deleted
- gabor.png, gabor.json  a 2-D Gabor function fitted to each first-layer kernel, for the trained
                   network and for an untrained one of the same shape (see `fit_gabor`); --seed
                   seeds that untrained network (with the run's own --seed it is the very network
                   training started from) and the fit's random starts

Every figure fits the printed text width (plots.PRINT_WIDTH_IN) with no text under
plots.MIN_FONT_PT.

The sample: test image --index (default 0, the first test image), or any image file --image,
converted to the model's channels, center-cropped to a square and resized to the training size,
then normalized with the checkpoint's mean and std.
"""
import cli  # first, before torch: Ctrl-C while the libraries load ends in one line
import math
import textwrap
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
STATS_IMAGES = 256    # test images feature_stats.json averages over: a stable mean in a second or two


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
    f.add_argument("--stats-images", type=int, default=STATS_IMAGES,
                   help="first test images that feature_stats.json averages over (0: the sample only; at most "
                        "the whole test set; "
                        "with --image, only the image is measured)")
    f.add_argument("--gabor-threshold", type=float, default=GABOR_THRESHOLD,
                   help="R^2 from which a kernel counts as Gabor-like")
    args = p.parse_args(argv)
    if args.index < 0:
        p.error(f"--index must be >= 0, got {args.index}")
    if args.stats_images < 0:
        p.error(f"--stats-images must be >= 0, got {args.stats_images}")
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


# ---- what each stage responds to (Fashion-MNIST question 9) ------------------------------------------

PART_WORDS = {"conv": "conv", "bn": "batch norm", "skip": "skip sum", "relu": "ReLU", "maxpool": "max pool",
              "avgpool": "average pool"}


def stage_labels(path) -> list:
    """Plain-words label of each stage of a `feature_path`, convs and pools numbered in forward
    order: 'conv 1 + batch norm + ReLU', 'max pool 1', 'conv 4 + batch norm + skip sum + ReLU'."""
    counts, labels = {"conv": 0, "maxpool": 0, "avgpool": 0}, []
    for _, kind, _ in path:
        parts = []
        for part in kind.split("+"):
            if part in counts:
                counts[part] += 1
                parts.append(f"{PART_WORDS[part]} {counts[part]}")
            else:
                parts.append(PART_WORDS[part])
        labels.append(" + ".join(parts))
    return labels


def stage_notes(path) -> list:
    """What each stage's label leaves unsaid, for the figure: a stage that pools straight after its
    conv shows the conv's output 'before activation' (batch norm and ReLU come in the next stage),
    and a stage without a conv of its own says which conv it follows: 'after conv 1'."""
    notes, last_conv = [], 0
    for _, kind, _ in path:
        parts = kind.split("+")
        last_conv += parts.count("conv")
        if "conv" in parts and not parts[-1].endswith("relu"):
            notes.append("before activation")
        elif "conv" not in parts and "relu" in parts and last_conv:
            notes.append(f"after conv {last_conv}")
        else:
            notes.append("")
    return notes


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def edges_and_silhouette(image01: torch.Tensor):
    """Two references for raw images (N, C, H, W) in [0, 1], taken over the channel mean:
    the Sobel gradient magnitude (N, H, W) (edges), and the silhouette (N, H, W): pixels brighter
    than a tenth of the image's brightest (on Fashion-MNIST's black background: the whole garment)."""
    gray = image01.float().mean(1, keepdim=True)                       # (N, 1, H, W)
    sobel = torch.stack([SOBEL_X, SOBEL_X.T])[:, None]                  # (2, 1, 3, 3): d/dx, d/dy
    gradient = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), sobel)
    mask = (gray > 0.1 * gray.amax((2, 3), keepdim=True)).float()
    return gradient.norm(dim=1), mask[:, 0]


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of maps (N, H, W) -> (N,); NaN where a map is constant."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def stage_statistics(out: torch.Tensor, edges: torch.Tensor, silhouette: torch.Tensor) -> dict:
    """Per image (N,) numbers of one stage's output (N, C, H', W'):

    active_fraction: share of units > 0 (after a ReLU: units that fire);
    edge_correlation / shape_correlation: Pearson correlation of the stage's response map (the
    channel mean of |activation|, upsampled bilinearly to the image's H x W) with the image's Sobel
    edge magnitude and with its silhouette. A stage that detects edges is strong along outlines and
    weak on flat areas, so it follows the Sobel map; one that responds to the garment as a whole is
    strong over all of it, so it follows the silhouette. Edges lie inside the silhouette, so the two
    correlate with each other too: the stage leans to edges when edge_correlation >
    shape_correlation, to whole shapes when it is the other way round."""
    response = F.interpolate(out.abs().mean(1, keepdim=True), size=edges.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
    return {"active_fraction": (out > 0).float().mean((1, 2, 3)),
            "edge_correlation": pearson(response, edges), "shape_correlation": pearson(response, silhouette)}


STAGE_MEASURES = ("active_fraction", "edge_correlation", "shape_correlation")


def _summary(values: torch.Tensor):
    """Mean over images, NaNs (constant maps) left out; None when every value is NaN."""
    values = values[~values.isnan()]
    return round(values.mean().item(), 4) if len(values) else None


def feature_statistics(model: nn.Module, images_uint8: torch.Tensor, mean, std, batch: int = 64) -> list:
    """[{name, label, shape (C, H, W), active_fraction, edge_correlation, shape_correlation}] for
    every stage of `feature_path`, each number averaged over the images (N, C, H, W) uint8."""
    path = None
    edges, silhouette = edges_and_silhouette(images_uint8.float() / 255)
    per_image = []
    for start in range(0, len(images_uint8), batch):
        x = data.normalize(images_uint8[start:start + batch], mean, std)
        path = feature_path(model, trace(model, x)[0])
        per_image.append([stage_statistics(out, edges[start:start + batch], silhouette[start:start + batch])
                          for _, _, out in path])
    labels = stage_labels(path)
    return [{"name": name, "label": label, "shape": list(out.shape[1:]),
             **{key: _summary(torch.cat([chunk[i][key] for chunk in per_image]))
                for key in STAGE_MEASURES}}
            for i, ((name, _, out), label) in enumerate(zip(path, labels))]


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


def wrap(text: str, width_in: float, points: float) -> str:
    """Text broken into lines that fit width_in inches at `points` (an average DejaVu Sans
    character is about 0.6 em wide; existing line breaks are kept)."""
    chars = max(int(width_in * 72 / (0.6 * points)), 4)
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) or line for line in text.split("\n"))


CBAR_IN = 0.9      # width a colour bar and its label take beside a grid
SUPTITLE_PT = 9


def plot_panels(panels, titles, suptitle: str, cbar_label: str | None = None, cmap="gray",
                panel_size=1.5, title_size=plots.MIN_FONT_PT, max_cols=8, wide=False, input_first=False,
                width_in=plots.PRINT_WIDTH_IN, suptitle_size=None):
    """Images (C, H, W) or (H, W) with values in [0, 1] in a grid, a title over each (None: no
    panel titles), and one colour bar for all (0 to 1) when cbar_label is given. wide: as few rows
    as max_cols allows. input_first: the first panel is the input image, drawn in gray (or RGB)
    whatever `cmap`. Panels shrink so that the figure fits `width_in` (at most the printed text
    width plots.PRINT_WIDTH_IN; half of it lets the report set two grids side by side); titles are
    wrapped to their panel, the suptitle to the figure."""
    import matplotlib.pyplot as plt

    n = len(panels)
    rows, cols = grid_shape(n, max_cols) if not wide else (math.ceil(n / max_cols), 0)
    cols = cols or math.ceil(n / rows)
    cbar = CBAR_IN if cbar_label else 0
    panel_size = min(panel_size, (min(width_in, plots.PRINT_WIDTH_IN) - cbar - 0.1) / cols)
    suptitle_size = suptitle_size or SUPTITLE_PT
    titles = [None] * n if titles is None else [wrap(str(t), panel_size, title_size) for t in titles]
    title_lines = max((t.count("\n") + 1 for t in titles if t), default=0)
    width = panel_size * cols + cbar
    suptitle = wrap(suptitle, width, suptitle_size)
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained", figsize=(
        width, (panel_size + 0.14 * title_lines) * rows + 0.1 + suptitle_size / 50 * (suptitle.count("\n") + 1)))
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, (ax, panel, title) in enumerate(zip(axes.flat, panels, titles)):
        plots.show_image(ax, np.asarray(panel), None, cmap="gray" if input_first and i == 0 else cmap,
                         vmin=0, vmax=1)
        if title:
            ax.set_title(title, fontsize=title_size)
    fig.suptitle(suptitle, fontsize=suptitle_size)
    if cbar_label:
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        bar = fig.colorbar(mappable, ax=axes, fraction=0.04 if rows > 1 else 0.08,
                           shrink=min(1.0, 0.5 + 0.1 * rows))
        grid_height = rows * (panel_size + 0.14 * title_lines)  # the bar's label may run along all of it
        bar.set_label(wrap(cbar_label, max(0.15 + 0.25 * panel_size * rows, grid_height), 8), fontsize=8)
        bar.ax.tick_params(labelsize=8)
    return fig


def as_display(image_uint8: torch.Tensor) -> np.ndarray:
    """uint8 (1, C, H, W) -> float (C, H, W) in [0, 1]."""
    return image_uint8[0].float().numpy() / 255


def plot_kernels(k01: torch.Tensor, network: str, layer: str):
    rgb = k01.shape[1] == 3
    panels = k01.numpy() if rgb else k01[:, 0].numpy()
    how = "each drawn as an RGB image, its 3 channels scaled together" if rgb else "gray scale"
    return plot_panels(panels, [f"#{i + 1}" for i in range(len(panels))],
                       f"{network}: the {len(panels)} kernels of the first conv layer ({layer}, "
                       f"{k01.shape[-2]}x{k01.shape[-1]}), each min-max normalized to [0, 1] on its own "
                       f"(0 = its most negative weight, 1 = its most positive); {how}",
                       cbar_label="normalized weight" + (" (each colour channel)" if rgb else ""),
                       max_cols=16, wide=True)  # 32 kernels in two rows: a third of a page


def plot_filtered(image01, caption, responses: torch.Tensor, network: str, layer: str, bias: bool = True):
    panels = [image01] + list(plots.minmax(responses, (1, 2)).numpy())
    titles = ["input"] + [f"#{i + 1}" for i in range(len(responses))]  # numbered as in plot_kernels
    h, w = responses.shape[-2:]
    return plot_panels(panels, titles,
                       f"{network}: the input, {caption.replace(chr(10), ', ')}, convolved with each kernel of "
                       f"{layer} (its stride, padding{' and bias' if bias else ''}; before any batch norm and ReLU), numbered as the kernels; "
                       f"each {h}x{w} output "
                       f"min-max normalized to [0, 1] on its own (white = strongest response)",
                       cbar_label="normalized response", input_first=True, max_cols=12, wide=True)


def plot_feature_path(image01, caption, path, network: str):
    """The input image first, then the first channel of each stage of `path`, labelled in plain
    words (stage_labels) with its output shape (channels x height x width)."""
    panels, titles = [image01], ["input image\n" + "x".join(map(str, image01.shape))]
    for (name, kind, out), label, note in zip(path, stage_labels(path), stage_notes(path)):
        first = out[0, 0]  # (H, W): the first channel, as the assignment asks
        shape = "x".join(map(str, out.shape[1:]))
        unbroken = " + ".join(part.replace(" ", "\N{NO-BREAK SPACE}") for part in label.split(" + "))
        note = "\n" + note.replace(" ", "\N{NO-BREAK SPACE}") if note else ""
        titles.append(f"{unbroken}{note}\n{shape}" + (" (all 0)" if first.max() == first.min() else ""))
        panels.append(plots.minmax(first, (0, 1)).numpy())
    return plot_panels(panels, titles,
                       f"{network}: the input, {caption.replace(chr(10), ', ')}, through the network: the first "
                       f"channel of every activation and pooling stage, in forward order; under each stage its "
                       f"output shape (channels x height x width); each panel min-max normalized on its own",
                       cbar_label="normalized activation", cmap="viridis", panel_size=1.4,
                       max_cols=5, wide=True, input_first=True)


BODY_CHANNELS = 32   # channels of a layer in the body figure; the rest go to its _all figure
BODY_WIDTH_IN = 3.1  # a body grid of filters: under half the text width (with the margin plots.save
                     # adds), so the report sets the two networks' grids of one layer depth side by side
MAPS_WIDTH_IN = plots.PRINT_WIDTH_IN - 0.1  # a body grid of feature maps: the text width (with the margin
MAPS_COLS = 12  # plots.save adds), so 32 maps print about 0.55 in wide (at half the width, 0.33 in: too small)
BODY_SUPTITLE_PT = 8


def channel_range(shown: int, total: int) -> str:
    return f"all {total} channels" if shown == total else f"channels 1-{shown} of {total}"


def plot_layer_maps(maps: torch.Tensor, description: str, network: str, shown: int, numbered=True,
                    image01=None, caption: str = ""):
    """Feature maps (C, H, W) of one layer, channels 1..shown, of the input image01 (C, H, W) in
    [0, 1] named by caption. numbered (the body figure): the input first, then a number over each
    panel, MAPS_WIDTH_IN wide with the colour scale named in the title instead of a colour bar;
    else (the appendix grid of every channel) the text width, no numbers, a colour bar."""
    panels = [plots.minmax(m, (0, 1)).numpy() for m in maps[:shown]]
    zero = [bool(m.max() == m.min()) for m in maps[:shown]]
    size = f"{maps.shape[-2]}x{maps.shape[-1]}"
    of = f" of {caption.replace(chr(10), ', ')}" if caption else ""
    if numbered:
        titles = [f"{i + 1}" + ("(0)" if z else "") for i, z in enumerate(zero)]
        if image01 is not None:  # the input first, then the channels
            panels, titles = [image01] + panels, ["input"] + titles
        return plot_panels(panels, titles,
                           f"{network}: feature maps of {description}{of}, {channel_range(shown, len(maps))}, "
                           f"{size}, each scaled to [0, 1] on its own (yellow = strongest)"
                           + (", (0): all zero" if any(zero) else ""),
                           cmap="viridis", max_cols=MAPS_COLS, wide=True, width_in=MAPS_WIDTH_IN,
                           suptitle_size=BODY_SUPTITLE_PT, input_first=image01 is not None)
    return plot_panels(panels, None,
                       f"{network}: feature maps of {description}{of}, {channel_range(shown, len(maps))}, "
                       f"{size} each, each min-max normalized on its own"
                       + (f"; {sum(zero)} of them all zero" if any(zero) else ""),
                       cbar_label="normalized activation", cmap="viridis", max_cols=16)


def plot_layer_filters(k01: torch.Tensor, layer: str, in_channels: int, network: str, shown: int, numbered=True):
    """Filters (C_out, C_in, k, k) in [0, 1] of one layer, 1..shown: RGB for a first layer on colour
    images, else input channel 1; numbered or not as in plot_layer_maps."""
    rgb = k01.shape[1] == 3
    part = k01[:shown]
    panels = part.numpy() if rgb else part[:, 0].numpy()
    what = "drawn as RGB" if rgb else (f"input channel 1 of {in_channels}" if in_channels > 1 else "")
    shape = f"{k01.shape[-2]}x{k01.shape[-1]}{', ' + what if what else ''}"
    if numbered:
        return plot_panels(panels, [f"#{i + 1}" for i in range(len(part))],
                           f"{network}: learned filters of {layer}, {channel_range(shown, len(k01))} ({shape}), "
                           f"each scaled to [0, 1] on its own" + ("" if rgb else " (white = most positive)"),
                           max_cols=8, wide=True, width_in=BODY_WIDTH_IN, suptitle_size=BODY_SUPTITLE_PT)
    return plot_panels(panels, None,
                       f"{network}: learned filters of {layer}, {channel_range(shown, len(k01))} ({shape}), each "
                       f"min-max normalized to [0, 1] on its own",
                       cbar_label="normalized weight" + (" (each colour channel)" if rgb else ""), max_cols=16)


def plot_gabor(kernels_k: np.ndarray, fits: list, report: dict, network: str, n_best: int = 8):
    """The best-fitting kernels (top row) above their fitted Gabor functions (bottom row)."""
    import matplotlib.pyplot as plt

    order = np.argsort([-f["r2"] for f in fits])[:n_best]
    # 0.4 in for the row labels, 0.25 in for the margin plots.save adds: prints within PRINT_WIDTH_IN
    panel = min(1.0, (plots.PRINT_WIDTH_IN - 0.65) / max(len(order), 1))
    width = max(panel * len(order), 3.5) + 0.4  # room for the title when only a few kernels exist
    t, tr, un = report["threshold"], report["trained"], report["untrained"]
    caveat = "" if report["meaningful"] else (
        f"; caveat: {report['kernel_size']}x{report['kernel_size']} kernels have {report['pixels']} pixels "
        f"for 9 parameters, so nearly anything fits: compare with the untrained share")
    suptitle = wrap(f"{network}: first-layer kernels most like a Gabor function ({report['fitted_to']}); "
                    f"R² ≥ {t}: {100 * tr['share_above_threshold']:.0f}% of trained kernels, "
                    f"{100 * un['share_above_threshold']:.0f}% of an untrained network's{caveat}", width, SUPTITLE_PT)
    fig, axes = plt.subplots(2, len(order), squeeze=False, layout="constrained",
                             figsize=(width, 2 * panel + 0.6 + 0.18 * (suptitle.count("\n") + 1)))
    for col, i in enumerate(order):
        kern, fitted = kernels_k[i], fits[i]["fitted"]
        lo, hi = min(kern.min(), fitted.min()), max(kern.max(), fitted.max())  # same scale for both
        plots.show_image(axes[0, col], kern, None, vmin=lo, vmax=hi)
        axes[0, col].set_title(f"#{i + 1}\nR² {fits[i]['r2']:.2f}", fontsize=plots.MIN_FONT_PT)
        plots.show_image(axes[1, col], fitted, None, vmin=lo, vmax=hi)
    axes[0, 0].set_ylabel("kernel", fontsize=8)
    axes[1, 0].set_ylabel("fitted\nGabor", fontsize=8)
    fig.suptitle(suptitle, fontsize=SUPTITLE_PT)
    return fig


# ---- main ---------------------------------------------------------------------------------------------

def network_title(ckpt, checkpoint) -> str:
    """'CIFAR-10 VGG-style CNN (cifar10-dense)': plain words for the figures a grader reads, and the run folder."""
    dataset = DATASET_TITLES.get(ckpt["dataset"], ckpt["dataset"])
    name = {"GAPNet": "ResNet-style CNN"}.get(ckpt["model"]["name"], ckpt["model"]["name"])
    if name == "CNN" and ckpt["dataset"] == "cifar10":
        name = "VGG-style CNN"
    return f"{dataset} {name} ({Path(checkpoint).parent.name})"


def pick_layers(model, requested) -> list:
    names = [n for n, _ in conv_layers(model)]
    if requested is None:  # first, middle, last: how features change with depth, in three layers
        return [names[i] for i in sorted({round(k * (len(names) - 1) / 2) for k in range(3)})]
    unknown = [n for n in requested if n not in names]
    if unknown:
        raise cli.UserError(f"--layers: no conv layer named {unknown[0]!r}; this model has {', '.join(names)}")
    return list(dict.fromkeys(requested))


def file_name(prefix: str, layer: str, suffix: str = "") -> str:
    return f"{prefix}_{layer.replace('.', '-')}{suffix}.png"


def load_sample(args, ckpt, in_channels: int):
    """The sample as uint8 (1, C, H, W), its caption, and the test images (N, C, H, W) uint8 the
    stage statistics average over (None with --image: no test set is read)."""
    if args.image is not None:
        return load_image(args.image, in_channels, image_size(ckpt)), args.image.name, None
    ds = data.load_dataset(ckpt["dataset"], args.data_dir)
    return *sample_from_test_set(ds, args.index), ds.x_test


def feature_stats(model, ckpt, x_uint8, caption: str, test_images, n_images: int) -> dict:
    """What feature_stats.json holds: the stage statistics (feature_statistics) of the sample and,
    when test images are given, their means over the first n_images of them."""
    mean, std = ckpt["mean"], ckpt["std"]
    tested = None if test_images is None or n_images == 0 else test_images[:n_images]
    sample = feature_statistics(model, x_uint8, mean, std)
    test = [None] * len(sample) if tested is None else feature_statistics(model, tested, mean, std)
    return {
        "sample": caption.splitlines()[0], "input_shape": list(x_uint8.shape[1:]),
        "test_images": 0 if tested is None else len(tested),
        "measures": {
            "active_fraction": "share of the stage's units (channels x positions) above 0",
            "edge_correlation": "Pearson correlation of the channel mean of |activation|, upsampled to the "
                                "image size, with the image's Sobel edge magnitude",
            "shape_correlation": "the same with the image's silhouette (pixels brighter than a tenth of the "
                                 "image's brightest)"},
        "stages": [{"name": s["name"], "label": s["label"], "shape": s["shape"],
                    "sample": {k: s[k] for k in STAGE_MEASURES},
                    "test_mean": None if t is None else {k: t[k] for k in STAGE_MEASURES}}
                   for s, t in zip(sample, test, strict=True)],
    }


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
        "bias": conv.bias is not None,                      # whether the responses add one
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
    that each can be saved and closed before the next. A layer with more channels than
    BODY_CHANNELS (after --max-channels) gets a body figure of its first BODY_CHANNELS, numbered,
    and an appendix figure `<name>_all.png` of all of them without numbers."""
    layer = result["layer"]
    yield "kernels.png", plot_kernels(result["kernels"], network, layer)
    yield "filtered.png", plot_filtered(image01, caption, result["responses"], network, layer, result["bias"])
    yield "feature_maps.png", plot_feature_path(image01, caption, result["path"], network)
    for name in result["layers"]:
        description, fmap = result["maps"][name]
        k01, in_channels = result["filters"][name]
        total = min(len(fmap), max_channels or len(fmap))
        body = min(total, BODY_CHANNELS)
        yield file_name("feature_maps", name), plot_layer_maps(fmap, description, network, body,
                                                               image01=image01, caption=caption)
        if total > body:
            yield file_name("feature_maps", name, "_all"), plot_layer_maps(fmap, description, network, total,
                                                                           numbered=False, caption=caption)
        yield file_name("filters", name), plot_layer_filters(k01, name, in_channels, network, body)
        if total > body:
            yield file_name("filters", name, "_all"), plot_layer_filters(k01, name, in_channels, network, total,
                                                                         numbered=False)
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
    x_uint8, caption, test_images = load_sample(args, ckpt, in_channels)
    x = data.normalize(x_uint8, ckpt["mean"], ckpt["std"])  # (1, C, H, W)
    result = compute(model, ckpt, x, layers, args.seed, args.gabor_threshold)
    predicted, prob = result["predicted"]
    caption += f"\npredicted {predicted} ({100 * prob:.0f}%)"
    network = network_title(ckpt, args.checkpoint)
    written = write_figures(result, args.out_dir, network, as_display(x_uint8), caption, args.max_channels)
    files.write_json(args.out_dir / "gabor.json", {"checkpoint": str(args.checkpoint), "layer": result["layer"],
                                                 "layers": layers, **result["report"]})  # layers: the report's page order
    files.write_json(args.out_dir / "feature_stats.json", {"checkpoint": str(args.checkpoint), **feature_stats(
        model, ckpt, x_uint8, caption, test_images, args.stats_images)})
    written += ["gabor.json", "feature_stats.json"]
    print_summary(network, caption, args.out_dir, written, remove_stale_figures(args.out_dir, written), result)


if __name__ == "__main__":
    cli.run(main)
