"""Small helpers every convlens script shares: one-line user errors (and one-line messages for
interruptions and disk errors), and the common command-line arguments (--seed, --data-dir,
--out-dir). File writing lives in files.py.

Import it first, before torch: from then on Ctrl-C or SIGTERM while the script is still
importing its libraries ends it with one line instead of a traceback. It also notes when the
process started (STARTED), for --time-budget."""
import os
import signal
import sys
import time

STARTED = time.perf_counter()  # every script imports cli first: about when the process started

_in_run = False


def _on_signal(signum, frame):
    """SIGINT/SIGTERM: inside run(), a KeyboardInterrupt (so atomic writes clean up and run() says
    one line); before it, while the script still imports its libraries, one line and exit."""
    if _in_run:
        raise KeyboardInterrupt
    print("\ninterrupted while starting; nothing was written", file=sys.stderr, flush=True)
    # os._exit, not sys.exit: a library being imported may catch SystemExit in a bare `except:`
    # and carry on (the script then trained on); before run() nothing is open to clean up.
    os._exit(128 + signum)


def _guard_startup():
    """Install _on_signal when a convlens script (a file of this repository) is the program: not
    under pytest or in someone else's program that imports these modules."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        return
    root, main_file = os.path.dirname(os.path.realpath(__file__)), os.path.realpath(main_file)
    if main_file.startswith(root + os.sep) and "tests" not in main_file[len(root):].split(os.sep):
        _install(_on_signal)


def _install(handler) -> dict:
    """handler for SIGINT and SIGTERM, except where the signal is ignored (nohup, a background job
    of a script): that choice of whoever started us stands. Returns the handlers it replaced."""
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(sig) is not signal.SIG_IGN}


_guard_startup()

import argparse  # noqa: E402  (after the guard above, so Ctrl-C while these load is one line too)
import errno  # noqa: E402
import hashlib  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

_resumable = False  # set when the script takes --resume (add_training_args)

# The shared offline copy used in development and CI; users download through torchvision.
DEFAULT_DATA_DIR = os.environ.get("CONVLENS_DATA_DIR", "data")


class UserError(Exception):
    """A problem the user can fix (bad argument, missing data, foreign checkpoint).

    Scripts print its message as one line and exit with status 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `<script>: error: <message>; see --help` (exit status 2),
    without the usage block argparse prints first."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the description's line breaks and shows each option's default, except where
    there is none to show: None (the script's DEFAULTS table decides) and on/off flags."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def add_common_args(parser: argparse.ArgumentParser, out_dir: str | None = None):
    parser.add_argument("--seed", type=seed, default=0, help="random seed (same seed, same device: same numbers)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder holding fashion_mnist.npz / cifar10.npz, or where to download them "
                             "(default: $CONVLENS_DATA_DIR if set, else ./data; here %(default)s)")
    parser.add_argument("--out-dir", default=out_dir, help="where results and figures go")
    return parser


def add_training_args(parser: argparse.ArgumentParser, batch_help: str = "images per step"):
    """The training options fashionmnist.py and cifar10.py share; their defaults (None here) come
    from each script's DEFAULTS table, because good values depend on the model."""
    global _resumable
    _resumable = True
    t = parser.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int)
    t.add_argument("--batch-size", type=positive_int, help=batch_help)
    t.add_argument("--lr", type=finite_float, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--optimizer", choices=["sgd", "adamw", "muon"],
                   help="muon: Muon (orthogonalized momentum) on the conv filters, Nesterov SGD on the rest")
    t.add_argument("--muon-lr", type=finite_float, help="peak learning rate of the conv filters under --optimizer muon")
    t.add_argument("--weight-decay", type=finite_float)
    t.add_argument("--label-smoothing", type=finite_float)
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, help="random horizontal flips")
    t.add_argument("--crop", type=int, help="random shifts of up to N pixels")
    t.add_argument("--limit", type=positive_int, help="train on the first N training images (quick tests)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's model.pt")
    t.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    t.add_argument("--cpu-bf16", action=argparse.BooleanOptionalAction,
                   help="bfloat16 autocast on the CPU (default: on where the CPU has native bfloat16, "
                        "AVX512-BF16/AMX); CUDA always trains in bfloat16")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="NHWC memory layout for convolutions (default: on)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on a GPU)")
    t.add_argument("--time-budget", type=positive_seconds, metavar="SECONDS",
                   help="finish the whole run within about SECONDS of wall time: time a few training steps "
                        "first, then train as many epochs as fit (instead of --epochs)")
    return t


def seconds_since_start() -> float:
    """Wall time since this process imported cli (its start, for --time-budget)."""
    return time.perf_counter() - STARTED


def check_training_args(parser: argparse.ArgumentParser, args):
    """Range checks of the shared training options, after the script's DEFAULTS are filled in."""
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    for key in ("lr", "muon_lr"):
        if getattr(args, key, None) is not None and not getattr(args, key) > 0:
            parser.error(f"--{key.replace('_', '-')} must be positive, got {getattr(args, key)}")
    for key in ("crop", "weight_decay"):
        if getattr(args, key) < 0:
            parser.error(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}")
    if not 0 <= args.label_smoothing < 1:
        parser.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if getattr(args, "time_budget", None) is not None:
        check_time_budget(parser, args)


def check_time_budget(parser: argparse.ArgumentParser, args):
    """--time-budget chooses the epochs of one training run in one process, so it refuses an
    explicit --epochs (the DEFAULTS table's is overridden), --resume (a resumed run keeps the
    schedule it saved), --ablation (several runs) and torchrun with several processes."""
    if "epochs" in getattr(args, "_given", ()):
        parser.error("--time-budget and --epochs conflict (the budget chooses the epochs); give one of them")
    if args.resume:
        parser.error("--time-budget and --resume conflict (a resumed run keeps its saved schedule); resume "
                     "with --epochs N instead, N the epochs its first run chose (its lines 'epoch k/N')")
    if getattr(args, "ablation", False):
        parser.error("--time-budget times one training run, --ablation trains several; give --epochs instead")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        parser.error("--time-budget times one process; under torchrun give --epochs instead")


def fill_defaults(args, defaults: dict):
    """Set each option the user did not give (None) to the script's default for the chosen model.
    args._given: the options the user did give (check_training_args tells them from defaults)."""
    args._given = {key for key in defaults if getattr(args, key, None) is not None}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def show_defaults(parser: argparse.ArgumentParser, defaults: dict):
    """Append each option's default from `defaults` ({choice: {option dest: value}}, e.g. a script's
    DEFAULTS per --model) to its --help text: '(default: 18 for cnn, 22 for ffn)', or '(default: 0.1)'
    where every choice has the same."""
    def show(value):
        if isinstance(value, bool):
            return "on" if value else "off"
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    for action in parser._actions:
        per_choice = {c: show(d[action.dest]) for c, d in sorted(defaults.items()) if action.dest in d}
        if not per_choice:
            continue
        if len(per_choice) == len(defaults) and len(set(per_choice.values())) == 1:
            said = next(iter(per_choice.values()))
        else:
            said = ", ".join(f"{v} for {c}" for c, v in per_choice.items())
        action.help = f"{action.help or ''} (default: {said})".strip().replace("%", "%%")


def args_record(args) -> dict:
    """The parsed arguments as JSON values, for metrics.json (paths as text; _private ones left out)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}


def refuse_foreign_options(parser: argparse.ArgumentParser, args, flag: str, only: dict):
    """parser.error for an option the user gave that belongs to another choice of `flag` (e.g.
    --blocks with --arch dense). only: {choice: [option dests]}; options left at None were not given."""
    chosen = getattr(args, flag.removeprefix("--"))
    for owner, keys in only.items():
        for key in keys:
            if owner != chosen and getattr(args, key) is not None:
                parser.error(f"--{key.replace('_', '-')} applies to {flag} {owner} only")


def _number_type(convert, what: str, ok, expected: str):
    """An argparse type: convert(text), refused with "expected <expected>" unless ok(value)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


positive_int = _number_type(int, "a whole number", lambda v: v >= 1, "a number >= 1")


def bounded_int(low: int, high: int):
    return _number_type(int, "a whole number", lambda v: low <= v <= high, f"a number from {low} to {high}")


# nan, inf or a value past float32's range (torch's optimizers hold lr and weight decay as float32)
# would only show up later, as a diverged run or an overflow deep inside torch
FLOAT32_MAX = 3.4028234663852886e38
finite_float = _number_type(float, "a number", lambda v: math.isfinite(v) and abs(v) <= FLOAT32_MAX,
                            f"a finite number within float32's range (at most {FLOAT32_MAX:.3g} in size)")
# torch, NumPy and the seeds training derives from it (seed * 100_003 + ...) all accept [0, 2**32)
positive_seconds = _number_type(float, "a number of seconds", lambda v: math.isfinite(v) and v > 0,
                                "a positive, finite number of seconds")
seed = _number_type(int, "a whole number", lambda v: 0 <= v < 2**32, f"a seed from 0 to {2**32 - 1}")



# What to do about a failed write or read, by errno; the message names the path.
DISK_FIXES = {
    errno.ENOSPC: "no space left on its disk; free some space or choose another {flag}",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another {flag}",
    errno.EROFS: "the disk is read-only; choose another {flag}",
    errno.EACCES: "permission denied; choose a folder you may write to ({flag})",
    errno.EPERM: "permission denied; choose a folder you may write to ({flag})",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter {flag}",
    errno.EISDIR: "a folder stands where a file must be written; move it away or choose another {flag}",
    errno.ENOTDIR: "a file stands where a folder must be; choose another {flag}",
    errno.EIO: "the disk reported an input/output error; check the disk or choose another {flag}",
}


def disk_error_message(err: OSError, flag: str = "--out-dir") -> str | None:
    """One line for an OSError about a file ('cannot write <path>: <why>; <fix>'), or None; the fix
    names the script's output option, flag."""
    if err.errno not in DISK_FIXES:
        return None
    path = err.filename if err.filename is not None else "a file"
    return f"cannot use {path}: {DISK_FIXES[err.errno].format(flag=flag)}"


_at_end = []  # what run() does when main() ends, however it ends (e.g. release an output folder's lock)


def on_exit(action):
    """Call action() when run()'s main() ends."""
    _at_end.append(action)


def run(main, out_flag: str = "--out-dir"):
    """Run `main()` as a script: a UserError becomes `error: <message>` on stderr and exit status 2;
    Ctrl-C and SIGTERM one line and status 130; a disk error (full, read-only, name too long...)
    one line naming the path and the fix (another out_flag, the script's output option), status 1."""
    global _in_run
    _in_run, before = True, _install(_on_signal)
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        then = "rerun with --resume to continue" if _resumable else "rerun to finish"
        print(f"\ninterrupted; {then} (files written so far are complete: each is written whole or not at all)",
              file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        message = disk_error_message(err, out_flag)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:  # as before (a test, or a program that calls run more than once)
        while _at_end:
            _at_end.pop()()
        _in_run = False
        for sig, handler in before.items():
            signal.signal(sig, handler)


def slug(text) -> str:
    """`text` as part of a file name: runs of other characters than letters, digits and _ become -.
    A text with none of them (e.g. all Greek or Chinese) becomes a short hash of it, so two such
    names never share a file."""
    text = str(text)
    return (re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")
            or "h" + hashlib.sha256(text.encode()).hexdigest()[:8])
