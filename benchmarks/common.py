"""What the benchmarks share: run one script in a fresh process, time it, read its metrics.json."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import cli
import files
from training import cpu_bf16_supported

ROOT = Path(__file__).resolve().parents[1]


# The float32 reference condition: what a CPU without native bfloat16 (most laptops) does. Torch is
# held to AVX2 kernels (ATEN_CPU_CAPABILITY for its own, ONEDNN_MAX_CPU_ISA for oneDNN's
# convolutions), 2 threads, and the script is told not to use bfloat16 autocast.
FLOAT32_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2"}
FLOAT32_ARGV = ["--no-cpu-bf16"]
FLOAT32_VARS = " ".join(f"{k}={v}" for k, v in FLOAT32_ENV.items())  # as a shell command line starts with them


def condition(float32: bool) -> str:
    """The name a result carries: "float32" (the reference condition) or "native" (as the machine is:
    bfloat16 autocast where the CPU runs it natively)."""
    return "float32" if float32 else "native"


def run_script(script: str, argv: list, data_dir, out_dir=None, float32: bool = False) -> dict:
    """Run `python <script> <argv>` (data loading and the final test evaluation count) into
    out_dir (default: a temporary folder), under the float32 reference condition if asked; its
    metrics.json plus wall time and load averages. The load average shows whether other programs
    shared the CPU (then wall time is pessimistic)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir or tmp)
        cmd = [sys.executable, str(ROOT / script), *argv, *(FLOAT32_ARGV if float32 else []),
               "--data-dir", str(Path(data_dir).resolve()), "--out-dir", str(out)]
        env = {**os.environ, **(FLOAT32_ENV if float32 else {})}
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode:
            raise cli.UserError(f"python {script} {' '.join(argv)} failed (its error is above); "
                                "nothing was recorded for this case")
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
    prefix = FLOAT32_VARS + " " if float32 else ""
    return {"command": f"{prefix}python {script} " + " ".join(argv + (FLOAT32_ARGV if float32 else [])),
            "condition": condition(float32), "metrics": metrics, "wall_seconds": round(wall, 1),
            "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}


def add_bench_args(p, cases, out):
    """The options every training benchmark takes."""
    p.add_argument("--data-dir", default=cli.DEFAULT_DATA_DIR)
    p.add_argument("--only", nargs="+", choices=list(cases), help="run these cases only")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (the targets hold for each)")
    p.add_argument("--float32", action="store_true",
                   help="run under the float32 reference condition: " +
                        FLOAT32_VARS + " and --no-cpu-bf16")
    p.add_argument("--from-runs", metavar="RUNS_DIR", help="read the default runs of report/run_all.py --preset full "
                                                           "instead of training (with --float32: a run_all run "
                                                           "under that condition's variables)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results" / out))


def case_key(name: str, seed: int, float32: bool) -> str:
    """A result's key: case, seed and condition, e.g. "cnn seed0 float32"."""
    return f"{name} seed{seed} {condition(float32)}"


def check(result: dict, target_accuracy: float, target_seconds: float) -> dict:
    """The result with its targets and whether it met them (test accuracy and whole-process time)."""
    return {**result, "target_test_accuracy": target_accuracy, "target_wall_seconds": target_seconds,
            "met": result["test_accuracy"] >= target_accuracy and result["wall_seconds"] <= target_seconds}


def verdict(r: dict) -> str:
    return (f"target >= {100 * r['target_test_accuracy']:.1f}% within {r['target_wall_seconds']:.0f} s: "
            f"{'met' if r['met'] else 'MISSED'}")


def finish(path, results: dict):
    """Write the results (see write_results), say where, exit 1 if any case missed its target."""
    write_results(path, results)
    print(f"-> {path}")
    sys.exit(0 if all(r["met"] for r in results.values()) else 1)


def _strip(argv: list, flags=("--out-dir", "--seed", "--data-dir")) -> list:
    """argv without the flags (and their values) that say where, not what, a run computes."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        else:
            out.append(a)
    return out


def from_run(script: str, argv: list, runs_dir, step: str, float32: bool = False) -> dict:
    """The same figures as run_script, read from a finished `report/run_all.py` step instead of
    training again: its stamp runs/logs/<step>.json must say it finished ("done") with exactly
    `python <script> <argv>` (plus --out-dir/--seed/--data-dir); wall time is the stamp's, the time
    run_all measured around the whole process (with the time before an interruption, if resumed).
    float32: run_all ran under the reference condition (FLOAT32_ENV set around it, which makes every
    script train in float32); its runs must say they did not use bfloat16."""
    stamp_file = Path(runs_dir) / "logs" / f"{step}.json"
    wanted = f"`python {script} {' '.join(argv)}`"
    if not stamp_file.exists():
        raise cli.UserError(f"{stamp_file} not found: run `python report/run_all.py --preset full` first")
    stamp = files.read_json_or_none(stamp_file) or {}
    ran = stamp.get("argv", [])
    if stamp.get("state") != "done":
        raise cli.UserError(f"{stamp_file} is not a finished {wanted} run (state {stamp.get('state')!r}); "
                            "rerun it or drop --from-runs")
    if not ran or Path(ran[0]).name != Path(script).name or _strip(ran[1:]) != list(argv):
        raise cli.UserError(f"{stamp_file} is a finished run of another command ({' '.join(ran[1:])!r}), not "
                            f"{wanted}; rerun the step with its defaults or drop --from-runs")
    metrics_file = Path(ran[ran.index("--out-dir") + 1]) / "metrics.json"
    metrics = files.read_json_or_none(metrics_file)
    if metrics is None:
        raise cli.UserError(f"{metrics_file} is missing or unreadable; rerun the step or drop --from-runs")
    if metrics_file.stat().st_mtime > stamp_file.stat().st_mtime:  # another run wrote there since
        raise cli.UserError(f"{metrics_file} is newer than {stamp_file}, so its numbers are not that run's; "
                            "rerun the step or drop --from-runs")
    if float32 and metrics.get("cpu_bf16"):
        raise cli.UserError(f"{metrics_file} trained with bfloat16 autocast, so it is not a float32 run; run "
                            "run_all under " + FLOAT32_VARS
                            + " for --float32 --from-runs, or drop --float32")
    prefix = FLOAT32_VARS + " " if float32 else ""
    return {"command": f"{prefix}python {script} " + " ".join(argv), "condition": condition(float32), "metrics": metrics,
            "wall_seconds": stamp["seconds"], "source": str(stamp_file), "finished": stamp.get("finished"),
            "load_average_before": None, "load_average_after": None}


def write_results(path, cases: dict) -> dict:
    """Write {"cases", "earlier"} atomically, keeping the cases of earlier runs that this one did
    not measure (so `--only ffn` updates ffn alone). Each case carries when and on what machine it
    was measured; "earlier" keeps the latest figures of each case on every other CPU, so that
    measuring on one machine does not erase what was measured on another. A CPU is its model name
    and whether it runs bfloat16 natively: virtual machines may report only "AMD EPYC" for chips
    that train at 5x different speeds."""
    path = Path(path)
    old = files.read_json_or_none(path)
    old = old if isinstance(old, dict) else {}  # missing or unreadable: start afresh
    stamp, here = time.strftime("%Y-%m-%d %H:%M:%S"), machine()
    new = {k: {**v, "measured": stamp, "machine": here} for k, v in cases.items()}
    replaced = [{"case": k, **v} for k, v in old.get("cases", {}).items() if k in new]
    latest = {(e["case"], cpu_key(e["machine"])): e for e in old.get("earlier", []) + replaced}
    earlier = [e for (case, cpu), e in latest.items() if not (case in new and cpu == cpu_key(here))]
    results = {"cases": {**old.get("cases", {}), **new}, "earlier": earlier}
    files.write_json(path, results)
    return results


def cpu_key(machine: dict) -> tuple:
    return machine["cpu"], machine.get("cpu_bf16")


def machine() -> dict:
    """What the timings depend on: CPU model and count, whether it runs bfloat16 natively
    (training then uses bf16 autocast, about 2x faster), torch, threads, GPU."""
    return {"cpu": files.cpu_model(), "cpu_count": os.cpu_count(), "cpu_bf16": cpu_bf16_supported(),
            "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
