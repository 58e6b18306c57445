"""Where a training step's time goes: each default network's FLOP budget next to its measured step
time, the achieved float32 (or bfloat16) throughput, and the most expensive operators.

Run:  python benchmarks/profile_step.py [--only fashionmnist-cnn] [--steps 20]
      ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=2 \\
          python benchmarks/profile_step.py --no-cpu-bf16     # the float32 reference condition

A step is what the training loop does per batch: forward, cross-entropy, backward, optimizer
step, on random data of the default batch size (the time of augmentation and normalization is
measured separately: it is part of an epoch too). FLOPs are counted by torch's FlopCounterMode
(2 per multiply-add, forward and backward; convolutions and matrix products only, which are
nearly all of them). Per epoch: steps_per_epoch * step time, timed again at the low resolution of
progressive resizing where the default trains some epochs so; training: those epochs summed (the
whole run adds the per-epoch evaluations and start-up). The optimizer step is timed on its own
too (Muon's orthogonalization is not in the FLOP count). Results:
benchmarks/results/profile.json (atomically).
"""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402  first, before torch

# torch.profiler's tracing library (Kineto) logs its start and stop, and on a machine without a GPU
# an "ERROR" about counting GPUs, on stderr; above its highest level (5) it keeps quiet
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import cifar10  # noqa: E402
import data  # noqa: E402
import fashionmnist  # noqa: E402
from benchmarks.common import machine  # noqa: E402
from files import read_json_or_none, write_json  # noqa: E402
from training import (autocast, build_model, config_from_args, count_parameters, keep_freed_memory,  # noqa: E402
                      make_optimizer, make_scheduler, pick_device)

TRAIN_IMAGES = {"fashion_mnist": 60_000, "cifar10": 45_000}  # what the default runs train on


def cases() -> dict:
    """name -> (parsed default arguments, model spec, dataset, image shape (C, H, W))."""
    out = {}
    for model in ("ffn", "cnn"):
        args = fashionmnist.parse_args(["--model", model, "--out-dir", "/nonexistent"])
        out[f"fashionmnist-{model}"] = (args, fashionmnist.model_spec(args), "fashion_mnist", (1, 28, 28))
    for arch in ("dense", "gap"):
        args = cifar10.parse_args(["--arch", arch, "--out-dir", "/nonexistent"])
        spec = cifar10.model_spec(args, batchnorm=args.batchnorm, dropout=args.dropout)
        out[f"cifar10-{arch}"] = (args, spec, "cifar10", (3, 32, 32))
    return out


def step_flops(model, x, y) -> int:
    """FLOPs of one forward + backward pass on batch x (2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_steps(model, x, y, cfg, device, steps: int) -> tuple[float, float]:
    """Median seconds of a training step and of its optimizer step alone (after 3 warm-up steps)."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps + 3)
    times, optimizer_times = [], []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with autocast(device, cfg.cpu_bf16):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _synchronize(device)
        t1 = time.perf_counter()
        optimizer.step()
        scheduler.step()
        _synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
            optimizer_times.append(time.perf_counter() - t1)
    return median(times), median(optimizer_times)


def median(values: list) -> float:
    return sorted(values)[len(values) // 2]


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_augment(x_uint8, cfg, steps: int = 10) -> float:
    """Median seconds to augment and normalize one batch (the loop's per-step data work)."""
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        drawn = data.draw_augmentation(len(x_uint8), generator, cfg.flip, cfg.crop)
        t0 = time.perf_counter()
        data.normalize(data.augment(x_uint8, cfg.crop, **drawn), [0.5], [0.25])
        times.append(time.perf_counter() - t0)
    return median(times)


def top_ops(model, x, y, n: int = 6) -> list:
    """The n operators with the most self CPU time over 3 steps: (name, share of the total)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            F.cross_entropy(model(x), y).backward()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [(e.key, round(e.self_cpu_time_total / total, 3)) for e in events[:n]]


def profile_case(name, args, spec, dataset, shape, device, steps: int) -> dict:
    cfg = config_from_args(args, device)
    model = build_model(*spec).to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.randn(cfg.batch_size, *shape, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    flops = step_flops(model, x, y)
    seconds, optimizer_s = time_steps(model, x, y, cfg, device, steps)
    augment_s = time_augment(torch.randint(0, 256, (cfg.batch_size, *shape), dtype=torch.uint8), cfg)
    steps_per_epoch = TRAIN_IMAGES[dataset] // cfg.batch_size
    result = {"parameters": count_parameters(model), "batch_size": cfg.batch_size, "epochs": cfg.epochs,
              "optimizer": cfg.optimizer, "bf16": cfg.cpu_bf16 or device.type == "cuda",
              "gflop_per_image": round(flops / cfg.batch_size / 1e9, 4),
              "gflop_per_step": round(flops / 1e9, 2), "step_seconds": round(seconds, 4),
              "optimizer_step_seconds": round(optimizer_s, 4),
              "gflop_per_second": round(flops / seconds / 1e9, 1),
              "augment_seconds_per_step": round(augment_s, 4),
              "epoch_seconds_estimate": round(steps_per_epoch * (seconds + augment_s), 1)}
    if cfg.low_res_epochs:  # progressive resizing: the first epochs' steps, at low_res x low_res
        x_low = F.interpolate(x, size=cfg.low_res, mode="bilinear", antialias=True)
        low_seconds, _ = time_steps(model, x_low, y, cfg, device, steps)
        result |= {"low_res": cfg.low_res, "low_res_epochs": cfg.low_res_epochs,
                   "low_res_step_seconds": round(low_seconds, 4),
                   "low_res_epoch_seconds_estimate": round(steps_per_epoch * (low_seconds + augment_s), 1)}
    return result | {"training_seconds_estimate": round(
        (cfg.epochs - cfg.low_res_epochs) * result["epoch_seconds_estimate"]
        + cfg.low_res_epochs * result.get("low_res_epoch_seconds_estimate", 0), 1), "top_ops": top_ops(model, x, y)}


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", help="profile these cases only (fashionmnist-ffn, fashionmnist-cnn, "
                                             "cifar10-dense, cifar10-gap)")
    p.add_argument("--steps", type=cli.positive_int, default=20, help="timed steps per case")
    p.add_argument("--no-cpu-bf16", action="store_true", help="float32 on the CPU even where bfloat16 is native")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/profile.json"))
    args = p.parse_args(argv)
    device = pick_device("auto")
    if device.type == "cpu":
        keep_freed_memory()  # as training does: freed activations reused, not faulted in anew each step
    all_cases = cases()
    unknown = set(args.only or []) - set(all_cases)
    if unknown:
        raise cli.UserError(f"unknown case {', '.join(sorted(unknown))}; choose from {', '.join(all_cases)}")
    earlier = (read_json_or_none(args.out, warn=False) or {}).get("cases", {}) if args.only else {}
    results = {"machine": machine(), "device": str(device), "threads": torch.get_num_threads(), "cases": {}}
    for name in args.only or all_cases:
        case_args, spec, dataset, shape = all_cases[name]
        if args.no_cpu_bf16:
            case_args.cpu_bf16 = False
        r = results["cases"][name] = profile_case(name, case_args, spec, dataset, shape, device, args.steps)
        print(f"{name}: {r['gflop_per_image'] * 1e3:.1f} MFLOP/image, {r['gflop_per_step']:.1f} GFLOP/step "
              f"(batch {r['batch_size']}), {1e3 * r['step_seconds']:.0f} ms/step = {r['gflop_per_second']:.0f} "
              f"GFLOP/s{' (bf16)' if r['bf16'] else ''}; augment {1e3 * r['augment_seconds_per_step']:.1f} ms; "
              f"optimizer {1e3 * r['optimizer_step_seconds']:.0f} ms ({r['optimizer']}); "
              + (f"at {r['low_res']}x{r['low_res']} {1e3 * r['low_res_step_seconds']:.0f} ms/step; "
                 if "low_res" in r else "")
              + f"training ~{r['training_seconds_estimate']:.0f} s ({r['epochs']} epochs)", flush=True)
        print("   top ops: " + ", ".join(f"{k} {100 * s:.0f}%" for k, s in r["top_ops"]), flush=True)
    results["cases"] = {**earlier, **results["cases"]}  # --only: the other cases' rows stay
    write_json(args.out, results)
    print(f"-> {args.out}")


if __name__ == "__main__":
    cli.run(main, out_flag="--out")
