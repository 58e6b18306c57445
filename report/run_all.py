"""Run every convlens script in order, each in its own process, then build the report.

    python report/run_all.py --preset quick             # a laptop CPU: shorter training (PRESETS)
    python report/run_all.py --preset full              # the README's numbers: every script's defaults
    python report/run_all.py --preset quick --dry-run   # which steps would run, which are up to date
    python report/run_all.py --preset quick --force     # rerun every step
    python report/run_all.py --limit 128 --runs-dir /tmp/runs --report /tmp/report.pdf   # tiny: tests

Steps, in order: fashionmnist.py ffn and cnn; kernel_vis.py on the Fashion-MNIST CNN; cifar10.py
dense and gap; the batch norm x dropout ablation of both (--lr 0.1, a rate at which the nets without
batch norm train with SGD or Muon; with SGD they do not at the quick preset's 0.4, see cifar10.py); kernel_vis.py on both CIFAR-10 checkpoints; cam.py
--sanity and guided_backprop.py on both; report/dataset.py; report/mytorch_check.py; report/build.py.

Like make: a step is skipped when it finished before with the same command and the same code (a
hash of its script and every repository module it imports: editing training.py reruns every
training step), all its declared outputs exist, and none is older than its inputs (the data file,
the outputs of the steps it reads). So a rerun after an interruption resumes: finished steps are
skipped and an interrupted training continues from its last epoch (--resume), but only when the
interrupted attempt ran the same command and code; a training step that starts from scratch first
deletes its old checkpoints; --force reruns every step from scratch. A
failed step does not stop the others; only the steps that read its outputs are blocked, and the
exit status is 1. The runs folder is locked while run_all.py works in it, and a step's process
ends with run_all.py (killed or not), so a rerun never races an orphan.

Measured times: docs/experiments.md. --limit runs 16 fresh Python processes, most of whose time
goes to importing torch, scipy and matplotlib.

Writes runs/logs/<step>.log (the step's output) and <step>.json (its command and state), and
runs/run_all.json (the summary table, after every step; report/build.py takes the total time from it).
"""
import ctypes
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the convlens modules live at the repo root
import cli  # noqa: E402  (light: no torch, so planning and skipping stay instant)
import words  # noqa: E402  (report/words.py, beside this file)
import files  # noqa: E402

# Extra arguments per preset and script kind; "full" keeps every script's own defaults but the ablation's.
PRESETS = {
    "quick": {"fashionmnist": ["--epochs", "3"],
              "cifar10": ["--preset", "quick"],
              "ablation": ["--preset", "quick", "--epochs", "2"],
              "mytorch": ["--repeats", "1"]},
    # The ablation trains 4 variants per arch; "full" repeats each with 3 seeds so that an effect can be
    # told from seed-to-seed noise, and pays for the seeds by running the quick preset's 24-48-96
    # channels and 3 epochs (the report names this setting beside the final network's).
    "full": {"ablation": ["--preset", "quick", "--seeds", "3"]},
}
# --limit N (tests): every training step sees N images for one epoch and every network is tiny, so a
# step costs little more than starting Python; the numbers then mean nothing.
# Two first-layer kernels: kernel_vis.py's Gabor fits (about 0.3 s a kernel) dominate its time.
TINY_NETS = {"fashionmnist-ffn": ["--hidden", "32"],
             "fashionmnist-cnn": ["--channels", "2", "4", "--hidden", "16"],
             "cifar10-dense": ["--channels", "2", "4", "8", "--hidden", "16"],
             "cifar10-gap": ["--channels", "2", "4", "8"]}


def tiny_args(kind: str, n: int) -> list:
    limit = ["--limit", str(n), "--epochs", "1"]
    return {"fashionmnist": limit,
            "cifar10": [*limit, "--val-size", str(n), "--test-limit", str(n)],
            "ablation": [*limit, "--val-size", str(n), "--test-limit", str(n)],
            "kernels": ["--max-channels", "8", "--stats-images", "16"],
            "cam": ["--n", "4", "--sanity-n", "8", "--stats-n", "64"],
            "guided": ["--n", "4"],
            "dataset": ["--limit", str(n)],
            "mytorch": ["--repeats", "1"]}.get(kind, [])


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="quick: shorter training for a laptop CPU; full: every script's defaults")
    p.add_argument("--limit", type=cli.positive_int,
                   help="tiny mode for tests: N images, one epoch, small networks")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where every step writes")
    p.add_argument("--report", type=Path, default=Path("report/report.pdf"), help="the PDF to build")
    p.add_argument("--data-dir", default=cli.DEFAULT_DATA_DIR,
                   help="folder holding fashion_mnist.npz and cifar10.npz ($CONVLENS_DATA_DIR or ./data)")
    p.add_argument("--seed", type=cli.seed, default=0, help="passed to every script that takes one")
    p.add_argument("--author", help="your name for the report's title page (else the name in report/answers.md)")
    p.add_argument("--force", action="store_true", help="rerun every step, up to date or not")
    p.add_argument("--dry-run", "-n", action="store_true", help="list what would run, run nothing")
    args = p.parse_args(argv)
    args.runs_dir, args.report = args.runs_dir.resolve(), args.report.resolve()
    if args.runs_dir.exists() and not args.runs_dir.is_dir():
        raise cli.UserError(f"--runs-dir {args.runs_dir} is a file; pass a folder")
    if args.report.suffix != ".pdf":
        raise cli.UserError(f"--report {args.report} must be a .pdf file name")
    if not args.dry_run:  # fail now, not after an hour of training; one run_all.py per runs folder
        files.claim_out_dir(args.runs_dir)
        files.make_dirs(args.runs_dir / "logs")
        files.make_dirs(args.report.parent)
    return args


# ---- the steps -------------------------------------------------------------------------------------

@dataclass
class Step:
    name: str
    argv: list                  # after the python executable: script path, then its arguments
    outputs: list               # files the step must leave behind (Paths)
    inputs: list = field(default_factory=list)  # files it reads besides the outputs of `needs`
    needs: list = field(default_factory=list)   # steps whose outputs it reads (blocked if one fails)
    after_all: bool = False     # runs last, whatever failed, and reads every earlier step's outputs
    resumable: bool = False     # takes --resume to continue an interrupted run
    tiny: bool = False          # --limit mode: one thread per process
    key: object = None          # (Step) -> short text for the summary, read from its outputs


def plan(args) -> list:
    """Every step with its command, for args.preset / args.limit / args.runs_dir."""
    runs, data = args.runs_dir, Path(args.data_dir).resolve()
    preset = PRESETS[args.preset]

    def extra(kind, name=None):
        if args.limit:
            return tiny_args(kind, args.limit) + TINY_NETS.get(name, [])
        return preset.get(kind, [])

    def script(path, *more):
        return [str(ROOT / path), *more]

    seed, data_arg = ["--seed", str(args.seed)], ["--data-dir", str(data)]
    steps = []
    for model in ("ffn", "cnn"):
        out = runs / f"fashionmnist-{model}"
        steps.append(Step(
            f"fashionmnist-{model}",
            script("fashionmnist.py", "--model", model, "--out-dir", str(out), *seed, *data_arg,
                   *extra("fashionmnist", f"fashionmnist-{model}")),
            [out / f for f in ("model.pt", "metrics.json", "loss.png", "confusion_matrix.png", "examples.png")],
            [ROOT / "fashionmnist.py", ROOT / f"{model}.py", data / "fashion_mnist.npz"],
            resumable=True, key=key_fashion))
    steps.append(kernels_step("kernels-fashionmnist-cnn", runs / "fashionmnist-cnn", "fashionmnist-cnn",
                              seed, data_arg, extra("kernels"), script))
    for arch in ("dense", "gap"):
        out = runs / f"cifar10-{arch}"
        steps.append(Step(
            f"cifar10-{arch}",
            script("cifar10.py", "--arch", arch, "--out-dir", str(out), *seed, *data_arg,
                   *extra("cifar10", f"cifar10-{arch}")),
            [out / f for f in ("model.pt", "metrics.json", "loss.png", "architecture.txt")],
            [ROOT / "cifar10.py", ROOT / "cnn.py", data / "cifar10.npz"], resumable=True, key=key_cifar))
    for arch in ("dense", "gap"):
        out = runs / f"cifar10-{arch}-ablation"
        steps.append(Step(
            f"ablation-{arch}",
            script("cifar10.py", "--arch", arch, "--ablation", "--lr", "0.1", "--out-dir", str(out), *seed,
                   *data_arg, *extra("ablation", f"cifar10-{arch}")),
            [out / f for f in ("ablation.json", "ablation.md", "ablation.png")],
            [ROOT / "cifar10.py", ROOT / "cnn.py", data / "cifar10.npz"], resumable=True, key=key_ablation))
    for arch in ("dense", "gap"):
        steps.append(kernels_step(f"kernels-cifar10-{arch}", runs / f"cifar10-{arch}", f"cifar10-{arch}",
                                  seed, data_arg, extra("kernels"), script))
    for arch in ("dense", "gap"):
        folder, method = runs / f"cifar10-{arch}", "cam" if arch == "gap" else "gradcam"
        steps.append(Step(
            f"cam-cifar10-{arch}",
            script("cam.py", "--checkpoint", str(folder / "model.pt"), "--sanity", "--stats", *seed, *data_arg,
                   *(extra("cam") or ["--n", "4"])),  # 2 right + 2 wrong: a figure a third of a page tall
            [folder / f"{method}.png", folder / f"{method}.json", folder / "sanity.json", folder / "sanity.png",
             folder / "saliency_stats.json"],
            [ROOT / "cam.py", ROOT / "saliency.py", folder / "model.pt"], [f"cifar10-{arch}"], key=key_sanity))
    for arch in ("dense", "gap"):
        folder = runs / f"cifar10-{arch}"
        steps.append(Step(
            f"guided-backprop-cifar10-{arch}",
            script("guided_backprop.py", "--checkpoint", str(folder / "model.pt"), *seed, *data_arg,
                   *(extra("guided") or ["--n", "4"])),
            [folder / "guided_backprop.png", folder / "guided_backprop.json"],
            [ROOT / "guided_backprop.py", ROOT / "saliency.py", folder / "model.pt"], [f"cifar10-{arch}"],
            key=key_examples))
    out, trained = runs / "dataset", ("cifar10-dense", "cifar10-gap", "fashionmnist-cnn")
    checkpoints = [runs / name / "model.pt" for name in trained]  # their accuracy on near-copies vs the rest
    steps.append(Step("dataset", script("report/dataset.py", "--out-dir", str(out), *data_arg, *extra("dataset"),
                                        "--checkpoints", *map(str, checkpoints)),
                      [out / f for f in ("dataset.json", "class_balance.png", "near_duplicates.png")],
                      [ROOT / "report/dataset.py", data / "fashion_mnist.npz", data / "cifar10.npz", *checkpoints],
                      list(trained), key=key_dataset))
    out = runs / "mytorch"
    steps.append(Step("mytorch", script("report/mytorch_check.py", "--out-dir", str(out), *seed, *extra("mytorch")),
                      [out / "check.json", out / "tester_output.txt"],
                      [ROOT / "report/mytorch_check.py", ROOT / "mytorch/conv.py", ROOT / "mytorch/check.py"],
                      key=key_mytorch))
    author = ["--author", args.author] if args.author else []
    # build.py loads the draft modules by path and reads the student's answers.md: both are inputs
    drafts = sorted((ROOT / "report").glob("draft_*.py"))
    steps.append(Step("report", script("report/build.py", "--runs-dir", str(runs), "--out", str(args.report), *author),
                      [args.report], [ROOT / "report/build.py", *drafts, args.report.parent / "answers.md"],
                      after_all=True, key=key_report))
    for step in steps:
        step.tiny = bool(args.limit)
    return steps


def kernels_step(name, folder, need, seed, data_arg, more, script) -> Step:
    kernels = folder / "kernels"
    return Step(name, script("kernel_vis.py", "--checkpoint", str(folder / "model.pt"), *seed, *data_arg, *more),
                [kernels / f for f in ("kernels.png", "filtered.png", "feature_maps.png", "gabor.png", "gabor.json",
                                       "feature_stats.json")],
                [ROOT / "kernel_vis.py", folder / "model.pt"], [need], key=key_gabor)


# ---- key figures for the summary (read from the step's outputs; "" when unreadable) ---------------

def read_json(path) -> dict:
    return files.read_json_or_none(path, warn=False) or {}


def output(step, name) -> dict:
    return read_json(next(p for p in step.outputs if p.name == name))


def key_fashion(step):
    m = output(step, "metrics.json")
    return f"test {words.pct(m['test_accuracy'])}, {m['parameters']:,} parameters" if m else ""


def key_cifar(step):
    m = output(step, "metrics.json")
    return f"val {words.pct(m['val_accuracy'])}, test {words.pct(m['test_accuracy'])}" if m else ""


def key_ablation(step):
    rows = output(step, "ablation.json").get("variants", [])
    return "val " + ", ".join(f"{r['variant']} {100 * r['val_accuracy']:.1f}%" for r in rows) if rows else ""


def key_gabor(step):
    g = output(step, "gabor.json")
    if not g:
        return ""
    return (f"Gabor-like {100 * g['trained']['share_above_threshold']:.0f}% "
            f"(untrained {100 * g['untrained']['share_above_threshold']:.0f}%)")


def key_sanity(step):
    s = output(step, "sanity.json")
    if not s:
        return ""
    last = s["steps"][-1]
    return "all layers random: rho " + ", ".join(f"{m} {last[m]['mean']:.2f}" for m in s["methods"][:2])


def key_examples(step):
    ex = output(step, "guided_backprop.json").get("examples", [])
    return f"{len(ex)} images, {sum(not e['correct'] for e in ex)} wrong" if ex else ""


def key_dataset(step):
    ds = output(step, "dataset.json").get("datasets", [])
    return "; ".join(f"{d['title']}: {d['exact_duplicates']} exact, {d['near_duplicates']} near" for d in ds)


def key_mytorch(step):
    c = output(step, "check.json")
    return f"{c['passed']}/{c['total']} cases pass" if c else ""


def key_report(step):
    size = step.outputs[0].stat().st_size if step.outputs[0].exists() else 0
    return f"{size / 1e6:.1f} MB" if size else ""


def key_text(step) -> str:
    try:
        return step.key(step) if step.key else ""
    except (KeyError, IndexError, TypeError, ValueError, StopIteration):
        return ""  # an output of an older format: the summary just leaves it out


# ---- deciding and running ------------------------------------------------------------------------------

def stamp_path(runs: Path, step: Step) -> Path:
    return runs / "logs" / f"{step.name}.json"


def step_code(step: Step) -> str | None:
    """Hash of the code the step runs (its script and the repository modules it imports), or None
    for a command that is no script of ours."""
    script = Path(step.argv[0])
    return files.code_hash(script) if script.suffix == ".py" and script.is_file() else None


def why_run(step: Step, stamp: dict, rerun: set, earlier_outputs: list, force: bool) -> str | None:
    """Why `step` must run (a short reason), or None when it is up to date."""
    if force:
        return "--force"
    if stamp.get("argv") != step.argv:
        return "never finished with this command" if stamp else "never ran"
    if stamp.get("code") != step_code(step):
        return "its code changed"
    if stamp.get("state") != "done":
        return f"last attempt {stamp.get('state')}"
    missing = [p for p in step.outputs if not p.exists()]
    if missing:
        return f"{missing[0].name} is missing"
    finished = stamp.get("finished_at", math.inf)  # another command may have written there since
    rewritten = [p for p in step.outputs if p.stat().st_mtime > finished]
    if rewritten:
        return f"{rewritten[0].name} was rewritten after this step ran"
    upstream = [n for n in step.needs if n in rerun] or (sorted(rerun) if step.after_all else [])
    if upstream:
        return f"{upstream[0]} reruns"
    oldest = min(p.stat().st_mtime for p in step.outputs)
    newer = [p for p in [*step.inputs, *earlier_outputs] if p.exists() and p.stat().st_mtime > oldest]
    return f"{newer[0].name} is newer than its outputs" if newer else None


def command(step: Step, stamp: dict, force: bool = False) -> list:
    """The step's command; + --resume when its last attempt with this very command and code was
    cut off (never with --force: that means from scratch)."""
    resume = (step.resumable and not force and stamp.get("state") == "running" and stamp.get("argv") == step.argv
              and stamp.get("code") == step_code(step))
    return [sys.executable, *step.argv, *(["--resume"] if resume else [])]


def child_env(tiny: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    env.setdefault("TQDM_MININTERVAL", "10")  # progress bars in a log file: a line every 10 s is plenty
    if tiny:  # tiny tensors gain nothing from threads; on a busy 2-core CPU 2 threads made cam.py 4x slower
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Progress:
    """One line per step: '[i/n] name', live elapsed seconds while it runs on a terminal."""

    def __init__(self, n: int, t0: float):
        self.n, self.t0, self.live = n, t0, sys.stdout.isatty()

    def tick(self, i, name, started):
        if self.live:
            print(f"\r\x1b[K[{i:>2}/{self.n}] {name:<32} running {time.perf_counter() - started:6.0f}s "
                  f"(total {fmt_time(time.perf_counter() - self.t0)})", end="", flush=True)

    def done(self, i, name, row):
        end = "\r\x1b[K" if self.live else ""  # over the live line
        print(f"{end}[{i:>2}/{self.n}] {name:<32} {row['status']:<8} {row['seconds']:7.1f}s "
              f"(total {fmt_time(time.perf_counter() - self.t0)})  {row['key'] or row.get('reason', '')}",
              flush=True)


def fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def run_step(step: Step, cmd: list, log: Path, on_tick) -> int:
    """Run cmd with stdout and stderr into `log`; the exit status."""
    files.make_dirs(log.parent)
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=child_env(step.tiny),
                                preexec_fn=die_with_parent if sys.platform == "linux" else None)
        try:
            while proc.poll() is None:
                on_tick()
                time.sleep(0.2)
        except KeyboardInterrupt:  # a Ctrl-C reached the child too; a SIGTERM (or a second Ctrl-C) may not have
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()  # it stops with its files whole (cli.run's SIGTERM handler)
                proc.wait()
            raise
    return proc.returncode


def die_with_parent():
    """In the child, before it runs: ask Linux to send it SIGTERM when run_all.py dies, however
    (prctl PR_SET_PDEATHSIG), so a killed run_all.py leaves no training behind to race its rerun;
    the child's SIGTERM handler (cli.run) stops it with its files whole."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def execute(steps: list, runs: Path, force=False, dry_run=False, summary=None) -> list:
    """Run the steps in order (make-like skipping, failures block only their dependents); return the
    summary rows. summary(rows) is called after every step (to write run_all.json)."""
    t0, rows, rerun, failed, outputs = time.perf_counter(), [], set(), set(), []
    progress = Progress(len(steps), t0)
    for i, step in enumerate(steps, 1):
        stamp_file = stamp_path(runs, step)
        stamp = read_json(stamp_file)
        row = {"step": step.name, "status": "", "seconds": 0.0, "key": "", "log": str(runs / "logs" / f"{step.name}.log"),
               "command": " ".join(step.argv)}
        blocked = [n for n in step.needs if n in failed]
        reason = None if blocked else why_run(step, stamp, rerun, outputs if step.after_all else [], force)
        if blocked:
            row.update(status="blocked", reason=f"needs {blocked[0]}, which failed")
            failed.add(step.name)
        elif reason is None:
            row.update(status="skipped", made_seconds=stamp.get("seconds", 0.0), key=key_text(step),
                       reason="up to date")
        elif dry_run:
            row.update(status="would run", reason=reason)
            rerun.add(step.name)
        else:
            started = time.perf_counter()
            row.update(run_one(step, stamp, stamp_file, row["log"], started,
                               lambda: progress.tick(i, step.name, started), force))
            (failed if row["status"] == "failed" else rerun).add(step.name)
        outputs += step.outputs
        rows.append(row)
        if not dry_run:  # a dry run prints just the table
            progress.done(i, step.name, row)
        if summary and not dry_run:
            summary(rows, steps[i:])
    return rows


def run_one(step, stamp, stamp_file, log, started, on_tick, force=False) -> dict:
    """Run one step, keeping its stamp (command, code hash, state): 'running' before (so a cut-off
    run resumes), then 'done' or 'failed'."""
    cmd, source = command(step, stamp, force), step_code(step)
    if step.resumable and "--resume" not in cmd:
        remove_checkpoints(step)
    prior = stamp.get("seconds", 0.0) if "--resume" in cmd else 0.0  # time already spent before the cut
    files.write_json(stamp_file, {"argv": step.argv, "code": source, "state": "running", "seconds": prior})
    try:
        code = run_step(step, cmd, Path(log), on_tick)
    except KeyboardInterrupt:
        files.write_json(stamp_file, {"argv": step.argv, "code": source, "state": "running",
                                      "seconds": round(prior + time.perf_counter() - started, 1)})
        raise
    seconds = round(time.perf_counter() - started, 1)
    missing = [p.name for p in step.outputs if not p.exists()]
    ok = code == 0 and not missing
    reason = "" if ok else (f"exit status {code}{last_error(Path(log))}" if code
                            else f"did not write {', '.join(missing)}")
    files.write_json(stamp_file, {"argv": step.argv, "code": source, "state": "done" if ok else "failed",
                                "seconds": round(prior + seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "finished_at": time.time()})
    return {"status": "ran" if ok else "failed", "seconds": seconds, "made_seconds": round(prior + seconds, 1),
            "key": key_text(step) if ok else "", "reason": reason}


def keep_runs_made_by_hand(steps: list, runs: Path) -> list:
    """Move aside each training step's folder that holds a run made outside run_all.py (the step
    never ran here, or its outputs were rewritten since), e.g. `python fashionmnist.py --model cnn`
    before the report: the step would delete and overwrite it. Returns [(folder, where it went)]."""
    moved = []
    for step in steps:
        folder = step.outputs[0].parent
        made = any((folder / f).exists() for f in ("model.pt", "metrics.json", "ablation.json"))
        if not (step.resumable and made):
            continue
        stamp = read_json(stamp_path(runs, step))
        finished = stamp.get("finished_at", math.inf)
        if stamp and not any(p.exists() and p.stat().st_mtime > finished for p in step.outputs):
            continue
        target = free_name(folder.with_name(folder.name + ".by-hand"))
        folder.rename(target)
        moved.append((folder, target))
    return moved


def free_name(path: Path) -> Path:
    """path, or path-2, path-3, ... whichever does not exist yet."""
    return next(p for p in (path.with_name(f"{path.name}-{i}") if i > 1 else path for i in itertools.count(1))
                if not p.exists())


def remove_checkpoints(step: Step):
    """Delete the model.pt files in a training step's folder before it starts from scratch, so no
    later --resume can adopt a checkpoint of an earlier command, earlier code or a finished run
    (the step would rewrite them after its first epoch anyway)."""
    for path in step.outputs[0].parent.glob("**/model.pt"):
        if path.is_file():
            path.unlink()


def last_error(log: Path) -> str:
    """': <the script's one-line error>' from the end of its log, or '' (then read the log)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line for line in reversed(lines) if line.startswith("error:")]
    return f": {found[0][len('error:'):].strip()}" if found else ""


# ---- summary -----------------------------------------------------------------------------------------

def summary_json(args, rows, pending) -> dict:
    made = [r.get("made_seconds", 0.0) for r in rows if r["status"] in ("ran", "skipped")]
    return {"preset": args.preset, "limit": args.limit, "seed": args.seed, "data_dir": str(args.data_dir),
            "runs_dir": str(args.runs_dir),
            "total_seconds": round(sum(made), 1),  # compute time of the outputs now in runs/, skipped steps included
            "this_run_seconds": round(sum(r["seconds"] for r in rows), 1),
            "steps": rows + [{"step": s.name, "status": "pending"} for s in pending],
            "failures": [r["step"] for r in rows if r["status"] in ("failed", "blocked")]}


def table(rows) -> str:
    lines = [f"{'step':<32} {'status':<9} {'seconds':>8}  key figure", "-" * 90]
    lines += [f"{r['step']:<32} {r['status']:<9} {r['seconds']:8.1f}  {r['key'] or r.get('reason', '')}"
              for r in rows]
    return "\n".join(lines)


def check_data(data_dir):
    """Load (or download) both datasets once, in a child process (torch stays out of this one), so a
    missing data folder stops the run at once with the loader's own one-line error."""
    code = ("import sys, cli, data\n"
            "def load():\n"
            "    for name in ('fashion_mnist', 'cifar10'):\n"
            "        data.load_dataset(name, sys.argv[1])\n"
            "cli.run(load)")
    proc = subprocess.run([sys.executable, "-c", code, str(data_dir)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
        raise cli.UserError(f"the data is not ready: {lines[-1].removeprefix('error: ')}")


def main(argv=None):
    args = parse_args(argv)
    steps = plan(args)
    if not args.dry_run:
        check_data(args.data_dir)
    if not args.dry_run:
        for folder, target in keep_runs_made_by_hand(steps, args.runs_dir):
            print(f"kept {folder}, a run made outside run_all.py, as {target} (the report trains its own)")
    summary_file = args.runs_dir / "run_all.json"
    write = lambda rows, pending: files.write_json(summary_file, summary_json(args, rows, pending))
    mode = f"--limit {args.limit}" if args.limit else f"--preset {args.preset}"
    print(f"{len(steps)} steps, {mode}, into {args.runs_dir}" + (" (dry run)" if args.dry_run else ""))
    rows = execute(steps, args.runs_dir, args.force, args.dry_run, write)
    print("\n" + table(rows))
    if args.dry_run:
        return
    total = summary_json(args, rows, [])
    print(f"\ncompute time of these results: {fmt_time(total['total_seconds'])} "
          f"(this run: {fmt_time(total['this_run_seconds'])}); summary -> {summary_file}")
    if total["failures"]:
        first = next(r for r in rows if r["status"] == "failed")
        print(f"error: {len(total['failures'])} step(s) did not finish: {', '.join(total['failures'])}. "
              f"First failure: {first['step']} ({first.get('reason')}; log {first['log']})", file=sys.stderr)
        sys.exit(1)
    print(f"report -> {args.report}")


if __name__ == "__main__":
    cli.run(main, out_flag="--runs-dir or --report")
