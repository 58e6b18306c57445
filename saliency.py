"""Saliency maps shared by cam.py and guided_backprop.py: what the network looked at.

- CAM, class activation maps (Zhou et al. 2016, "Learning Deep Features for Discriminative
  Localization", Eq. 2): M_c(x, y) = sum_k w_k^c f_k(x, y), the last conv layer's feature maps
  f_k weighted by the single linear layer's weights for class c. Exact only when the network
  ends in global average pooling and one linear layer (GAPNet), checked structurally and
  numerically.
- Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2): alpha_k^c = mean_(x,y) dy^c/dA_k(x, y),
  map = ReLU(sum_k alpha_k^c A_k). Works on any CNN; on a GAP network it is CAM / (h w) where
  CAM is positive (the gradient of y^c with respect to A_k(x, y) is w_k^c / (h w)).
- Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity", Sec. 3.4): the
  gradient of the class score with respect to the image where each ReLU passes back only
  positive gradients at positive inputs; guided Grad-CAM multiplies it by the upsampled
  Grad-CAM (Selvaraju et al. 2017, Sec. 3.1).
- The cascading model-parameter randomization test (Adebayo et al. 2018, "Sanity Checks for
  Saliency Maps", Sec. 3.1): re-initialize the layers from the top down, one more each step,
  and measure how much each method's maps change (Spearman rank correlation).
- Interpretation statistics (`saliency_statistics`, `run_stats` -> saliency_stats.json): where
  each map's mass falls (centre share), how concentrated it is, right against wrong predictions,
  the rank correlation between methods, where the figure's maps peak, and the deletion curve
  (Petsiuk et al. 2018, "RISE", Sec. 4.1): class probability as the most salient pixels are
  removed first, against a random order of the map's own coarseness (removed pixels take the
  mean colour, and as a check a blurred copy's values). report/draft_saliency.py turns them into
  the report's interpretation.

Every map is computed for a whole batch in one forward and one backward pass (images are
independent in eval mode, so the gradient of the summed target scores gives each image its
own gradient), in eval mode with frozen parameters (`hooks.eval_mode`). Hooks come off and
each module's mode and each parameter's requires_grad flag are restored in `finally` blocks,
also on error. Compute functions return tensors; `plot_example_maps` and `plot_sanity` draw them.
"""
import argparse
import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from scipy.stats import mannwhitneyu, spearmanr, wilcoxon
from torch import nn
from torch.overrides import TorchFunctionMode

import cli
import files
import hooks
import plots
from data import load_dataset, normalize
from training import choose_examples, load_checkpoint, pick_device, predict, seed_everything

plt = plots.plt


# ---- targets and layers ------------------------------------------------------------------------

def resolve_targets(logits: torch.Tensor, target=None) -> torch.Tensor:
    """Class index per image (N,): the prediction when `target` is None, else `target`
    (an int for every image, or one per image)."""
    n, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    target = target.expand(n) if target.ndim == 0 else target
    if target.shape != (n,) or bool(((target < 0) | (target >= classes)).any()):
        raise cli.UserError(f"target classes must be {n} numbers in 0..{classes - 1}, got {target.tolist()}")
    return target


def _target_score(logits, target):
    """Sum over the batch of each image's target logit: one backward pass gives every image
    its own gradient because, in eval mode, no image's logits depend on another image."""
    t = resolve_targets(logits, target)
    return logits.gather(1, t[:, None]).sum()


def relu_modules(model: nn.Module) -> list:
    """The model's nn.ReLU modules; a UserError for inplace ones (their outputs overwrite the
    inputs that hooks and guided backpropagation need)."""
    relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    inplace = [name for name, m in relus if m.inplace]
    if inplace:
        raise cli.UserError(f"nn.ReLU(inplace=True) at {inplace[0]!r}: saliency maps need the ReLU inputs "
                            "intact; build the model with nn.ReLU(inplace=False) (weights load unchanged)")
    return [m for _, m in relus]


def check_layer(model: nn.Module, layer: str):
    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
        raise cli.UserError(f"--layer {layer!r} is not a submodule of this model; ReLU layers: "
                            f"{', '.join(relus) or 'none'}")


@torch.no_grad()
def default_layer(model: nn.Module, x: torch.Tensor):
    """Name of the last nn.ReLU (in run order) whose output is a (N, C, H, W) feature map: the
    last conv layer's activation, Grad-CAM's usual layer. None when there is none (an FFN)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    with hooks.eval_mode(model, freeze=True), hooks.record_outputs(model, names) as out:
        model(x[:1])
    maps = [n for n, a in out.items() if a.ndim == 4]
    return maps[-1] if maps else None


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """(N, h, w) -> (N, H, W), bilinear (Zhou et al. 2016 upsample CAMs to the image size)."""
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# ---- CAM ---------------------------------------------------------------------------------------

def cam_layers(model: nn.Module):
    """(feature extractor, linear layer) names when the model ends in global average pooling
    and one linear layer (children ... -> features -> AdaptiveAvgPool2d(1) -> [Flatten]
    -> [Dropout] -> Linear, and no other Linear anywhere); else a UserError naming the fix."""
    children = list(model.named_children())
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    i = len(children) - 1
    fc = children[i][0] if children and isinstance(children[i][1], nn.Linear) else None
    i -= 1
    while i >= 0 and isinstance(children[i][1], (nn.Flatten, nn.Dropout, nn.Identity)):
        i -= 1
    gap = i >= 1 and isinstance(children[i][1], nn.AdaptiveAvgPool2d) \
        and children[i][1].output_size in (1, (1, 1))
    if fc is None or not gap or len(linears) != 1:
        found = f"{len(linears)} linear layers ({', '.join(linears)})" if linears else "no linear layer"
        raise cli.UserError(
            f"CAM needs global average pooling followed by exactly one linear layer (Zhou et al. 2016); "
            f"this {type(model).__name__} has {found}{'' if gap else ' and no global average pooling'}. "
            f"Use --method gradcam, which works on any CNN")
    return children[i - 1][0], fc


def is_gap_network(model: nn.Module) -> bool:
    try:
        cam_layers(model)
    except cli.UserError:
        return False
    return True


@torch.no_grad()
def class_activation_map(model: nn.Module, x: torch.Tensor, target=None) -> torch.Tensor:
    """CAM (Zhou et al. 2016, Eq. 2) of normalized images x (N, C, H, W) for `target` (default:
    the predicted class): (N, h, w) at the feature maps' resolution, signed (no ReLU in Eq. 2)."""
    features, fc_name = cam_layers(model)
    fc = model.get_submodule(fc_name)
    with hooks.eval_mode(model, freeze=True), hooks.record_outputs(model, [features]) as out:
        logits = model(x)                                   # (N, classes)
        f = out[features]                                   # (N, K, h, w)
        # Eq. 2 holds only if the logits are fc(GAP(f)); check it on this batch, so a forward
        # that uses its modules in another order fails loudly instead of drawing a wrong map.
        if f.ndim != 4 or not torch.allclose(fc(f.mean((2, 3))), logits, rtol=1e-4, atol=1e-4):
            raise cli.UserError(f"{type(model).__name__}'s logits are not {fc_name}(mean of {features}'s "
                                f"maps), so CAM does not apply; use --method gradcam")
        w = fc.weight[resolve_targets(logits, target)]      # (N, K): w_k^c
        return torch.einsum("nk,nkhw->nhw", w, f)           # (N, h, w): sum_k w_k^c f_k(x, y)


# ---- Grad-CAM ----------------------------------------------------------------------------------

def grad_cam(model: nn.Module, x: torch.Tensor, target=None, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2) of `layer`'s output A (default: the last conv
    layer's ReLU) for images x (N, C, H, W): (N, h, w) = ReLU(sum_k alpha_k^c A_k)."""
    relu_modules(model)
    layer = layer or default_layer(model, x)
    if layer is None:
        raise cli.UserError(f"{type(model).__name__} has no convolutional feature maps for Grad-CAM "
                            "(it flattens the image first); use a CNN or GAPNet checkpoint")
    check_layer(model, layer)
    with hooks.eval_mode(model, freeze=True), hooks.record_outputs(model, [layer]) as out:
        x = x.detach().requires_grad_(True)  # parameters are frozen: the graph starts at x
        logits = model(x)
        A = out[layer]                                      # (N, K, h, w)
        if A.ndim != 4:
            raise cli.UserError(f"--layer {layer!r} outputs shape {tuple(A.shape)}, not (N, C, H, W) "
                                "feature maps; pick a conv layer's ReLU")
        (dA,) = torch.autograd.grad(_target_score(logits, target), A)
        alpha = dA.mean((2, 3), keepdim=True)               # (N, K, 1, 1): Eq. 1
        return F.relu((alpha * A).sum(1)).detach()          # (N, h, w): Eq. 2


# ---- guided backpropagation ----------------------------------------------------------------------

def _guide_relu_output(module, inputs, output):
    """Forward hook on an nn.ReLU: a hook on its output tensor (N, ...) keeps only the positive
    part of the gradient arriving there; ReLU's own backward then multiplies by [input > 0], so
    the gradient passed on is [input > 0] * max(grad_out, 0), the guided rule (Springenberg et
    al. 2015, Sec. 3.4, Fig. 1). The tensor hook belongs to this forward's graph and goes with
    it; a module backward hook would leave the module flagged (`_is_full_backward_hook`)."""
    if output.requires_grad:
        output.register_hook(lambda grad: grad.clamp(min=0))


RELU_FUNCTIONS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class _FunctionalReluDetector(TorchFunctionMode):
    """Notes ReLUs computed outside an nn.ReLU module (F.relu(x), x.relu(), ...): guided
    backpropagation cannot reach them, so their maps would silently be wrong."""

    def __init__(self):
        super().__init__()
        self.depth, self.found = 0, None  # depth > 0: inside an nn.ReLU module's forward

    def enter(self, *_):
        """Forward pre-hook on each nn.ReLU: its own relu call is the guided one."""
        self.depth += 1

    def leave(self, *_):
        """Forward hook on each nn.ReLU (returns None: the output is kept)."""
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU_FUNCTIONS and self.depth == 0 and self.found is None:
            self.found = getattr(func, "__qualname__", str(func))
        return func(*args, **(kwargs or {}))


def input_gradient(model: nn.Module, x: torch.Tensor, target=None, guided: bool = True) -> torch.Tensor:
    """d y^c / d x (N, C, H, W) for normalized images x; with guided=True every nn.ReLU passes
    back only positive gradients (guided backpropagation), else the plain gradient
    (Simonyan et al. 2014's saliency, the baseline of the sanity check)."""
    relus = relu_modules(model)
    detector, handles = _FunctionalReluDetector(), []
    with hooks.eval_mode(model, freeze=True):
        try:
            if guided:
                for m in relus:
                    handles += [m.register_forward_pre_hook(detector.enter),
                                m.register_forward_hook(detector.leave),
                                m.register_forward_hook(_guide_relu_output)]
            x = x.detach().requires_grad_(True)
            with detector if guided else contextlib.nullcontext():
                logits = model(x)
            if detector.found:
                raise cli.UserError(f"{type(model).__name__} computes a ReLU with {detector.found} instead of an "
                                    "nn.ReLU module, so guided backpropagation cannot modify its gradient; "
                                    "use nn.ReLU modules (inplace=False)")
            (grad,) = torch.autograd.grad(_target_score(logits, target), x)
        finally:
            for handle in handles:
                handle.remove()
    return grad


def guided_backprop(model, x, target=None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015, Sec. 3.4): (N, C, H, W)."""
    return input_gradient(model, x, target, guided=True)


def guided_grad_cam(model, x, target=None, layer=None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3.1): guided backpropagation times the
    Grad-CAM map upsampled to the image, (N, C, H, W)."""
    cam = upsample(grad_cam(model, x, target, layer), x.shape[-2:])    # (N, H, W)
    return guided_backprop(model, x, target) * cam[:, None]


# ---- display scaling (per image; plots.minmax for min-max) ---------------------------------------

def robust_max(maps: torch.Tensor, q=0.995) -> torch.Tensor:
    # The 99.5th percentile rather than the max, so a few extreme pixels don't wash out the rest.
    return maps.abs().flatten(1).float().quantile(q, dim=1).clamp(min=1e-12).view(-1, *[1] * (maps.ndim - 1))


def signed_image(grad: torch.Tensor) -> torch.Tensor:
    """Gradients (N, C, H, W) as images in [0, 1] with zero at mid-gray."""
    return (0.5 + 0.5 * grad / robust_max(grad)).clamp(0, 1)


def magnitude(grad: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W): sum over channels of |gradient| (Adebayo et al. 2018's
    absolute-value visualization), the heatmap and the sanity check's measure."""
    return grad.abs().sum(1)


# ---- choosing examples ---------------------------------------------------------------------------

# ---- what both scripts do ----------------------------------------------------------------------

MAX_EXAMPLES = 64  # images in one figure (--n, --index): a column each


def add_args(parser: argparse.ArgumentParser):
    """Arguments shared by cam.py and guided_backprop.py."""
    parser.add_argument("--checkpoint", required=True, help="model.pt written by fashionmnist.py or cifar10.py")
    cli.add_common_args(parser)
    parser.add_argument("--n", type=cli.bounded_int(1, MAX_EXAMPLES), default=8,
                        help="test images to show: half correctly, half wrongly classified (drawn with --seed; "
                             f"at most {MAX_EXAMPLES}, the columns one figure can show legibly)")
    parser.add_argument("--index", type=int, nargs="+", help="show these test images instead")
    parser.add_argument("--target", help="explain this class (name or number) instead of each prediction")
    parser.add_argument("--sanity", action="store_true",
                        help="also run the cascading randomization sanity check (sanity.png, sanity.json)")
    parser.add_argument("--sanity-n", type=cli.positive_int, default=32,
                        help="test images in the sanity check's fixed batch")
    parser.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    return parser


@dataclass
class Examples:
    model: nn.Module
    ckpt: dict
    classes: list
    images: torch.Tensor    # (N, C, H, W) uint8, for display
    x: torch.Tensor         # (N, C, H, W) normalized, on the device
    index: torch.Tensor     # (N,) test-set indices
    y: torch.Tensor         # (N,) true classes
    pred: torch.Tensor      # (N,) predicted classes (full-precision forward)
    prob: torch.Tensor      # (N,) softmax probability of the prediction
    target: torch.Tensor | None  # (N,) the explained class when --target is given
    x_test: torch.Tensor    # the whole uint8 test set (the sanity check draws from it)
    y_test: torch.Tensor
    out_dir: Path
    device: torch.device


def parse_target(text, classes):
    """--target as a class index: a class name (any case) or a number 0..len(classes)-1 in ASCII
    digits (str.isdigit also accepts "²" and "①", which int() refuses)."""
    if text is None:
        return None
    lower = [c.lower() for c in classes]
    if text.lower() in lower:
        return lower.index(text.lower())
    if text.isascii() and text.isdecimal() and int(text) < len(classes):
        return int(text)
    raise cli.UserError(f"--target {text!r} is neither a class name nor a number 0..{len(classes) - 1}; "
                        f"classes: {', '.join(classes)}")


def load_examples(args, check=None) -> Examples:
    """Checkpoint, test set, and the images to explain (--index, or --n chosen with --seed).
    check(model): the caller's checks of its options against the network, run before the
    predictions on the test set, so that a bad option fails at once."""
    seed_everything(args.seed)
    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    if args.layer:
        check_layer(model, args.layer)
    if check:
        check(model)
    ds = load_dataset(ckpt["dataset"], args.data_dir)
    classes, n_test = ckpt["classes"], len(ds.x_test)
    target = parse_target(args.target, classes)
    if args.index and len(args.index) > MAX_EXAMPLES:
        raise cli.UserError(f"--index names {len(args.index)} images; one figure shows at most {MAX_EXAMPLES}")
    if args.index:
        bad = [i for i in args.index if not 0 <= i < n_test]
        if bad:
            raise cli.UserError(f"--index {bad[0]} is outside the test set (0..{n_test - 1})")
        index = torch.tensor(args.index)
    else:  # predictions on the whole test set, to draw correct and wrong ones
        pred = predict(model, ds.x_test, ckpt["mean"], ckpt["std"], device, full_precision=True).argmax(1)
        index, _ = choose_examples(pred, ds.y_test, args.n, args.seed)
    images = ds.x_test[index]
    x = normalize(images.to(device), ckpt["mean"], ckpt["std"])
    # (N, classes); float32 as in the choice above, so a "wrong" example is titled wrong
    probs = predict(model, images, ckpt["mean"], ckpt["std"], device, full_precision=True).softmax(1)
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    return Examples(model, ckpt, classes, images, x, index, ds.y_test[index], probs.argmax(1),
                    probs.max(1).values, None if target is None else torch.full((len(index),), target),
                    ds.x_test, ds.y_test, out_dir, device)


def titles(ex: Examples) -> tuple[list, list]:
    """Per example: test index and right/wrong, the predicted class and its probability, the true
    class (for a right one too: a reader checks it, not infers it), and the explained class when
    --target differs from the prediction (by default the maps explain the prediction: for a wrong
    example, the evidence for the wrong class); green for right, red for wrong."""
    out, colors = [], []
    for i in range(len(ex.index)):
        ok = bool(ex.pred[i] == ex.y[i])
        lines = [f"#{int(ex.index[i])} {'right' if ok else 'wrong'}",
                 f"pred: {ex.classes[ex.pred[i]]} ({100 * ex.prob[i]:.0f}%)"]
        lines.append(f"true: {ex.classes[ex.y[i]]}")
        if ex.target is not None:
            lines.append(f"map for: {ex.classes[ex.target[i]]}")
        out.append("\n".join(lines))
        colors.append("tab:green" if ok else "tab:red")
    return out, colors


def explained_class(ex: Examples) -> str:
    """For the figures' suptitles: which class the maps explain."""
    return "maps for the predicted class" if ex.target is None else \
        f"maps for class {ex.classes[int(ex.target[0])]}"


def output_stem(base: str, args, ex: Examples) -> str:
    """`base` for the standard figure (--n test images drawn with --seed, which report/run_all.py
    sets); a chosen selection (--index, --target, --layer) gets a name of its own
    (cam-index-3-17-target-cat), so it never replaces the figure the report uses."""
    stem = base
    if args.index:
        stem += "-index-" + "-".join(map(str, args.index))
    if ex.target is not None:
        stem += "-target-" + cli.slug(ex.classes[int(ex.target[0])])
    if getattr(args, "layer", None):
        stem += "-layer-" + cli.slug(args.layer)
    return stem


def examples_json(ex: Examples, **info) -> dict:
    return {**info, "model": ex.ckpt["model"]["name"], "dataset": ex.ckpt["dataset"],
            "examples": [{"index": int(ex.index[i]), "true": ex.classes[ex.y[i]],
                          "predicted": ex.classes[ex.pred[i]], "confidence": round(float(ex.prob[i]), 4),
                          "correct": bool(ex.pred[i] == ex.y[i]),
                          "explained": ex.classes[ex.target[i] if ex.target is not None else ex.pred[i]]}
                         for i in range(len(ex.index))]}


# ---- the sanity check: cascading model-parameter randomization ----------------------------------

def methods_for(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> dict:
    """{name: (model, x, target) -> (N, H, W) map} for every method that applies to `model`,
    as compared in the sanity check (gradient maps reduced to their magnitude, as Adebayo et al.)."""
    size = x.shape[-2:]
    conv_layer = layer or default_layer(model, x)
    methods = {}
    if is_gap_network(model):
        methods["CAM"] = lambda m, x, t: upsample(class_activation_map(m, x, t), size)
    if conv_layer is not None:
        methods["Grad-CAM"] = lambda m, x, t: upsample(grad_cam(m, x, t, conv_layer), size)
    methods["guided backprop"] = lambda m, x, t: magnitude(guided_backprop(m, x, t))
    if conv_layer is not None:
        methods["guided Grad-CAM"] = lambda m, x, t: magnitude(guided_grad_cam(m, x, t, conv_layer))
    methods["gradient"] = lambda m, x, t: magnitude(input_gradient(m, x, t, guided=False))
    return methods


def randomization_units(model: nn.Module, x: torch.Tensor) -> list:
    """Layers with weights in forward order, each a list of module names: a conv or linear
    layer together with the batch norm right after it (re-initialized as one)."""
    with torch.no_grad(), hooks.eval_mode(model, freeze=True), hooks.record_outputs(model) as out:
        model(x[:1])
    modules = dict(model.named_modules())
    units = []
    for name in out:  # leaf modules in the order they ran
        m = modules[name]
        if isinstance(m, (nn.Conv2d, nn.Linear)) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and not units):
            units.append([name])
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            units[-1].append(name)
    return units


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (N, ...) -> (N,). A constant map carries
    no ranking, so its correlation is taken as 0 (scipy would return nan)."""
    a, b = a.flatten(1).double().cpu().numpy(), b.flatten(1).double().cpu().numpy()
    out = np.zeros(len(a))
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = spearmanr(a[i], b[i]).statistic
    return out


def cascading_randomization(model: nn.Module, x: torch.Tensor, methods: dict, seed: int = 0) -> dict:
    """Adebayo et al. 2018, Sec. 3.1: re-initialize the layers from the top (the output layer)
    down, cumulatively, and after each step compare every method's maps of the fixed batch x
    with the trained model's (Spearman rank correlation per image, then mean and std).
    Works on a deep copy: `model` itself is untouched. The explained class stays the trained
    model's prediction throughout."""
    with torch.no_grad(), hooks.eval_mode(model, freeze=True):
        target = model(x).argmax(1)                         # (N,)
    trained = {name: fn(model, x, target) for name, fn in methods.items()}
    randomized = copy.deepcopy(model)
    units = randomization_units(model, x)[::-1]             # top first
    # Step 0 compares the trained model's maps with themselves: correlation 1 by definition,
    # so it is not recomputed.
    no_change = {name: {"mean": 1.0, "std": 0.0} for name in methods}
    steps = [{"randomized": 0, "layer": "none", **no_change}]
    for k, unit in enumerate(units, 1):
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed * 1000 + k)  # reproducible, without touching the global RNG
            for name in unit:
                randomized.get_submodule(name).reset_parameters()  # default init; batch norm -> identity
        step = {"randomized": k, "layer": "+".join(unit)}
        for name, fn in methods.items():
            rho = rank_correlation(trained[name], fn(randomized, x, target))   # (N,)
            step[name] = {"mean": float(rho.mean()), "std": float(rho.std())}
        steps.append(step)
    return {"test": "cascading model-parameter randomization (Adebayo et al. 2018, Sec. 3.1)",
            "images": len(x), "seed": seed, "methods": list(methods),
            "correlation": "Spearman rank correlation per image between the trained and the randomized "
                           "model's maps, then mean and std over images; gradient methods on sum_c |map|",
            "steps": steps}


def run_sanity(ex: Examples, seed: int, n: int, layer=None) -> dict:
    """The sanity check on a fixed seeded batch of n test images; writes sanity.json and .png."""
    if n > len(ex.x_test):
        print(f"--sanity-n {n}: the test set has {len(ex.x_test)} images, so the check uses all of them")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ex.x_test), generator=g)[:n].sort().values
    x = normalize(ex.x_test[idx].to(ex.device), ex.ckpt["mean"], ex.ckpt["std"])
    result = cascading_randomization(ex.model, x, methods_for(ex.model, x, layer), seed)
    result["test_indices"] = idx.tolist()
    files.write_json(ex.out_dir / "sanity.json", result)
    plots.save(plot_sanity(result, type(ex.model).__name__), ex.out_dir / "sanity.png")
    last = result["steps"][-1]
    print("sanity check, rank correlation with the trained model's maps after randomizing all "
          f"{last['randomized']} layers: " + ", ".join(f"{m} {last[m]['mean']:.2f}" for m in result["methods"]))
    return result


# ---- interpretation statistics: where the maps fall, and whether they point at used evidence -------
#
# Computed on the maps of the predicted class (CAM signed as in Eq. 2, Grad-CAM, and guided
# backpropagation's magnitude sum_c |map|), each upsampled to the image, (N, H, W):
# - centre share: the fraction of the map's positive mass inside the central box covering
#   CENTRE_AREA of the image (a uniform map gives that fraction; CIFAR-10 objects sit mostly
#   in the centre);
# - concentration: the fraction of the mass in the top TOP_SHARE of pixels (a uniform map
#   gives TOP_SHARE, a map on a single pixel 1);
# - agreement: Spearman rank correlation of two methods' maps of the same image;
# - deletion (Petsiuk et al. 2018, "RISE", Sec. 4.1): the probability of the explained class
#   as pixels are removed, most salient first, against a random order; a map that points at
#   evidence the network uses makes the probability fall sooner (a smaller area under the curve).
#   The random order has the map's own smoothness: a random map drawn at the method's native
#   resolution (CAM and Grad-CAM: the conv layer's h x w, e.g. 4 x 4; guided backpropagation:
#   the pixels) and upsampled the same way. Scattered single-pixel holes are far from the
#   training images and lower the probability faster than the same number of pixels removed in
#   a few blobs (measured on the CIFAR-10 GAP network: area 0.21 for a random pixel order, 0.31
#   for random 4 x 4 blobs), so a pixel-random baseline would penalize any coarse map for its
#   shape, not its ranking (the removal artifacts Hooker et al. 2019, "ROAR", Sec. 3 warn of).
#   Removed pixels take the training set's mean colour (0 after normalization, RISE's deletion
#   fill); as a check, also a Gaussian-blurred copy of the image (Fong & Vedaldi 2017,
#   "Meaningful Perturbations", Sec. 4), whose low-frequency fill adds no sharp edges.

STATS_METHODS = ("CAM", "Grad-CAM", "guided backprop")
CENTRE_AREA = 0.5
TOP_SHARE = 0.10
DELETION_STEPS = 16
DELETION_FILLS = ("mean", "blur")
BLUR_SIGMA = 1 / 8    # the blurred fill's Gaussian std as a share of the image side (4 pixels of 32)


def centre_mask(size) -> torch.Tensor:
    """(H, W) bool: pixels whose centre lies in the centred box of CENTRE_AREA of the image
    (side sqrt(CENTRE_AREA) of each side)."""
    h, w = size
    half = CENTRE_AREA ** 0.5 / 2
    rows = ((torch.arange(h) + 0.5) / h - 0.5).abs() <= half    # (H,)
    cols = ((torch.arange(w) + 0.5) / w - 0.5).abs() <= half    # (W,)
    return rows[:, None] & cols[None, :]


def map_statistics(maps: torch.Tensor) -> dict:
    """Per map of (N, H, W): {"centre": (N,) share of the positive mass in the centre box,
    "top": (N,) share in the top TOP_SHARE of pixels}; nan for a map with no positive mass."""
    m = maps.detach().clamp(min=0).flatten(1).double().cpu()     # (N, HW)
    mass = m.sum(1)
    k = max(1, round(TOP_SHARE * m.shape[1]))
    centre = (m * centre_mask(maps.shape[-2:]).flatten()).sum(1) / mass
    top = m.topk(k, dim=1).values.sum(1) / mass
    empty = mass <= 0
    return {"centre": centre.masked_fill(empty, float("nan")), "top": top.masked_fill(empty, float("nan"))}


def uniform_statistics(size) -> dict:
    """map_statistics of a constant map: the reference a map is compared with."""
    return {k: float(v[0]) for k, v in map_statistics(torch.ones(1, *size)).items()}


def deletion_order(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, H, W) -> (N, HW) pixel indices, highest map value first; ties (a flat map, or an
    all-zero one: a random order) broken by a random permutation drawn from `generator`."""
    n, hw = len(maps), maps[0].numel()
    shuffle = torch.rand(n, hw, generator=generator).argsort(1)             # (N, HW)
    keys = maps.detach().flatten(1).float().cpu().gather(1, shuffle)
    return shuffle.gather(1, keys.argsort(dim=1, descending=True, stable=True))


def deletion_fill(x: torch.Tensor, fill: str = "mean") -> torch.Tensor:
    """What removed pixels of normalized images x (N, C, H, W) become: "mean", the training set's
    mean colour (0 after normalization); "blur", a Gaussian-blurred copy of the image (std
    BLUR_SIGMA of the image side), which keeps the coarse colour layout and adds no sharp edges."""
    if fill == "mean":
        return torch.zeros_like(x)
    if fill == "blur":
        sigma = BLUR_SIGMA * max(x.shape[-2:])
        k = min(2 * round(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)   # odd, within the image (reflect)
        return TF.gaussian_blur(x, [k, k], [sigma, sigma])
    raise cli.UserError(f"deletion fill {fill!r} is not one of {', '.join(DELETION_FILLS)}")


def random_maps(n: int, size, out_size, generator: torch.Generator) -> torch.Tensor:
    """(n, H, W) random maps with a saliency method's smoothness: uniform noise at the method's
    native resolution `size` (h, w), upsampled to `out_size` (H, W) as the method's maps are
    (bilinear); at the image's own resolution, a random pixel order."""
    noise = torch.rand(n, *size, generator=generator)
    return noise if tuple(size) == tuple(out_size) else upsample(noise, out_size)


@torch.no_grad()
def deletion_curve(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                   steps: int = DELETION_STEPS, seed: int = 0, batch_size: int = 32,
                   fill: str = "mean") -> torch.Tensor:
    """Deletion curve (Petsiuk et al. 2018, Sec. 4.1) of normalized images x (N, C, H, W):
    (N, steps + 1) softmax probabilities of class `target` (N,) after removing the first
    k/steps of the pixels in the order of `maps` (N, H, W), most salient first, k = 0..steps.
    A removed pixel takes `fill` in every channel (see deletion_fill). `maps` all zero gives a
    random pixel order; a random map at a method's resolution (random_maps), its baseline."""
    n, c, h, w = x.shape
    order = deletion_order(maps, torch.Generator().manual_seed(seed))        # (N, HW)
    position = torch.empty_like(order).scatter_(1, order, torch.arange(h * w).expand(n, -1))
    removed = torch.linspace(0, h * w, steps + 1).round().long()             # (S+1,) pixels removed
    target = target.cpu()
    out = []
    with hooks.eval_mode(model, freeze=True):
        for i in range(0, n, batch_size):
            pos, t = position[i:i + batch_size], target[i:i + batch_size]    # (B, HW), (B,)
            keep = (pos[:, None, :] >= removed[None, :, None]).view(len(pos), steps + 1, 1, h, w)
            keep = keep.to(x.device, x.dtype)                                 # (B, S+1, 1, H, W)
            xb = x[i:i + batch_size, None]                                    # (B, 1, C, H, W)
            xs = xb * keep + deletion_fill(x[i:i + batch_size], fill)[:, None] * (1 - keep)  # (B, S+1, C, H, W)
            p = model(xs.flatten(0, 1)).float().softmax(1).view(len(pos), steps + 1, -1).cpu()
            out.append(p.gather(2, t[:, None, None].expand(-1, steps + 1, 1))[..., 0])
    return torch.cat(out)


def area_under(curves: torch.Tensor) -> torch.Tensor:
    """(N, S+1) curves over the removed fraction 0..1 -> (N,) trapezoid areas."""
    return torch.trapezoid(curves, dx=1 / (curves.shape[1] - 1), dim=1)


def _summary(values) -> dict:
    """Mean, std and count of the finite values (nan: a map with no mass)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std()) if len(v) else None, "n": len(v)}


def _compare(a, b) -> dict:
    """Right against wrong: difference of means and the two-sided Mann-Whitney U test's p-value
    (None with fewer than 2 finite values on a side)."""
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return {"diff": None, "p": None}
    return {"diff": float(a.mean() - b.mean()), "p": float(mannwhitneyu(a, b).pvalue)}


def _paired(method_auc, random_auc) -> dict:
    """Deletion areas of a method against the random order, image by image: means, the share of
    images where the method's area is smaller, and the Wilcoxon signed-rank test's p-value."""
    d = random_auc - method_auc
    p = float(wilcoxon(d).pvalue) if len(d) >= 2 and np.any(d != 0) else None
    return {"auc": float(method_auc.mean()), "random_auc": float(random_auc.mean()),
            "diff": float(d.mean()), "faster_share": float((d > 0).mean()), "p": p, "n": len(d)}


def stats_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer=None, batch_size=64) -> dict:
    """{method: (N, H, W) maps of class `target`} for the STATS_METHODS that apply to `model`
    (guided backpropagation as its magnitude), computed batch by batch."""
    methods = {k: fn for k, fn in methods_for(model, x[:1], layer).items() if k in STATS_METHODS}
    return {name: torch.cat([fn(model, x[i:i + batch_size], target[i:i + batch_size]).detach().cpu()
                             for i in range(0, len(x), batch_size)])
            for name, fn in methods.items()}


@torch.no_grad()
def native_sizes(model: nn.Module, x: torch.Tensor, layer=None) -> dict:
    """{method: (h, w)} the resolution each STATS_METHODS map is computed at before upsampling:
    CAM, the maps entering global average pooling; Grad-CAM, `layer` (default: the last conv
    layer's ReLU); guided backpropagation, the image."""
    conv = layer or default_layer(model, x)
    features = cam_layers(model)[0] if is_gap_network(model) else None
    names = [n for n in (conv, features) if n]
    with hooks.eval_mode(model, freeze=True), hooks.record_outputs(model, names) as out:
        model(x[:1])
    sizes = {"guided backprop": tuple(x.shape[-2:])}
    if features:
        sizes["CAM"] = tuple(out[features].shape[-2:])
    if conv:
        sizes["Grad-CAM"] = tuple(out[conv].shape[-2:])
    return sizes


def deletion_statistics(model, x, maps, pred, right, sizes, seed, steps) -> dict:
    """{method: {fill: paired deletion areas against the method's own random baseline}} for
    DELETION_FILLS, plus the random pixel order's area (the baseline of a full-resolution map,
    kept for comparison), each map's mean curve, and right and wrong answers on their own."""
    out, baselines = {name: {} for name in maps}, {}
    n, size = len(x), tuple(x.shape[-2:])
    for fill in DELETION_FILLS:
        for name, m in maps.items():
            key = (sizes[name], fill)
            if key not in baselines:  # one baseline per resolution: the same random map for every method
                rand = random_maps(n, sizes[name], size, torch.Generator().manual_seed(seed + 1))
                baselines[key] = area_under(deletion_curve(model, x, rand, pred, steps, seed + 1, fill=fill)).numpy()
            curves = deletion_curve(model, x, m, pred, steps, seed, fill=fill)    # (N, S+1)
            auc, base = area_under(curves).numpy(), baselines[key]
            out[name][fill] = {**_paired(auc, base), "curve": curves.mean(0).tolist(),
                               "baseline": f"random map at {sizes[name][0]} x {sizes[name][1]}"
                                           + (", upsampled" if sizes[name] != size else ""),
                               "right": _paired(auc[right], base[right]) if right.any() else None,
                               "wrong": _paired(auc[~right], base[~right]) if (~right).any() else None}
    for fill in DELETION_FILLS:
        if (size, fill) not in baselines:
            pixels = area_under(deletion_curve(model, x, torch.zeros(n, *size), pred, steps, seed + 1, fill=fill))
            baselines[(size, fill)] = pixels.numpy()
        for name in maps:
            out[name][fill]["pixel_random_auc"] = float(baselines[(size, fill)].mean())
    return out


def saliency_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                        steps: int = DELETION_STEPS, layer=None) -> dict:
    """The interpretation numbers of test images x (N, C, H, W) with labels y (N,), maps of the
    predicted class: per method, centre share and concentration for all, right and wrong
    predictions (and right against wrong), the deletion areas against a random order of the
    map's own smoothness ("deletion": mean-colour fill; "deletion_blur": blurred fill), and the
    rank correlation between every two methods."""
    with torch.no_grad(), hooks.eval_mode(model, freeze=True):
        pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]).cpu()
    right = (pred == y.cpu()).numpy()
    maps = stats_maps(model, x, pred, layer)
    sizes = native_sizes(model, x, layer)
    deletion = deletion_statistics(model, x, maps, pred, right, sizes, seed, steps)
    methods = {}
    for name, m in maps.items():
        st = {k: v.numpy() for k, v in map_statistics(m).items()}
        methods[name] = {
            "empty_maps": int(np.isnan(st["centre"]).sum()), "native_size": list(sizes[name]),
            **{group: {k: _summary(v[mask]) for k, v in st.items()}
               for group, mask in (("all", right | ~right), ("right", right), ("wrong", ~right))},
            "right_vs_wrong": {k: _compare(v[right], v[~right]) for k, v in st.items()},
            "deletion": deletion[name]["mean"], "deletion_blur": deletion[name]["blur"]}
    names = list(maps)
    agreement = [{"a": a, "b": b, **_summary(rank_correlation(maps[a], maps[b]))}
                 for i, a in enumerate(names) for b in names[i + 1:]]
    return {"images": len(x), "right": int(right.sum()), "wrong": int((~right).sum()), "seed": seed,
            "uniform": uniform_statistics(x.shape[-2:]), "centre_area": CENTRE_AREA, "top_share": TOP_SHARE,
            "deletion_steps": steps, "blur_sigma": BLUR_SIGMA * max(x.shape[-2:]),
            "methods": methods, "agreement": agreement}


def peak_statistics(maps: torch.Tensor) -> dict:
    """Per map of (N, H, W): {"peak": (N, 2) row and column of its largest value, "peak_centre":
    (N,) whether that pixel lies in the centre box of map_statistics}."""
    n, h, w = maps.shape
    flat = maps.detach().flatten(1).float().cpu().argmax(1)                  # (N,)
    rows, cols = flat // w, flat % w
    return {"peak": torch.stack([rows, cols], 1), "peak_centre": centre_mask((h, w))[rows, cols]}


def shown_statistics(model: nn.Module, ex: "Examples", layer=None) -> dict:
    """Per shown example (the figure's images) and method: centre share, concentration, and
    where the map peaks; with each example's predicted and true class."""
    maps = stats_maps(model, ex.x, ex.pred.to(ex.x.device) if ex.target is None else ex.target, layer)
    per = {}
    for name, m in maps.items():
        st, pk = map_statistics(m), peak_statistics(m)
        per[name] = {**{k: [None if np.isnan(v) else round(float(v), 4) for v in vals.numpy()]
                        for k, vals in st.items()},
                     "peak": pk["peak"].tolist(), "peak_centre": pk["peak_centre"].tolist()}
    return {"index": ex.index.tolist(), "correct": (ex.pred == ex.y).tolist(), "size": list(ex.x.shape[-2:]),
            "predicted": [ex.classes[int(c)] for c in ex.pred], "true": [ex.classes[int(c)] for c in ex.y],
            "methods": per}


def sanity_summary(result: dict) -> dict:
    """Per method of a cascading_randomization result: the rank correlation with the trained
    maps after re-initializing the top layer and after all layers."""
    steps = result["steps"]
    top, last = steps[min(1, len(steps) - 1)], steps[-1]
    return {m: {"top_layer": top["layer"], "after_top": top[m]["mean"], "after_all": last[m]["mean"],
                "layers": last["randomized"], "images": result["images"]} for m in result["methods"]}


def run_stats(ex: Examples, seed: int, n: int, layer=None, sanity: dict | None = None,
              name: str = "saliency_stats") -> dict:
    """saliency_statistics on a seeded draw of n test images, the shown examples' statistics and
    the sanity check's summary; writes <name>.json (a chosen selection passes its own name, see
    output_stem, so the standard file, the report's, stays)."""
    if n > len(ex.x_test):
        print(f"--stats-n {n}: the test set has {len(ex.x_test)} images, so the statistics use all of them")
    g = torch.Generator().manual_seed(seed + 1)  # not the sanity check's batch
    idx = torch.randperm(len(ex.x_test), generator=g)[:n].sort().values
    x = normalize(ex.x_test[idx].to(ex.device), ex.ckpt["mean"], ex.ckpt["std"])
    stats = {"network": ex.ckpt["model"]["name"], "dataset": ex.ckpt["dataset"],
             **saliency_statistics(ex.model, x, ex.y_test[idx], seed, layer=layer),
             "shown": shown_statistics(ex.model, ex, layer),
             "sanity": sanity_summary(sanity) if sanity else None, "test_indices": idx.tolist()}
    stats["cam_method"] = "CAM" if "CAM" in stats["methods"] else "Grad-CAM" if "Grad-CAM" in stats["methods"] else None
    files.write_json(ex.out_dir / f"{name}.json", stats)
    return stats


# ---- figures -----------------------------------------------------------------------------------

TEXT_WIDTH_IN = 1.3   # the column of example titles: fits "pred: automobile (100%)" at 7 pt
MAX_PANEL_IN = 0.75   # a 32 x 32 image needs no more (about 43 pixels an inch)
GOOD_PANEL_IN = 0.55  # panels at least this large: the layout with the shortest figure wins
MAX_HEIGHT_IN = 8.0   # a page of the report, with room for the caption
SANITY_SIZE_IN = (3.0, 3.0)  # under half the text width: the report sets both networks' checks side by side
SAVE_PAD_IN = 0.12    # plots.save crops to the content (axes frames reach past the axes) plus 0.1 in a side


def example_layout(n: int, k: int) -> tuple:
    """(groups, panel size in inches) for n examples, one per row, each with a title column and k
    map panels: the examples split into 1 or 2 side-by-side groups within the print width
    plots.PRINT_WIDTH_IN and MAX_HEIGHT_IN (0.9 in for the headings). Of the layouts whose panels
    are at least GOOD_PANEL_IN, the shortest figure (so the report spends less of a page on it),
    else the larger panels."""
    def panel(g):
        rows = -(-n // g)
        width = plots.PRINT_WIDTH_IN - 2 * SAVE_PAD_IN
        return min(MAX_PANEL_IN, (width / g - TEXT_WIDTH_IN) / k, (MAX_HEIGHT_IN - 0.9) / rows)
    options = (1, 2) if n > 1 else (1,)
    good = [g for g in options if panel(g) >= GOOD_PANEL_IN]
    groups = min(good, key=lambda g: -(-n // g) * panel(g)) if good else max(options, key=panel)
    return groups, panel(groups)


def plot_example_maps(images, rows, titles, colors, suptitle):
    """One row per example (in two side-by-side groups when that prints larger), a column of
    titles then one column per map. images: (N, C, H, W) uint8; rows: [(label, kind, maps)] with
    kind "image" (maps unused), "overlay" ((N, H, W) in [0, 1], drawn over the image, blue low to
    red high), "heatmap" ((N, H, W) in [0, 1]) or "rgb" ((N, C, H, W) in [0, 1]); a map with one
    value everywhere is labelled "flat map" (it is not a drawing error). Every text is at least
    plots.MIN_FONT_PT and the figure at most plots.PRINT_WIDTH_IN wide."""
    n, k = len(images), len(rows)
    groups, p = example_layout(n, k)
    per = -(-n // groups)
    fig = plt.figure(figsize=(groups * (TEXT_WIDTH_IN + k * p), per * p + 0.9))
    grid = fig.add_gridspec(per, groups * (k + 1), width_ratios=[TEXT_WIDTH_IN, *[p] * k] * groups,
                            left=0, right=1, bottom=0, top=1 - 0.9 / (per * p + 0.9), wspace=0.05, hspace=0.08)
    for i in range(n):
        g, r = divmod(i, per)
        text = fig.add_subplot(grid[r, g * (k + 1)])
        text.axis("off")
        text.text(0.97, 0.5, titles[i], fontsize=plots.MIN_FONT_PT, color=colors[i], ha="right", va="center",
                  transform=text.transAxes)
        image = np.asarray(images[i])
        for j, (label, kind, maps) in enumerate(rows):
            ax = fig.add_subplot(grid[r, g * (k + 1) + 1 + j])
            if kind == "image":
                plots.show_image(ax, image)
            elif kind == "overlay":
                plots.show_image(ax, image)
                ax.imshow(np.asarray(maps[i]), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            elif kind == "heatmap":
                plots.show_image(ax, np.asarray(maps[i]), cmap="inferno", vmin=0, vmax=1)
            else:  # "rgb": vmin/vmax matter only for a single channel (drawn in gray)
                plots.show_image(ax, np.asarray(maps[i]), **({"vmin": 0, "vmax": 1} if maps.shape[1] == 1 else {}))
            if kind != "image" and np.ptp(np.asarray(maps[i])) == 0:  # e.g. a Grad-CAM the ReLU zeroed
                ax.text(0.5, 0.5, "flat map", fontsize=plots.MIN_FONT_PT, ha="center", va="center",
                        transform=ax.transAxes, bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1))
            if r == 0:
                ax.set_title(label, fontsize=plots.MIN_FONT_PT)
    fig.suptitle(suptitle, fontsize=8, y=0.995, va="top")
    return fig


METHOD_COLORS = {"CAM": "C0", "Grad-CAM": "C1", "guided backprop": "C2", "guided Grad-CAM": "C3",
                 "gradient": "C4"}  # one colour per method in every network's plot


def plot_sanity(result: dict, network: str):
    """Mean rank correlation (band: +-1 std over images) vs the number of layers randomized;
    SANITY_SIZE_IN (half the print width), no text under plots.MIN_FONT_PT."""
    steps = result["steps"]
    k = [s["randomized"] for s in steps]
    fig, ax = plt.subplots(figsize=SANITY_SIZE_IN)
    for method in result["methods"]:
        mean = np.array([s[method]["mean"] for s in steps])
        std = np.array([s[method]["std"] for s in steps])
        line, = ax.plot(k, mean, "o-", ms=3, label=method, color=METHOD_COLORS.get(method))
        ax.fill_between(k, mean - std, mean + std, color=line.get_color(), alpha=0.12)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(k, [s["layer"].split("+")[0].removeprefix("features.") for s in steps], rotation=90,
                  fontsize=plots.MIN_FONT_PT)
    ax.tick_params(axis="y", labelsize=plots.MIN_FONT_PT)
    ax.set_xlabel("randomized from the output down to (cumulative)", fontsize=plots.MIN_FONT_PT)
    ax.set_ylabel("rank correlation with\nthe trained model's maps", fontsize=plots.MIN_FONT_PT)
    ax.set_ylim(-0.5, 1.05)
    ax.set_title(f"{network}: cascading randomization\n(Adebayo et al. 2018), {result['images']} test images;\n"
                 "a method that passes drops toward 0", fontsize=8, pad=8 + 9 * ((len(result["methods"]) + 1) // 2))
    ax.grid(alpha=0.3)
    # above the axes, in two columns: inside them it would hide the curves it names
    ax.legend(fontsize=plots.MIN_FONT_PT, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False,
              borderaxespad=0.2, handlelength=1.5, columnspacing=1.0)
    fig.tight_layout(pad=0.3)
    return fig
