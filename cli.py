"""Small helpers every convlens script shares: one-line user errors, the common
command-line arguments (--seed, --data-dir, --out-dir), atomic file writes, and the CPU's name
(for the records of measured times)."""
import argparse
import contextlib
import json
import math
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

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
    t = parser.add_argument_group("training (defaults depend on the model: see DEFAULTS in the script)")
    t.add_argument("--epochs", type=positive_int)
    t.add_argument("--batch-size", type=positive_int, help=batch_help)
    t.add_argument("--lr", type=finite_float, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--optimizer", choices=["sgd", "adamw"])
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
    return t


def check_training_args(parser: argparse.ArgumentParser, args):
    """Range checks of the shared training options, after the script's DEFAULTS are filled in."""
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    for key in ("crop", "weight_decay"):
        if getattr(args, key) < 0:
            parser.error(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}")
    if not 0 <= args.label_smoothing < 1:
        parser.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")


def fill_defaults(args, defaults: dict):
    """Set each option the user did not give (None) to the script's default for the chosen model."""
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


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
# nan or inf would only show up later, as a diverged run
finite_float = _number_type(float, "a number", math.isfinite, "a finite number")
# torch, NumPy and the seeds training derives from it (seed * 100_003 + ...) all accept [0, 2**32)
seed = _number_type(int, "a whole number", lambda v: 0 <= v < 2**32, f"a seed from 0 to {2**32 - 1}")


def run(main):
    """Run `main()`, turning a UserError into `error: <message>` on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: outputs written so far are complete (files are written atomically)",
              file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted write never leaves a half-written file under the real name."""
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private (0600); give it an ordinary file's mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def make_dirs(folder):
    """mkdir -p, with a one-line error when a file stands where a folder must be."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot create the folder {folder}: a file is in the way; "
                        "choose another --out-dir (or --runs-dir, --out, --report)") from None


def read_json_or_none(path, warn: bool = True):
    """The JSON in `path`, or None when it is missing or unreadable (then, with warn, say so)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        if warn:
            print(f"warning: ignoring unreadable {path} ({type(err).__name__}: {err})", file=sys.stderr)
        return None


def slug(text) -> str:
    """`text` as part of a file name: runs of other characters than letters, digits and _ become -."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", str(text)).strip("-")


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows; timings depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
