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


def run_script(script: str, argv: list, data_dir, out_dir=None) -> dict:
    """Run `python <script> <argv>` (data loading and the final test evaluation count) into
    out_dir (default: a temporary folder); its metrics.json plus wall time and load averages.
    The load average shows whether other programs shared the CPU (then wall time is pessimistic)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir or tmp)
        cmd = [sys.executable, str(ROOT / script), *argv, "--data-dir", str(Path(data_dir).resolve()),
               "--out-dir", str(out)]
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        if subprocess.run(cmd, cwd=ROOT).returncode:
            raise cli.UserError(f"python {script} {' '.join(argv)} failed (its error is above); "
                                "nothing was recorded for this case")
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
    return {"command": f"python {script} " + " ".join(argv), "metrics": metrics, "wall_seconds": round(wall, 1),
            "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}


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


def from_run(script: str, argv: list, runs_dir, step: str) -> dict:
    """The same figures as run_script, read from a finished `report/run_all.py` step instead of
    training again: its stamp runs/logs/<step>.json must say it finished ("done") with exactly
    `python <script> <argv>` (plus --out-dir/--seed/--data-dir); wall time is the stamp's, the time
    run_all measured around the whole process (with the time before an interruption, if resumed)."""
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
    return {"command": f"python {script} " + " ".join(argv), "metrics": metrics,
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
