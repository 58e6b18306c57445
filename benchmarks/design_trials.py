"""The CIFAR-10 design trials: list them, or rerun one and record what it measures.

    python benchmarks/design_trials.py --list                      # every trial, its validation accuracy, kept or not
    python benchmarks/design_trials.py --run gap-check-no-residual --dry-run   # the commands it would run
    python benchmarks/design_trials.py --run gap-check-no-residual [--data-dir DIR]

benchmarks/results/design_trials.json (--file) holds each trial that chose a default of cifar10.py:
what changed, the command, its seeds, validation and test accuracy per seed (plain, so that trials
from before flip TTA compare; val_accuracy_tta and test_accuracy_tta beside them), time, parameters, the
machine and date of the measurement, and what was decided and why (its header field says how to
read it). --run runs the trial's command once per seed, with --seed and --out-dir (a temporary
folder) and --data-dir added, and replaces that entry's runs, parameters, machine, precision and
date with what it measured; everything else in the file stays. The file is written atomically.
report/draft_design.py turns the trials into the report's account of how each design was reached.
"""
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
import files  # noqa: E402
from benchmarks.common import machine  # noqa: E402

TRIALS = ROOT / "benchmarks" / "results" / "design_trials.json"


def read_trials(path) -> dict:
    trials = files.read_json_or_none(path, warn=False)
    if not isinstance(trials, dict) or not isinstance(trials.get("trials"), list):
        raise cli.UserError(f"{path} is missing or not a trials file (a JSON object with a 'trials' list)")
    return trials


def find(trials: dict, name: str) -> dict:
    for trial in trials["trials"]:
        if trial["name"] == name:
            return trial
    raise cli.UserError(f"no trial named {name!r} in the file; `--list` shows the names")


def split_command(command: str) -> tuple[dict, list]:
    """'[VAR=value ...] python script.py args' -> ({VAR: value}, [script.py, args...])."""
    words = shlex.split(command)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if not words or words[0] not in ("python", "python3"):
        raise cli.UserError(f"cannot rerun {command!r}: a trial's command must be `python <script> ...`")
    return env, words[1:]


def commands(trial: dict, data_dir, out_dir) -> list[tuple[dict, list]]:
    """(extra environment, argv) of each seed's run."""
    if not trial.get("command"):
        raise cli.UserError(f"trial {trial['name']!r} has no command to rerun ({trial.get('rerunnable', 'none recorded')})")
    env, argv = split_command(trial["command"])
    return [(env, [sys.executable, *argv, "--seed", str(seed), "--data-dir", str(data_dir),
                   "--out-dir", str(Path(out_dir) / f"seed{seed}")]) for seed in trial["seeds"]]


def seconds(timing: str, metrics: dict, wall: float) -> float:
    if timing == "train":
        return round(metrics.get("train_seconds", metrics.get("wall_seconds", wall)), 1)
    if timing == "wall_per_epoch":
        return round(wall / metrics["epochs"], 1)
    return round(wall, 1)


def run_command(env: dict, argv: list) -> int:
    """Run one trial command in a fresh process (its start-up and data loading count in wall time)."""
    return subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}).returncode


def rerun(trial: dict, data_dir) -> dict:
    """Run every seed of the trial; the entry's new measured fields."""
    runs, parameters, precision = [], None, None
    with tempfile.TemporaryDirectory() as tmp:
        for (env, argv), seed in zip(commands(trial, data_dir, tmp), trial["seeds"]):
            print("$", *(f"{k}={v}" for k, v in env.items()), "python", shlex.join(argv[1:]), flush=True)
            t0 = time.perf_counter()
            if run_command(env, argv):
                raise cli.UserError(f"trial {trial['name']!r}, seed {seed} failed (its error is above); "
                                    "nothing was recorded")
            wall = time.perf_counter() - t0
            m = json.loads((Path(argv[-1]) / "metrics.json").read_text())
            plain = lambda split: m.get(f"{split}_accuracy_plain", m.get(f"{split}_accuracy"))  # noqa: E731
            runs.append({"seed": seed, "val_accuracy": plain("val"), "test_accuracy": plain("test"),
                         "seconds": seconds(trial.get("timing", "train"), m, wall)}
                        | {k: m[k] for k in ("val_accuracy_tta", "test_accuracy_tta") if k in m})
            parameters = m.get("parameters")
            precision = "bfloat16 autocast" if m.get("cpu_bf16") or "cuda" in str(m.get("device")) else "float32"
    return {"runs": runs, "parameters": parameters, "precision": precision, "machine": machine(),
            "measured": datetime.date.today().isoformat()}


def update(path, name: str, data_dir) -> dict:
    """Rerun trial `name` and write its new measurements into the file (the rest unchanged)."""
    trials = read_trials(path)
    measured = rerun(find(trials, name), data_dir)
    trials = read_trials(path)  # as it is now, should it have changed during the run
    trial = find(trials, name)
    trial.update(measured)
    for stale in ("seconds_range", "conditions"):  # described the recorded run, not this one
        trial.pop(stale, None)
    files.write_json(path, trials)
    return trial


def percent(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def listing(trials: dict) -> list[str]:
    lines = [f"{'name':28} {'arch':5} {'val % plain':>13} {'flip-averaged':>13} {'decision':10} change"]
    for t in trials["trials"]:
        val = " / ".join(percent(r["val_accuracy"]) for r in t["runs"])
        flip = " / ".join(percent(r.get("val_accuracy_tta")) for r in t["runs"]) if any(
            r.get("val_accuracy_tta") for r in t["runs"]) else ""
        lines.append(f"{t['name']:28} {t['arch']:5} {val:>13} {flip:>13} {t['decision']:10} {t['change']}")
    return lines


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="print every trial")
    what.add_argument("--run", metavar="NAME", help="rerun this trial and record its measurements")
    p.add_argument("--dry-run", action="store_true", help="with --run: print the commands, run and change nothing")
    p.add_argument("--file", type=Path, default=TRIALS, help="the trials file")
    p.add_argument("--data-dir", default=cli.DEFAULT_DATA_DIR, help="passed to each run")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(listing(read_trials(args.file))))
    elif args.dry_run:
        for env, cmd in commands(find(read_trials(args.file), args.run), args.data_dir, "<temporary folder>"):
            print(" ".join([*(f"{k}={v}" for k, v in env.items()), "python", *map(shlex.quote, cmd[1:])]))
    else:
        trial = update(args.file, args.run, args.data_dir)
        print(f"{trial['name']}: validation accuracy {' / '.join(percent(r['val_accuracy']) for r in trial['runs'])}% "
              f"-> {args.file}")


if __name__ == "__main__":
    cli.run(main, out_flag="--file")
