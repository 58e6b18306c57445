"""Files every convlens script writes and reads: atomic writes (fsynced), JSON, folders, the lock
a run takes on its output folder, a hash of the code a script runs, and the CPU's name.

Light on purpose (no torch): report/run_all.py plans and skips steps with it instantly."""
import ast
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import cli
from cli import UserError

ROOT = Path(__file__).resolve().parent
TMP_MARK = ".tmp-"  # temporary files are .<stem>.tmp-<random><suffix> beside their target


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file and then its folder are fsynced before and after the rename, so a power cut leaves
    either the old file or the new one whole. An interrupted write leaves no half-written file
    under the real name; a killed one leaves a temporary that claim_out_dir removes next time."""
    path = Path(path)
    make_dirs(path.parent)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}{TMP_MARK}", suffix=path.suffix)
    except OSError as err:  # read-only, full, name too long: say which file could not be written
        raise OSError(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private (0600); give it an ordinary file's mode
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as err:  # a write() error names no file: name the one being written
        if err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder):
    """mkdir -p, with a one-line error when a file stands where a folder must be."""
    fix = "choose another --out-dir (or --runs-dir, --out, --report)"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot create the folder {folder}: a file is in the way; {fix}") from None
    except FileNotFoundError:  # a file system that takes no new folders there (/proc, /sys)
        raise UserError(f"cannot create the folder {folder}: its file system takes no new folders there; "
                        f"{fix}") from None
    except (RuntimeError, OSError) as err:  # a symlink loop: RuntimeError before Python 3.13, then ELOOP
        if not (isinstance(err, RuntimeError) or err.errno == errno.ELOOP):
            raise
        raise UserError(f"cannot create the folder {folder}: its path runs in a loop of symbolic links; "
                        f"{fix}") from None


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


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# ---- the output folder of a run -------------------------------------------------------------------

_held = {}  # resolved folder -> (fd of the locked folder, folder, whether claim_out_dir made it)


def claim_out_dir(folder) -> Path:
    """Make `folder`, check it is writable, lock it for this run and remove the temporaries a
    killed run left there. Idempotent within a process.

    The lock is fcntl.flock on the folder itself (no file to leave behind): it ends with the
    process however it ends, and cli.run releases it when main() returns. A second run into the
    same folder stops at once and names the holder (from /proc/locks), so two runs never mix
    their files."""
    folder = Path(folder)
    made = not folder.exists()
    make_dirs(folder)
    key = folder.resolve()
    if key in _held:
        return folder
    if not os.access(folder, os.W_OK):
        raise OSError(errno.EACCES, "Permission denied", str(folder))
    if int(os.environ.get("RANK", 0)):  # under torchrun rank 0 holds it for the whole run
        return folder
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{folder} is in use by {lock_holder(folder)}, which writes there now; wait for it "
                        "to finish (or stop it), or choose another --out-dir") from None
    _held[key] = (fd, folder, made)
    cli.on_exit(lambda: release(key))
    remove_stale_temporaries(folder)
    return folder


def lock_holder(folder) -> str:
    """'process <pid>' holding a flock on `folder`, read from Linux's /proc/locks, else 'another process'."""
    inode = os.stat(folder).st_ino
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                return f"process {fields[4]}"
    except OSError:
        pass
    return "another process"


def release(key):
    """Give up the lock claim_out_dir took; remove the folder if the run made it and wrote nothing."""
    fd, folder, made = _held.pop(key, (None, None, False))
    if fd is None:
        return
    os.close(fd)
    if made:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def remove_stale_temporaries(folder):
    """Delete the .<name>.tmp-* files atomic_path leaves when a process is killed mid-write (only
    call this while holding the folder's lock: then no other writer can own them): in the folder,
    and the checkpoints' (the large ones) in its sub-folders too (an ablation's runs)."""
    for tmp in [*Path(folder).glob(f".*{TMP_MARK}*"), *Path(folder).glob(f"*/**/.model{TMP_MARK}*.pt")]:
        with contextlib.suppress(OSError):
            tmp.unlink()


# ---- what code a run ran ----------------------------------------------------------------------------

def local_imports(script: Path) -> set:
    """`script` and the repository modules it imports (found at the repository root or beside the
    importing file), directly or through each other (parsed, never run): the code whose change
    makes its outputs stale."""
    seen, todo = set(), [Path(script).resolve()]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            for name in names:
                top = name.split(".")[0]
                for folder in (ROOT, path.parent):  # report/build.py imports run_all beside it
                    todo += [folder / f"{top}.py", folder / (name.replace(".", "/") + ".py")]
                    if (folder / top).is_dir():  # a package of ours (mytorch): all of it
                        todo += sorted((folder / top).glob("*.py"))
    return seen


def code_hash(*scripts) -> str:
    """A short hash of the source of `scripts` and every repository module they import."""
    h = hashlib.sha256()
    for path in sorted(set().union(*(local_imports(s) for s in scripts))):
        name = path.relative_to(ROOT) if ROOT in path.parents else path
        h.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows; timings depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
