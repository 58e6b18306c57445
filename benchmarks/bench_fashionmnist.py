"""Test accuracy and wall time of fashionmnist.py's default runs on the real Fashion-MNIST data.

Run:  python benchmarks/bench_fashionmnist.py [--data-dir ../shared/data] [--only ffn]
                                              [--runs-dir runs] [--out benchmarks/results/fashionmnist.json]

Each model trains with its defaults (`python fashionmnist.py --model M`) in a fresh process, so
data loading, training and the final evaluation on the 10,000 test images all count. Targets on
a 2-core CPU: FFN >= 90.5% test accuracy within 2 minutes, CNN >= 93.5% within 10 minutes.
--runs-dir keeps the run folders (e.g. runs/, for the report); otherwise they are temporary.
--from-runs runs/ trains nothing: it takes the figures from the same default runs made by
`python report/run_all.py --preset full` (checked against their command in runs/logs/).
Results are written atomically (cases not rerun are kept); the exit status is 1 on a miss.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
from benchmarks.common import from_run, run_script, write_results  # noqa: E402

TARGETS = {"ffn": (0.905, 2 * 60), "cnn": (0.935, 10 * 60)}  # (test accuracy, wall seconds)


def run_case(model, data_dir, runs_dir=None, from_runs=None) -> dict:
    target_acc, target_s = TARGETS[model]
    if from_runs:
        r = from_run("fashionmnist.py", ["--model", model], from_runs, f"fashionmnist-{model}")
    else:
        out_dir = Path(runs_dir) / f"fashionmnist-{model}" if runs_dir else None
        r = run_script("fashionmnist.py", ["--model", model], data_dir, out_dir)
    m = r.pop("metrics")
    return {**r, "test_accuracy": m["test_accuracy"], "parameters": m["parameters"],
            "train_seconds": m["wall_seconds"], "epochs": m["config"]["epochs"], "device": m["device"],
            "target_test_accuracy": target_acc, "target_wall_seconds": target_s,
            "met": m["test_accuracy"] >= target_acc and r["wall_seconds"] <= target_s}


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=cli.DEFAULT_DATA_DIR)
    p.add_argument("--only", nargs="+", choices=list(TARGETS), help="run these models only")
    p.add_argument("--runs-dir", help="keep the run folders here (default: temporary)")
    p.add_argument("--from-runs", metavar="RUNS_DIR", help="read the runs of report/run_all.py --preset full")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/fashionmnist.json"))
    args = p.parse_args(argv)
    results = {}
    for model in args.only or list(TARGETS):
        results[model] = r = run_case(model, args.data_dir, args.runs_dir, args.from_runs)
        print(f"{model}: test {100 * r['test_accuracy']:.2f}%  wall {r['wall_seconds']:.0f}s  "
              f"{r['parameters']:,} parameters  (target >= {100 * r['target_test_accuracy']:.1f}% within "
              f"{r['target_wall_seconds']}s: {'met' if r['met'] else 'MISSED'})", flush=True)
    write_results(args.out, results)
    print(f"-> {args.out}")
    sys.exit(0 if all(r["met"] for r in results.values()) else 1)


if __name__ == "__main__":
    cli.run(main)
