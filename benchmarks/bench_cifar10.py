"""Accuracy and wall time of cifar10.py's default runs on the real CIFAR-10 data.

Run:  python benchmarks/bench_cifar10.py [--data-dir data] [--only gap gap-quick]
                                         [--out benchmarks/results/cifar10.json]

Each case runs `python cifar10.py ...` in a fresh process (so data loading and the final
evaluation count) into a temporary folder, and reads its metrics.json; with --from-runs runs/ it
trains nothing and reads the default runs (dense, gap) of `python report/run_all.py --preset full`,
checked against their command in runs/logs/ (`--from-runs runs/quick --only dense-quick gap-quick`
reads those of `run_all.py --preset quick --runs-dir runs/quick`). Targets: on a 2-core
CPU each architecture's default run >= 85% test accuracy within 20 minutes of wall time (in
float32 too), and `--preset quick` >= 75% within 5 minutes; `--preset large` is held to the same
85% / 20 minutes, which it meets only on CPUs that run bfloat16 natively, and runs only when
named with --only. On one CUDA GPU (`--preset gpu`) the GAP
network >= 93% within 60 s (reported as a case only when a GPU is present; its recipe reached 88.5%
when run to the end on a CPU, so it is expected to miss: docs/experiments.md). Wall times taken while other
programs share the CPU are pessimistic: results record the load average before and after, and
the process's CPU seconds. Results are written atomically (cases not rerun are kept); the exit status is 1 on a miss.
"""
import sys
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
from benchmarks.common import from_run, run_script, write_results  # noqa: E402

class Case(NamedTuple):
    argv: list            # cifar10.py arguments
    target_accuracy: float
    target_seconds: int   # wall time of the whole process
    cuda: bool = False    # needs a CUDA GPU (skipped without one)
    by_default: bool = True  # run when no --only names it


CASES = {
    "dense": Case(["--arch", "dense"], 0.85, 20 * 60),
    "gap": Case(["--arch", "gap"], 0.85, 20 * 60),
    "gap-quick": Case(["--arch", "gap", "--preset", "quick"], 0.75, 5 * 60),
    "dense-quick": Case(["--arch", "dense", "--preset", "quick"], 0.75, 5 * 60),
    "gap-large": Case(["--arch", "gap", "--preset", "large"], 0.85, 20 * 60, by_default=False),
    "dense-large": Case(["--arch", "dense", "--preset", "large"], 0.85, 20 * 60, by_default=False),
    "gap-gpu": Case(["--arch", "gap", "--preset", "gpu"], 0.93, 60, cuda=True),
}


def run_case(name, data_dir, from_runs=None) -> dict:
    argv, target_acc, target_s = CASES[name].argv, CASES[name].target_accuracy, CASES[name].target_seconds
    if from_runs:
        r = from_run("cifar10.py", argv, from_runs, f"cifar10-{name.split('-')[0]}")  # run_all's step name
    else:
        r = run_script("cifar10.py", argv, data_dir)
    m = r.pop("metrics")
    return {**r, "train_seconds": m["train_seconds"], "process_cpu_seconds": m.get("process_cpu_seconds"),
            "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "test_accuracy_tta": m["test_accuracy_tta"], "parameters": m["parameters"],
            "epochs": m["epochs"], "device": m["device"], "cpu_bf16": m["cpu_bf16"],
            "target_test_accuracy": target_acc, "target_wall_seconds": target_s,
            "met": m["test_accuracy"] >= target_acc and r["wall_seconds"] <= target_s}


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=cli.DEFAULT_DATA_DIR)
    p.add_argument("--only", nargs="+", choices=list(CASES), help="run these cases only")
    p.add_argument("--from-runs", metavar="RUNS_DIR",
                   help="read the dense and gap runs of report/run_all.py --preset full instead of training")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/cifar10.json"))
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
        results[name] = r = run_case(name, args.data_dir, args.from_runs)
        print(f"{name:12s} test {100 * r['test_accuracy']:.2f}% (TTA {100 * r['test_accuracy_tta']:.2f}%)  "
              f"val {100 * r['val_accuracy']:.2f}%  wall {r['wall_seconds']:.0f}s  "
              f"(target >= {100 * r['target_test_accuracy']:.0f}% within {r['target_wall_seconds']}s: "
              f"{'met' if r['met'] else 'MISSED'})", flush=True)
    write_results(args.out, results)
    print(f"-> {args.out}")
    sys.exit(0 if all(r["met"] for r in results.values()) else 1)


if __name__ == "__main__":
    cli.run(main)
