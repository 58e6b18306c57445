"""Test accuracy and wall time of fashionmnist.py's default runs on the real Fashion-MNIST data.

Run:  python benchmarks/bench_fashionmnist.py [--float32] [--seeds 0 1] [--only ffn]
                                              [--data-dir ../shared/data] [--runs-dir runs]

Each model trains with its defaults (`python fashionmnist.py --model M`) in a fresh process, so
start-up, data loading, training and the final evaluation on the 10,000 test images all count.
Targets, for each seed, under the float32 reference condition (--float32: float32, 2 threads,
torch held to AVX2, as on a laptop CPU without native bfloat16), and as the machine is:
FFN >= 90.5% test accuracy within 45 s, CNN >= 93.5% within 3 minutes. Run it alone on a quiet
machine: other programs on the CPU make the times pessimistic (the load average is recorded).
--runs-dir keeps the run folders (e.g. runs/, for the report); otherwise they are temporary.
--from-runs runs/ trains nothing: it takes the figures from the same default runs made by
`python report/run_all.py --preset full` (checked against their command in runs/logs/).
Results go to benchmarks/results/fashionmnist.json (atomically; cases not rerun are kept), one
entry per model, seed and condition; the exit status is 1 on a miss.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
from benchmarks.common import add_bench_args, case_key, check, finish, from_run, run_script, verdict  # noqa: E402

TARGETS = {"ffn": (0.905, 45), "cnn": (0.935, 3 * 60)}  # (test accuracy, wall seconds)


def run_case(model, seed, data_dir, float32=False, runs_dir=None, from_runs=None) -> dict:
    argv = ["--model", model] + (["--seed", str(seed)] if seed else [])
    if from_runs:
        r = from_run("fashionmnist.py", argv, from_runs, f"fashionmnist-{model}", float32)
    else:
        out_dir = Path(runs_dir) / (f"fashionmnist-{model}" + (f"-seed{seed}" if seed else "")) if runs_dir else None
        r = run_script("fashionmnist.py", argv, data_dir, out_dir, float32)
    m = r.pop("metrics")
    return check({**r, "seed": seed, "test_accuracy": m["test_accuracy"], "parameters": m["parameters"],
                  "train_seconds": m.get("train_seconds", m["wall_seconds"]),  # earlier versions: wall_seconds
                  "epochs": m["config"]["epochs"], "device": m["device"]},
                 *TARGETS[model])


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bench_args(p, TARGETS, "fashionmnist.json")
    p.add_argument("--runs-dir", help="keep the run folders here (default: temporary)")
    args = p.parse_args(argv)
    results = {}
    for model in args.only or list(TARGETS):
        for seed in args.seeds:
            r = run_case(model, seed, args.data_dir, args.float32, args.runs_dir, args.from_runs)
            results[case_key(model, seed, args.float32)] = r
            print(f"{model} seed {seed} ({r['condition']}): test {100 * r['test_accuracy']:.2f}%  "
                  f"wall {r['wall_seconds']:.0f}s  {r['parameters']:,} parameters  ({verdict(r)})", flush=True)
    finish(args.out, results)


if __name__ == "__main__":
    cli.run(main, out_flag="--out")
