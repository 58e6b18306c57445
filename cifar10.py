"""Train two CNNs on CIFAR-10 (Problem 2): a VGG-style net with a dense head, and a
ResNet-style net that ends in global average pooling and one linear layer; and measure what
batch norm and dropout do to each.

    python cifar10.py --arch dense                  # VGG-style convs + dense head (cnn.CNN)
    python cifar10.py --arch gap                    # ResNet-style, global average pooling + one linear layer
    python cifar10.py --arch gap --no-batchnorm --dropout 0
    python cifar10.py --arch dense --ablation       # batch norm on/off x dropout on/off, same everything else
    python cifar10.py --arch gap --ablation --seeds 3 --epochs 5
    python cifar10.py --arch gap --preset quick     # 1 minute or two on a 2-core CPU
    python cifar10.py --arch gap --preset large     # 64-128-256 channels, 18 epochs: 2-3 points more, 3-4x the time
    python cifar10.py --arch gap --preset gpu       # wider and longer, for one CUDA GPU
    torchrun --nproc_per_node=4 cifar10.py --arch gap --preset gpu   # DistributedDataParallel

Data: the 50,000 CIFAR-10 training images are split, with --seed, into 45,000 for training and
5,000 for validation (--val-size); validation loss and accuracy are measured after every epoch
and every default in this file was chosen on them. The 10,000 test images are used once, at the
end. The reported accuracies (validation and test) average each image's logits with its mirror
image's (flip test-time augmentation, --tta; --no-tta: plain); metrics.json has both rules'.

Model: see cnn.CNN / cnn.GAPNet and architecture.txt. Training: SGD with Nesterov momentum, a
one-cycle linear schedule, label smoothing 0.2, random flips and 2-pixel shifts, channels-last
layout, and bfloat16 autocast where the CPU runs it natively (AMX/AVX512-BF16). The default and
quick presets train the conv filters with Muon instead (training.Muon: each step the momentum made
orthogonal, Jordan et al. 2024), which reached higher validation accuracy in 6-7 epochs than SGD
in 9 (quick: in 3 epochs than SGD in 4; docs/experiments.md); the large and gpu presets keep SGD.
Both nets also resize progressively in the default and quick presets: the first 4 of 6 epochs
(quick: 1 of 3) see images downsampled to 24x24, whose steps cost about (24/32)^2 of a full-size
one (the dense net's head then starts with adaptive average pooling, the identity at 32x32). One full-size
epoch less (gap: 6 epochs, 3 at 24x24 before; dense: 7, 4 at 24x24) cost 0.5-0.7 points of
validation accuracy for 16-30% less time, which brought float32 runs under 6 minutes. Networks without
batch norm start from He initialization (see he_init). The default dense net has no dropout (in its
short training it does not overfit, so dropout only slowed the fit: docs/experiments.md), so its --ablation turns dropout on at
ABLATION_DROPOUT for the "dropout on" variants. The ablation keeps everything else,
the learning rate included, equal: with SGD (--optimizer sgd) at a peak --lr of 0.4 (the quick
preset's) the networks without batch norm do not train at all; at --lr 0.1 all four train with SGD
or Muon, so report/run_all.py runs the ablation there.

Writes to runs/cifar10-<arch>[-<preset>][-nobn][-nodrop|-drop]/ (or --out-dir): model.pt (checkpoint
with final metrics), metrics.json, history.csv (per epoch, with its image_size), steps.csv (per step), loss.png
(training and validation loss; the epochs trained on smaller images greyed), architecture.txt (every layer, its output shape and parameters).
Besides the running training loss (augmented batches, dropout if the net has it, label smoothing), every epoch
measures train_eval_loss on a fixed subset of 2,000 training images exactly as the validation loss
(eval mode, plain cross-entropy); metrics.json's loss_gap is val_loss - train_eval_loss.
--ablation writes runs/cifar10-<arch>[-<preset>]-ablation/: one run folder per variant (and seed),
ablation.json ("setting": epochs, widths, learning rate, dropout rate and position, seeds, and the
default network's length and width; "variants": per variant mean, std and per-seed results;
"effects": what dropout does with batch norm and without, and batch norm with dropout and without,
paired by seed, never averaged across the other switch), ablation.md (the table and those effects)
and ablation.png (per batch-norm setting: dropout on and off, validation accuracy and losses).
"""
import cli  # first, before torch: Ctrl-C while the libraries load ends in one line
import argparse
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import files
import hooks
import plots
from cnn import ResidualBlock
from data import limit_images, load_dataset, train_val_split
from training import (TrainingError, build_model, config_from_args, count_parameters, distributed,
                      finish_run, fit, is_main_process, metrics_from_logits, pick_device, precision,
                      predict_flip, rank_and_world, seed_everything)

# The one table of defaults: every setting a run uses, by --arch and --preset; --help prints it,
# an option given on the command line replaces its entry. SHARED holds what every row has (no row
# overrides it); the rest differs by row. Chosen on the 5,000 validation images (the trials:
# benchmarks/results/design_trials.json, docs/experiments.md); the test set played no part.
# On 2 CPU cores in float32 (AVX2) "default" takes about 5 minutes (2.5 with native bfloat16), "quick"
# 70 s (40 s; an AVX2-only CPU may take twice these); "large" fits
# 20 minutes only where the CPU runs bfloat16 natively; "gpu" is for one CUDA GPU, a wider net at a
# larger batch. low_res is progressive resizing (0 off; see training.py).
SHARED = dict(momentum=0.9, muon_lr=0.1, weight_decay=5e-4, label_smoothing=0.2, warmup=0.2, flip=True, crop=2,
              tta=True)
DEFAULTS = {
    ("dense", "default"): dict(SHARED, batch_size=256, epochs=6, lr=0.2, optimizer="muon",
                               channels=[48, 96, 192], convs_per_block=2, hidden=[256],
                               dropout=0.0,  # dropout 0.2 lowered val accuracy on 2 seeds
                               low_res=24, low_res_fraction=0.67),  # 4 of 6 epochs at 24x24
    ("gap", "default"): dict(SHARED, batch_size=256, epochs=6, lr=0.2, optimizer="muon",
                             channels=[40, 80, 160], blocks=[1, 1, 1], stem=0, dropout=0.1,
                             low_res=24, low_res_fraction=0.67),  # 4 of 6 epochs at 24x24
    ("dense", "large"): dict(SHARED, batch_size=512, epochs=18, lr=0.4, optimizer="sgd",
                             channels=[64, 128, 256], convs_per_block=2, hidden=[256], dropout=0.2, low_res=0),
    ("gap", "large"): dict(SHARED, batch_size=512, epochs=18, lr=0.4, optimizer="sgd", channels=[64, 128, 256],
                           blocks=[0, 1, 1], stem=0, dropout=0.1, low_res=0),
    ("dense", "quick"): dict(SHARED, batch_size=512, epochs=3, lr=0.4, optimizer="muon", channels=[24, 48, 96],
                             convs_per_block=2, hidden=[256], dropout=0.2,
                             low_res=24, low_res_fraction=0.5),  # 1 of 3 epochs at 24x24
    ("gap", "quick"): dict(SHARED, batch_size=512, epochs=3, lr=0.4, optimizer="muon", channels=[24, 48, 96],
                           blocks=[0, 1, 1], stem=0, dropout=0.1,
                           low_res=24, low_res_fraction=0.5),  # 1 of 3 epochs at 24x24
    ("dense", "gpu"): dict(SHARED, batch_size=1024, epochs=16, lr=0.4, optimizer="sgd", channels=[64, 256, 256],
                           convs_per_block=2, hidden=[512], dropout=0.2, low_res=0),
    ("gap", "gpu"): dict(SHARED, batch_size=1024, epochs=18, lr=0.4, optimizer="sgd", channels=[64, 256, 512],
                         blocks=[1, 1, 1], stem=32, dropout=0.1, low_res=0),
}


def defaults_table(options: set) -> str:
    """DEFAULTS as --help's epilog: SHARED, then one line per (arch, preset) with the rest of its
    row; `options` are the parser's dests (other keys are fixed settings without an option)."""
    def flag(key, value):
        if isinstance(value, bool):
            return f"--{'' if value else 'no-'}{key.replace('_', '-')}"
        value = " ".join(map(str, value)) if isinstance(value, list) else value
        return f"--{key.replace('_', '-')} {value}"

    lines = ["defaults by --arch and --preset (the options above show --preset default's; an option you give "
             "replaces its default):",
             "  all      " + " ".join(flag(k, v) for k, v in SHARED.items() if k in options)
             + " (fixed: " + ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in options) + ")"]
    for (arch, preset), d in DEFAULTS.items():
        lines.append(f"  {arch:5} {preset:8} " + " ".join(flag(k, v) for k, v in d.items() if k not in SHARED))
    return "\n".join(lines)


# --ablation's rate for its "dropout on" variants where the preset's default is 0 (--dropout overrides).
ABLATION_DROPOUT = 0.2
NAMES = {"dense": "VGG-style CNN with a dense head", "gap": "ResNet-style CNN with global average pooling"}
VARIANTS = [  # (folder, label, batch norm, dropout on) for --ablation
    ("bn-drop", "batch norm + dropout", True, True),
    ("bn-nodrop", "batch norm, no dropout", True, False),
    ("nobn-drop", "dropout, no batch norm", False, True),
    ("nobn-nodrop", "neither", False, False),
]
N_TRAIN, IMAGE = 50_000, (3, 32, 32)


# ---- arguments ----------------------------------------------------------------------------------

def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--arch", choices=["dense", "gap"], default="gap",
                   help="dense: VGG-style convs + dense head; gap: residual stages + global average pooling "
                        "+ one linear layer")
    p.add_argument("--preset", choices=["default", "quick", "large", "gpu"], default="default",
                   help="default: about 5 min on 2 CPU cores in float32, 2.5 with native bfloat16; quick: about 70 s (40 s); large: 2-3 points more, 10-20 min "
                        "where the CPU runs bfloat16 natively (AMX, AVX512-BF16), about 1 h in float32; "
                        "gpu: for a CUDA GPU")
    p.add_argument("--ablation", action="store_true",
                   help="train the four variants batch norm on/off x dropout on/off, everything else equal")
    p.add_argument("--seeds", type=cli.positive_int, default=1,
                   help="--ablation: seeds per variant (--seed, --seed+1, ...); tables give mean ± std")
    cli.add_common_args(p)
    t = cli.add_training_args(p, batch_help="global batch (split across torchrun processes)")
    t.add_argument("--val-size", type=cli.positive_int, default=5000,
                   help="training images held out for validation (5000: a 45,000/5,000 split)")
    t.add_argument("--test-limit", type=cli.positive_int,
                   help="evaluate on the first N test images only (quick tests; default all 10,000)")
    t.add_argument("--low-res", type=int,
                   help="progressive resizing: train the first --low-res-fraction of the epochs on images "
                        "downsampled to NxN (0: off; when on, the dense net's head starts with adaptive average pooling)")
    t.add_argument("--low-res-fraction", type=cli.finite_float, help="the fraction of the epochs at --low-res (rounded down: 0.56 of 9 is 5)")
    a = p.add_argument_group("architecture")
    a.add_argument("--channels", type=cli.positive_int, nargs="+",
                   help="output channels of each stage; each stage halves the image (at most 5 stages)")
    a.add_argument("--convs-per-block", type=cli.positive_int, help="dense: convolutions per stage")
    a.add_argument("--hidden", type=int, nargs="*", help="dense: widths of the hidden dense layers (none: 0 layers)")
    a.add_argument("--blocks", type=int, nargs="+",
                   help="gap: residual blocks per stage (one number for all stages, or one per stage)")
    a.add_argument("--stem", type=int, help="gap: channels of a full-resolution conv before the stages (0: none)")
    a.add_argument("--dropout", type=cli.finite_float,
                   help="dropout rate (dense: before each dense layer; gap: before fc); with --ablation the rate "
                        f"of its 'dropout on' variants ({ABLATION_DROPOUT} where the preset's is 0)")
    a.add_argument("--no-batchnorm", dest="batchnorm", action="store_false", help="drop every batch norm layer")
    p.add_argument_group("evaluation").add_argument(
        "--tta", action=argparse.BooleanOptionalAction,
        help="flip test-time augmentation: report the accuracy of the mean logits of each image and its "
             "left-right mirror image (validation and test; the plain accuracy is recorded too)")
    cli.show_defaults(p, {arch: DEFAULTS[arch, "default"] for arch in ("dense", "gap")})
    p.epilog = defaults_table({action.dest for action in p._actions})
    args = p.parse_args(argv)
    cli.refuse_foreign_options(p, args, "--arch", ARCH_ONLY)  # of the options given, before the defaults
    if args.ablation and args.dropout is None and DEFAULTS[args.arch, args.preset]["dropout"] == 0:
        args.dropout = ABLATION_DROPOUT
    cli.fill_defaults(args, DEFAULTS[args.arch, args.preset])
    check_args(p, args)
    args.out_dir = Path(args.out_dir or f"runs/{run_name(args)}")
    return args


ARCH_ONLY = {"dense": ["convs_per_block", "hidden"], "gap": ["blocks", "stem"]}


def check_args(parser, args):
    if len(args.channels) > 5:
        parser.error(f"--channels: {len(args.channels)} stages halve 32 pixels below 1; use at most 5")
    if args.arch == "gap":
        if len(args.blocks) == 1:
            args.blocks = args.blocks * len(args.channels)
        if len(args.blocks) != len(args.channels) or min(args.blocks) < 0:
            parser.error(f"--blocks: give one number >= 0, or one per stage ({len(args.channels)}), "
                         f"got {args.blocks}")
        if args.stem < 0:
            parser.error(f"--stem must be >= 0, got {args.stem}")
    if not (args.low_res == 0 or 8 <= args.low_res < 32):
        parser.error(f"--low-res must be 0 (off) or from 8 to 31 pixels, got {args.low_res}")
    if args.low_res_fraction is not None and not 0 <= args.low_res_fraction < 1:
        parser.error(f"--low-res-fraction must be in [0, 1), got {args.low_res_fraction}")
    if args.arch == "dense" and any(h < 1 for h in args.hidden):
        parser.error(f"--hidden widths must be >= 1, got {args.hidden}")
    cli.check_training_args(parser, args)
    if args.ablation and (not args.batchnorm or args.dropout == 0):
        parser.error("--ablation trains with and without batch norm and dropout itself; drop --no-batchnorm, "
                     "and give --dropout > 0 (the rate of the 'dropout on' variants)")
    if args.seeds > 1 and not args.ablation:
        parser.error("--seeds is for --ablation; for one run pass --seed")


def run_name(args) -> str:
    """cifar10-<arch>[-<preset>] then -ablation, or [-nobn][-nodrop|-drop] for one run that
    switches off batch norm, or switches dropout against its preset (so it keeps its own folder)."""
    name = f"cifar10-{args.arch}" + ("" if args.preset == "default" else f"-{args.preset}")
    if args.ablation:
        return f"{name}-ablation"
    drop, preset_drop = args.dropout > 0, DEFAULTS[args.arch, args.preset]["dropout"] > 0
    return name + ("" if args.batchnorm else "-nobn") + ("" if drop == preset_drop else "-drop" if drop else "-nodrop")


def model_spec(args, batchnorm: bool, dropout: float):
    """(class name, constructor arguments): recorded in the checkpoint to rebuild the model."""
    if args.arch == "dense":
        return "CNN", dict(in_channels=3, num_classes=10, image_size=32, channels=args.channels,
                           convs_per_block=args.convs_per_block, kernel_size=3, pool="max",
                           hidden=args.hidden, dropout=dropout, batchnorm=batchnorm, early_pool=True,
                           adaptive_pool=bool(args.low_res))  # lets 24x24 images reach the dense head
    return "GAPNet", dict(in_channels=3, num_classes=10, channels=args.channels, blocks=args.blocks,
                          dropout=dropout, batchnorm=batchnorm, stem=args.stem)


def split_data(ds, args):
    """The seeded 45k/5k train/validation split, cut down by --limit / --test-limit."""
    if args.val_size >= len(ds.x_train):
        raise cli.UserError(f"--val-size {args.val_size:,} leaves no training images (the training set has "
                            f"{len(ds.x_train):,}); use --val-size {len(ds.x_train) // 10} or so")
    train_idx, val_idx = train_val_split(len(ds.x_train), args.val_size, args.seed)
    if args.test_limit and args.test_limit > len(ds.x_test):
        raise cli.UserError(f"--test-limit {args.test_limit} is more than the {len(ds.x_test):,} test images; "
                            f"use --test-limit {len(ds.x_test)} or less")
    train_idx = limit_images(train_idx, args.limit, f"--val-size {args.val_size:,}")
    return {"train": (ds.x_train[train_idx], ds.y_train[train_idx]),
            "val": (ds.x_train[val_idx], ds.y_train[val_idx]),
            "test": (ds.x_test[:args.test_limit], ds.y_test[:args.test_limit])}


# ---- architecture description ----------------------------------------------------------------------

def layer_table(model, input_shape=IMAGE) -> list[dict]:
    """One row per leaf module in the order they run: name, type, output shape, parameters.

    Measured with forward hooks on a dummy input, so the shapes are the real ones."""
    modules = dict(model.named_modules())
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with torch.no_grad(), hooks.eval_mode(model), hooks.record_outputs(model) as out:
        model(x)
    return [{"name": name, "type": describe(modules[name]), "shape": list(y.shape[1:]),
             "parameters": sum(p.numel() for p in modules[name].parameters(recurse=False))}
            for name, y in out.items() if not isinstance(modules[name], torch.nn.Identity)]


def describe(m) -> str:
    if isinstance(m, torch.nn.Conv2d):
        return f"Conv2d {m.in_channels}→{m.out_channels}, {m.kernel_size[0]}×{m.kernel_size[1]}" + \
               ("" if m.bias is not None else ", no bias")
    if isinstance(m, torch.nn.Linear):
        return f"Linear {m.in_features}→{m.out_features}"
    if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
        return f"{type(m).__name__} {m.kernel_size}×{m.kernel_size}"
    if isinstance(m, torch.nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
        return f"AdaptiveAvgPool2d to {size[0]}×{size[1]}" + (" (global average pooling)" if size == (1, 1) else "")
    if isinstance(m, torch.nn.Dropout):
        return f"Dropout p={m.p}"
    return type(m).__name__


def architecture_text(model, name: str, margs: dict) -> str:
    rows = layer_table(model)
    shape = lambda s: "×".join(map(str, s))
    lines = [f"{name}({', '.join(f'{k}={v}' for k, v in margs.items())})", "",
             "| layer | type | output shape (C×H×W) | parameters |", "|---|---|---|---:|",
             f"| input | | {shape(IMAGE)} | |"]
    lines += [f"| {r['name']} | {r['type']} | {shape(r['shape'])} | {r['parameters']:,} |" for r in rows]
    total = count_parameters(model)
    lines += ["", f"total parameters: {total:,}"]
    if any(isinstance(m, ResidualBlock) for m in model.modules()):
        lines.append("residual blocks (resS_B): relu2(x + bn2(conv2(relu1(bn1(conv1(x)))))), the sum is not a module")
    return "\n".join(lines) + "\n"


# ---- one training run ---------------------------------------------------------------------------------

def train_run(args, splits, ds, device, out_dir: Path, *, batchnorm, dropout, seed, desc) -> dict:
    """Train one network, then (rank 0) evaluate it and write its run folder; return its metrics."""
    seed_everything(seed)
    name, margs = model_spec(args, batchnorm, dropout)
    model = build_model(name, margs)
    if not batchnorm:
        he_init(model)
    model = model.to(device)
    n_params = count_parameters(model)
    main = is_main_process()
    cfg = config_from_args(args, device, seed)
    if main:
        print(f"{NAMES[args.arch]}: {name}, {n_params:,} parameters, batch norm {'on' if batchnorm else 'off'}, "
              f"dropout {dropout}; {device} in {precision(device, cfg.cpu_bf16)}, {len(splits['train'][0]):,} "
              f"training images -> {out_dir}")
    meta = {"model": {"name": name, "args": margs}, "dataset": "cifar10", "classes": ds.classes,
            "mean": ds.mean, "std": ds.std}
    ckpt_path = out_dir / "model.pt"
    history = fit(model, *splits["train"], cfg, mean=ds.mean, std=ds.std, device=device,
                  evals={"val": splits["val"]}, checkpoint=ckpt_path, meta=meta, resume=args.resume, desc=desc,
                  final_eval_images=len(splits["val"][0]) + len(splits["test"][0]))  # flip-averaged after training
    train_seconds = history["seconds"]  # with the sessions before a --resume
    if not main:
        return {}

    files.write_text(out_dir / "architecture.txt", architecture_text(model, name, margs))
    results = final_metrics(model, splits, ds, device, history, args.tta)
    metrics = {"arch": args.arch, "preset": args.preset, "network": name, "parameters": n_params,
               "batchnorm": batchnorm, "dropout": dropout,
               "dropout_position": dropout_position(args.arch, margs) if dropout else None, "tta": args.tta,
               **results,
               "epochs": len(history["epochs"]), "low_res_epochs": cfg.low_res_epochs,  # the first, at low_res
               "train_seconds": round(train_seconds, 1),
               "process_cpu_seconds": round(time.process_time(), 1),  # all threads, since start
               "wall_seconds": round(time.perf_counter() - args._t_start, 1),  # this process
               "device": str(device), "world_size": rank_and_world()[1], "cpu_bf16": cfg.cpu_bf16,
               "precision": precision(device, cfg.cpu_bf16),
               "torch": str(torch.__version__), "threads": torch.get_num_threads(), "seed": seed,
               "train_images": len(splits["train"][0]), "val_images": len(splits["val"][0]),
               "test_images": len(splits["test"][0]),
               "config": cli.args_record(args)}
    finish_run(out_dir, metrics, history)
    title = f"CIFAR-10 {args.arch} network ({n_params:,} parameters): loss"
    conditions = plots.batch_conditions(cfg.flip, cfg.crop, dropout, cfg.label_smoothing)
    plots.save(plots.plot_loss(history, title, eval_names=("val",), conditions=conditions), out_dir / "loss.png")
    rule, other = ("flip-averaged", "plain") if args.tta else ("plain", "flip-averaged")
    suffix = "_plain" if args.tta else "_tta"
    print(f"val accuracy {100 * metrics['val_accuracy']:.2f}%  test accuracy {100 * metrics['test_accuracy']:.2f}% "
          f"({rule}; {other}: val {100 * metrics['val_accuracy' + suffix]:.2f}%, "
          f"test {100 * metrics['test_accuracy' + suffix]:.2f}%)  train {train_seconds:.0f}s  -> {out_dir}")
    metrics["history"] = history["epochs"]
    return metrics


def he_init(model):
    """He et al. 2015 (Eq. 10) initialization, std = sqrt(2 / fan_in), for every conv and hidden
    linear layer of a network without batch norm, so the signal keeps its variance through the
    ReLUs. PyTorch's default (std = 1 / sqrt(3 fan_in)) shrinks it by about 2.4x per layer, and the
    9-layer nets then start with vanishing logits and gradients and never leave chance level.
    Networks with batch norm keep the default: the norm layers undo any weight scale."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for m in layers[:-1]:  # the output layer keeps its small default weights
        torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        torch.nn.init.zeros_(m.bias)


def final_metrics(model, splits, ds, device, history, tta: bool) -> dict:
    """Validation and test loss/accuracy of the final model, plain and with flip TTA.

    {split}_accuracy is the reported rule's (flip-averaged with tta, else plain), beside
    {split}_accuracy_plain and _tta; {split}_loss is always plain cross-entropy, the loss the
    per-epoch curves and the overfitting gap use ({split}_loss_tta: flip-averaged).
    The model of the last epoch is the one reported (no epoch is picked), so the test set
    cannot leak into any choice."""
    last = history["epochs"][-1]
    out = {"train_loss": last["train_loss"], "train_accuracy": last["train_accuracy"],
           "train_eval_loss": last["train_eval_loss"], "train_eval_accuracy": last["train_eval_accuracy"],
           "train_eval_images": history["train_eval_images"]}
    for split in ("val", "test"):
        x, y = splits[split]
        plain, flipped = predict_flip(model, x, ds.mean, ds.std, device)  # (N, 10) each
        for suffix, logits in (("", plain), ("_tta", flipped)):
            for key, value in metrics_from_logits(logits, y).items():
                out[f"{split}_{key}{suffix}"] = value
        out[f"{split}_accuracy_plain"] = out[f"{split}_accuracy"]
        out[f"{split}_accuracy"] = out[f"{split}_accuracy{'_tta' if tta else '_plain'}"]
    # The overfitting gap compares like with like: validation loss minus the loss of a fixed subset
    # of training images, both plain cross-entropy in eval mode after the last epoch (train_loss,
    # the running mean over augmented batches with dropout and label smoothing, is not comparable).
    out["loss_gap"] = out["val_loss"] - out["train_eval_loss"]
    return out


# ---- the ablation -----------------------------------------------------------------------------------

def run_ablation(args, splits, ds, device) -> list[dict]:
    """Four variants x --seeds seeds, identical except for batch norm and dropout."""
    rows = []
    for folder, label, batchnorm, drop_on in VARIANTS:
        runs = []
        for k in range(args.seeds):
            seed = args.seed + k
            sub = args.out_dir / (folder if args.seeds == 1 else f"{folder}-seed{seed}")
            dropout = args.dropout if drop_on else 0.0
            try:
                runs.append(train_run(args, splits, ds, device, sub, batchnorm=batchnorm, dropout=dropout,
                                      seed=seed, desc=f"{folder} seed {seed}"))
            except TrainingError as err:  # no batch norm at a high lr: report it, go on with the others
                if is_main_process():
                    print(f"{folder} seed {seed}: {err}")
                runs.append({"diverged": str(err), "seed": seed})
        if is_main_process():  # the other torchrun processes get no results from train_run
            rows.append(summarize(folder, label, batchnorm, args.dropout if drop_on else 0.0, runs))
    return rows


def summarize(folder, label, batchnorm, dropout, runs) -> dict:
    """Mean and std over seeds of each reported number (NaN where a run diverged)."""
    ok = [r for r in runs if "diverged" not in r]
    row = {"variant": folder, "label": label, "batchnorm": batchnorm, "dropout": dropout, "seeds": len(runs),
           "diverged": len(runs) - len(ok), "counted": len(ok)}
    for key in SUMMARY_KEYS:
        values = np.array([r[key] for r in ok], dtype=float)
        row[key] = float(values.mean()) if len(values) else math.nan
        row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    row["runs"] = [{k: r.get(k) for k in ["seed", "diverged", *SUMMARY_KEYS]} for r in runs]
    row["curves"] = [[{k: e[k] for k in CURVE_KEYS} for e in r["history"]] for r in ok]
    return row


SUMMARY_KEYS = ["val_accuracy", "val_accuracy_plain", "val_accuracy_tta", "test_accuracy", "test_accuracy_plain",
                "test_accuracy_tta", "train_loss",
                "train_eval_loss", "train_eval_accuracy", "val_loss", "loss_gap", "epochs", "train_seconds",
                "parameters"]
CURVE_KEYS = ("epoch", "val_loss", "val_accuracy", "train_loss", "train_eval_loss")
# The four comparisons the ablation answers, each within one setting of the other switch (never
# averaged across it): (what, held, {held setting: (variant with it on, variant with it off)}).
COMPARISONS = {"dropout": {"with_batchnorm": ("bn-drop", "bn-nodrop"),
                           "without_batchnorm": ("nobn-drop", "nobn-nodrop")},
               "batchnorm": {"with_dropout": ("bn-drop", "nobn-drop"),
                             "without_dropout": ("bn-nodrop", "nobn-nodrop")}}


def paired_effect(by_variant: dict, on: str, off: str, key: str = "val_accuracy") -> dict:
    """What switching one thing on does to `key`: per seed the difference on - off (both runs share
    the seed: the same split, initial draw of the shared layers, batch order and augmentation),
    their mean and std, and whether the mean difference lies within the seed spread, i.e. is no
    larger than the std over seeds of either variant (None with fewer than 2 seeds)."""
    values = [{r["seed"]: r[key] for r in by_variant[v]["runs"] if not r.get("diverged")} for v in (on, off)]
    seeds = sorted(values[0].keys() & values[1].keys())
    diffs = np.array([values[0][s] - values[1][s] for s in seeds], dtype=float)
    spread = max(by_variant[on][f"{key}_std"], by_variant[off][f"{key}_std"])
    mean = float(diffs.mean()) if len(diffs) else math.nan
    return {"on": on, "off": off, "key": key, "seeds": seeds, "differences": diffs.tolist(), "mean": mean,
            "std": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0, "spread": spread,
            "within_spread": bool(abs(mean) <= spread) if len(seeds) > 1 else None}


def ablation_effects(rows) -> dict:
    """{what: {held setting: {metric: paired_effect}}} for dropout and batch norm, in validation
    accuracy and in the overfitting gap (validation minus eval-mode training loss)."""
    by_variant = {r["variant"]: r for r in rows}
    return {what: {held: {key: paired_effect(by_variant, on, off, key) for key in ("val_accuracy", "loss_gap")}
                   for held, (on, off) in pairs.items()}
            for what, pairs in COMPARISONS.items()}


def dropout_position(arch: str, margs: dict) -> str:
    """Where the model puts its dropout layers, in words (from its constructor arguments)."""
    if arch == "gap":
        return "on the globally average-pooled features, just before the one linear (output) layer"
    hidden = margs["hidden"]
    if not hidden:
        return "on the flattened convolutional features, just before the one linear (output) layer"
    widths = " and ".join(f"{h}" for h in hidden)
    return (f"in the dense head, before each of its {len(hidden) + 1} linear layers (on the flattened "
            f"convolutional features and on the output of the {widths}-unit hidden layer"
            f"{'s' if len(hidden) > 1 else ''})")


def ablation_setting(args, splits) -> dict:
    """What the ablation ran at (the same for all four variants), and the default network's
    training length and width, so a reader can tell how far the two differ."""
    _, margs = model_spec(args, True, args.dropout)
    keys = ["epochs", "batch_size", "lr", "optimizer", "weight_decay", "label_smoothing", "flip", "crop", "channels",
            "tta", *ARCH_ONLY[args.arch]]
    final = DEFAULTS[args.arch, "default"]
    return {"preset": args.preset, **{k: getattr(args, k) for k in keys},
            "dropout": args.dropout, "dropout_position": dropout_position(args.arch, margs),
            "seeds": list(range(args.seed, args.seed + args.seeds)), "split_seed": args.seed,
            "train_images": len(splits["train"][0]), "val_images": len(splits["val"][0]),
            "test_images": len(splits["test"][0]),
            "default_network": {k: final[k] for k in ["epochs", "lr", "optimizer", "batch_size", "channels", "dropout",
                                                      *[k for k in ARCH_ONLY[args.arch] if k in final]]}}


def setting_text(arch: str, setting: dict) -> str:
    """One sentence: the ablation's setting and, if they differ, the default network's."""
    def optimizer(s):
        return s.get("optimizer", "sgd")  # records from before the optimizer was recorded: SGD

    def describe_run(s):
        return (f"{s['epochs']} epoch{'s' if s['epochs'] > 1 else ''}, channels {'-'.join(map(str, s['channels']))}, peak learning rate "
                f"{s['lr']:g}, batch {s['batch_size']}, optimizer {optimizer(s)}")
    seeds = setting["seeds"]
    text = (f"Setting: {describe_run(setting)}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
            f"({', '.join(map(str, seeds))}) per variant; {setting['train_images']:,} training and "
            f"{setting['val_images']:,} validation images.")
    final = setting["default_network"]
    if optimizer(final) != optimizer(setting) or any(final[k] != setting[k] for k in ("epochs", "channels", "lr",
                                                                                      "batch_size")):
        text += f" The default {arch} network trains with {describe_run(final)}."
    return text


def ablation_table(rows, arch, setting=None, effects=None) -> str:
    def pm(row, key, scale=100, digits=2):
        if math.isnan(row[key]):
            return "diverged"
        text = f"{scale * row[key]:.{digits}f}"
        return text + (f" ± {scale * row[key + '_std']:.{digits}f}" if row["counted"] > 1 else "")
    seeds = rows[0]["seeds"]
    lines = [f"CIFAR-10 {arch} network: batch norm x dropout ablation "
             f"({seeds} seed{'s' if seeds > 1 else ''} per variant" + (", mean ± std over seeds)" if seeds > 1 else ")"),
             ""]
    if setting:
        lines += [setting_text(arch, setting),
                  f"Dropout: p={setting['dropout']:g} {setting['dropout_position']}; the no-dropout variants have none.",
                  ""]
    if setting and "tta" in setting:
        lines += [("Accuracies average each image's prediction with its mirror image's (flip TTA)" if setting["tta"]
                   else "Accuracies are of each image alone (plain)") + "; losses are plain.", ""]
    lines += ["| variant | dropout p | val accuracy (%) | test accuracy (%) | val loss | train loss, eval mode "
              "| val − train loss (eval mode) | train time (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {variant_label(r)} | {r['dropout']:g} | {pm(r, 'val_accuracy')} | {pm(r, 'test_accuracy')} | "
                     f"{pm(r, 'val_loss', 1, 3)} | {pm(r, 'train_eval_loss', 1, 3)} | {pm(r, 'loss_gap', 1, 3)} | "
                     f"{pm(r, 'train_seconds', 1, 0)} |")
    if any(r["diverged"] for r in rows):
        lines += ["", "diverged: the loss became NaN/inf at this learning rate (see the run's messages)"]
    if effects:
        lines += ["", "Effects on validation accuracy (switched on minus off, paired by seed, points), "
                      "each within one setting of the other switch:"]
        for what, held_name in (("dropout", "batch norm"), ("batchnorm", "dropout")):
            for held, by_key in effects[what].items():
                lines.append(f"- {'dropout' if what == 'dropout' else 'batch norm'} "
                             f"{held.split('_')[0]} {held_name}: {effect_text(by_key['val_accuracy'])}")
    return "\n".join(lines) + "\n"


def effect_text(effect: dict, scale=100) -> str:
    n = len(effect["seeds"])
    if not n:
        return "not measured (a variant diverged)"
    text = f"{scale * effect['mean']:+.2f}"
    if n > 1:
        text += f" ± {scale * effect['std']:.2f} over {n} seeds"
        text += ", within the seed spread" if effect["within_spread"] else ", beyond the seed spread"
        text += f" (std of a variant up to {scale * effect['spread']:.2f})"
    else:
        text += " (1 seed: no spread measured)"
    return text


def variant_label(row) -> str:
    """The variant's name, saying how many seeds its numbers average when some diverged."""
    if row["diverged"] and row["counted"]:
        return f"{row['label']}, {row['counted']} of {row['seeds']} seeds ({row['diverged']} diverged)"
    return row["label"] + (", diverged" if row["diverged"] else "")


def plot_ablation(rows, arch):
    """Per batch-norm setting (columns), dropout on against off: validation accuracy per epoch
    (top) and validation loss beside the eval-mode training loss (bottom); mean over seeds, band
    from the lowest to the highest seed. 6.5 in wide, no text under 7 pt."""
    fig, axes = plt.subplots(2, 2, figsize=(plots.PRINT_WIDTH_IN, 5.4), sharex=True, sharey="row")
    by_variant = {r["variant"]: r for r in rows}
    for col, (batchnorm, title) in enumerate(((True, "with batch norm"), (False, "without batch norm"))):
        ax_acc, ax_loss = axes[0, col], axes[1, col]
        for drop_on, color in ((True, "tab:red"), (False, "tab:blue")):
            r = by_variant[f"{'' if batchnorm else 'no'}bn-{'' if drop_on else 'no'}drop"]
            name = f"dropout p={r['dropout']:g}" if drop_on else "no dropout"
            if r["diverged"]:
                name += f" ({r['diverged']} of {r['seeds']} diverged)"
            if not r["curves"]:  # every seed diverged: named in the legend, nothing to draw
                ax_acc.plot([], [], color=color, label=name)
                continue
            epochs = [e["epoch"] for e in r["curves"][0]]
            for ax, key, scale, ls, marker, label in (
                    (ax_acc, "val_accuracy", 100, "-", "o", name),
                    (ax_loss, "val_loss", 1, "-", "o", f"{name}: validation"),
                    (ax_loss, "train_eval_loss", 1, "--", "s", f"{name}: training, eval mode")):
                values = scale * np.array([[e[key] for e in c] for c in r["curves"]])  # (seeds, epochs)
                ax.plot(epochs, values.mean(0), ls=ls, color=color, marker=marker, ms=3.5, mfc="white",
                        label=label)
                if len(values) > 1:
                    ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.15)
        ax_acc.set_title(title, fontsize=9)
        ax_loss.set_xlabel("epoch", fontsize=8)
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, 0].set_ylabel("validation accuracy (%),\nper epoch, plain", fontsize=8)
    axes[1, 0].set_ylabel("cross-entropy loss", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    seeds = rows[0]["seeds"]
    fig.suptitle(f"CIFAR-10 {arch} network: dropout with and without batch norm"
                 + (f"\n(mean of {seeds} seeds; band: lowest to highest seed)" if seeds > 1 else " (1 seed)"),
                 fontsize=9)
    fig.tight_layout()
    return fig


def write_ablation(args, rows, setting):
    effects = ablation_effects(rows)
    table = ablation_table(rows, args.arch, setting, effects)
    files.write_json(args.out_dir / "ablation.json", {"arch": args.arch, "preset": args.preset, "seeds": args.seeds,
                                                    "setting": setting, "effects": effects, "variants": rows})
    files.write_text(args.out_dir / "ablation.md", table)
    plots.save(plot_ablation(rows, args.arch), args.out_dir / "ablation.png")
    print(table + f"-> {args.out_dir}")


# ---- main -------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    args._t_start = time.perf_counter()
    device = pick_device(args.device)
    with distributed(device):
        ds = load_dataset("cifar10", args.data_dir)
        splits = split_data(ds, args)
        files.claim_out_dir(args.out_dir)  # locked for this run; a bad folder fails now, not after training
        if args.ablation:
            rows = run_ablation(args, splits, ds, device)
            if is_main_process():
                write_ablation(args, rows, ablation_setting(args, splits))
        else:
            train_run(args, splits, ds, device, args.out_dir, batchnorm=args.batchnorm, dropout=args.dropout,
                      seed=args.seed, desc=args.arch)


if __name__ == "__main__":
    cli.run(main)
