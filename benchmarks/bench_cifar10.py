"""Accuracy and wall time of cifar10.py's default runs on the real CIFAR-10 data.

Run:  python benchmarks/bench_cifar10.py [--float32] [--seeds 0 1] [--only gap gap-quick]
                                         [--data-dir data]

Each case runs `python cifar10.py ...` in a fresh process (so start-up, data loading and the
final evaluation count) into a temporary folder, and reads its metrics.json; with --from-runs
runs/ it trains nothing and reads the default runs (dense, gap) of `python report/run_all.py
--preset full`, checked against their command in runs/logs/ (`--from-runs runs/quick --only
dense-quick gap-quick` reads those of `run_all.py --preset quick --runs-dir runs/quick`).
Targets, for each seed, under the float32 reference condition (--float32: float32, 2 threads,
torch held to AVX2, as on a laptop CPU without native bfloat16), and as the machine is: each
architecture's default run >= 85% test accuracy within 6 minutes, `--preset quick` >= 75% within
90 s. `--preset large` (85%, 20 minutes) runs only when named with --only. On one CUDA GPU
(`--preset gpu`) the GAP network >= 93% within 60 s (a case only when a GPU is present). Run it
alone on a quiet machine: results record the load average before and after, and the process's
CPU seconds. Results are written atomically, one entry per case, seed and condition (cases not
rerun are kept); the exit status is 1 on a miss.
"""
import sys
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
from training import TrainConfig  # noqa: E402
from benchmarks.common import add_bench_args, case_key, check, finish, from_run, run_script, verdict  # noqa: E402

class Case(NamedTuple):
    argv: list            # cifar10.py arguments
    target_accuracy: float
    target_seconds: int   # wall time of the whole process
    cuda: bool = False    # needs a CUDA GPU (skipped without one)
    by_default: bool = True  # run when no --only names it


CASES = {
    "dense": Case(["--arch", "dense"], 0.85, 6 * 60),
    "gap": Case(["--arch", "gap"], 0.85, 6 * 60),
    "gap-quick": Case(["--arch", "gap", "--preset", "quick"], 0.75, 90),
    "dense-quick": Case(["--arch", "dense", "--preset", "quick"], 0.75, 90),
    "gap-large": Case(["--arch", "gap", "--preset", "large"], 0.85, 20 * 60, by_default=False),
    "dense-large": Case(["--arch", "dense", "--preset", "large"], 0.85, 20 * 60, by_default=False),
    "gap-gpu": Case(["--arch", "gap", "--preset", "gpu"], 0.93, 60, cuda=True),
}


def low_res_epochs(metrics: dict) -> int:
    """Epochs trained on downsampled images (progressive resizing): as the run recorded them, or,
    for a run from before metrics.json had them, as TrainConfig counts them from its config."""
    if "low_res_epochs" in metrics:
        return metrics["low_res_epochs"]
    cfg = metrics.get("config") or {}
    return TrainConfig(epochs=metrics["epochs"], low_res=cfg.get("low_res") or 0,
                       low_res_fraction=cfg.get("low_res_fraction") or 0).low_res_epochs


def run_case(name, seed, data_dir, float32=False, from_runs=None) -> dict:
    case = CASES[name]
    argv = case.argv + (["--seed", str(seed)] if seed else [])
    if from_runs:
        r = from_run("cifar10.py", argv, from_runs, f"cifar10-{name.split('-')[0]}", float32)  # run_all's step name
    else:
        r = run_script("cifar10.py", argv, data_dir, float32=float32)
    m = r.pop("metrics")
    return check({**r, "seed": seed, "train_seconds": m["train_seconds"],
                  "process_cpu_seconds": m.get("process_cpu_seconds"), "val_accuracy": m["val_accuracy"],
                  "val_accuracy_plain": m.get("val_accuracy_plain"),
                  "test_accuracy": m["test_accuracy"], "test_accuracy_tta": m["test_accuracy_tta"],
                  "test_accuracy_plain": m.get("test_accuracy_plain"), "tta": m.get("tta", False),
                  "parameters": m["parameters"], "epochs": m["epochs"], "low_res_epochs": low_res_epochs(m),
                  "device": m["device"],
                  "cpu_bf16": m["cpu_bf16"]}, case.target_accuracy, case.target_seconds)


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bench_args(p, CASES, "cifar10.json")
    args = p.parse_args(argv)
    names = args.only or [n for n, case in CASES.items()
                          if case.by_default and (not case.cuda or torch.cuda.is_available())]
    if args.from_runs and not args.only:  # run_all --preset full makes these; --preset quick: --only *-quick
        names = ["dense", "gap"]
    results = {}
    for name in names:
        if CASES[name].cuda and not torch.cuda.is_available():
            print(f"{name}: skipped (no CUDA GPU)")
            continue
        for seed in args.seeds:
            r = run_case(name, seed, args.data_dir, args.float32, args.from_runs)
            results[case_key(name, seed, args.float32)] = r
            rule = "flip-averaged; plain" if r["tta"] else "plain; flip-averaged"
            other = r["test_accuracy_plain" if r["tta"] else "test_accuracy_tta"]
            print(f"{name} seed {seed} ({r['condition']}): test {100 * r['test_accuracy']:.2f}% "
                  f"({rule} {100 * other:.2f}%)  val {100 * r['val_accuracy']:.2f}%  "
                  f"wall {r['wall_seconds']:.0f}s  ({verdict(r)})", flush=True)
    finish(args.out, results)


if __name__ == "__main__":
    cli.run(main, out_flag="--out")
