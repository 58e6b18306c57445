"""Hostile and unlucky use (issue #21): stale steps, damaged checkpoints, two runs in one folder,
full and read-only disks, killed writes, short schedules, interruptions, impossible models, odd
data files and images. Every one-line error is checked to carry no traceback and to name the fix."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
import data
import files
import training
from cli import UserError
from conftest import CIFAR_CLASSES, FASHION_CLASSES, ROOT, make_npz
from training import TrainConfig, build_model, check_trainable, fit, load_checkpoint, read_checkpoint, save_checkpoint

sys.path.insert(0, str(ROOT / "report"))
import run_all  # noqa: E402

SPEC = {"name": "CNN", "args": dict(in_channels=1, num_classes=10, image_size=28, channels=[4, 8], hidden=[16])}
PY = [sys.executable]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def tiny_checkpoint(path, **changes):
    torch.manual_seed(0)
    model = build_model(SPEC["name"], SPEC["args"])
    state = {"model": SPEC, "dataset": "fashion_mnist", "classes": FASHION_CLASSES, "mean": [0.3], "std": [0.3],
             "state_dict": model.state_dict(), **changes}
    save_checkpoint(path, {k: v for k, v in state.items() if v is not None})
    return path


def one_line(text: str):
    """A script's stderr for a handled problem: one message line, no traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ---- 1. stale steps and resumes ------------------------------------------------------------------

def test_a_step_whose_code_changed_reruns_from_scratch_and_force_never_resumes(tmp_path):
    script = tmp_path / "train.py"
    helper = tmp_path / "helper.py"
    script.write_text("import helper\n")
    helper.write_text("X = 1\n")
    step = run_all.Step("train", [str(script), "--epochs", "3"], [], resumable=True)
    stamp = {"argv": step.argv, "code": run_all.step_code(step), "state": "running"}
    assert run_all.command(step, stamp)[-1] == "--resume"
    assert "--resume" not in run_all.command(step, stamp, force=True)  # --force: from scratch
    helper.write_text("X = 2\n")  # a module the script imports changed
    assert "--resume" not in run_all.command(step, stamp)
    assert run_all.why_run(step, {**stamp, "state": "done"}, set(), [], False) == "its code changed"


def test_a_training_step_that_starts_over_deletes_its_old_checkpoints(tmp_path):
    """So a later --resume (after a kill in the first epoch) cannot adopt the old, finished model."""
    (tmp_path / "variant").mkdir()
    for path in (tmp_path / "model.pt", tmp_path / "variant" / "model.pt"):
        path.write_text("old")
    step = run_all.Step("train", ["-c", "pass"], [tmp_path / "metrics.json"], resumable=True)
    stamp_file = tmp_path / "logs" / "train.json"
    run_all.run_one(step, {}, stamp_file, tmp_path / "train.log", time.perf_counter(), lambda: None, force=True)
    assert not list(tmp_path.glob("**/model.pt"))


def test_the_training_steps_hash_the_shared_modules():
    imported = {p.name for p in files.local_imports(ROOT / "cifar10.py")}
    assert {"cifar10.py", "training.py", "data.py", "cli.py", "files.py", "cnn.py", "plots.py"} <= imported


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fashion")
    make_npz(folder / "fashion_mnist.npz", (28, 28), FASHION_CLASSES, n_train=128, n_test=64)
    return data.load_dataset("fashion_mnist", folder)


def tiny_fit(ds, path, epochs=1, resume=False, n=128):
    torch.manual_seed(0)
    model = build_model(SPEC["name"], SPEC["args"])
    meta = {"model": SPEC, "dataset": ds.name, "classes": ds.classes, "mean": ds.mean, "std": ds.std}
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05)
    history = fit(model, ds.x_train[:n], ds.y_train[:n], cfg, mean=ds.mean, std=ds.std,
                  device=torch.device("cpu"), checkpoint=path, meta=meta, resume=resume)
    return model, history


def test_resume_never_adopts_a_finished_run_or_other_code(fashion, tmp_path, monkeypatch, capsys):
    path = tmp_path / "model.pt"
    tiny_fit(fashion, path)
    training.finish_run(tmp_path, {"test_accuracy": 0.5}, {"epochs": [{"epoch": 1, "x": 1}], "step_loss": [1.0],
                                                           "step_lr": [0.1]})
    _, history = tiny_fit(fashion, path, resume=True)
    assert "finished run, starting from scratch" in capsys.readouterr().out
    assert len(history["epochs"]) == 1 and len(history["step_loss"]) == 2  # it trained, from epoch 0
    tiny_fit(fashion, path, epochs=1)  # an unfinished checkpoint, of other code:
    monkeypatch.setattr(training, "running_code", lambda: "edited")
    with pytest.raises(UserError, match="made by other code .*drop --resume to start over"):
        tiny_fit(fashion, path, resume=True)


# ---- 2. damaged checkpoints ---------------------------------------------------------------------------

def test_a_damaged_checkpoint_is_refused_at_every_load(fashion, tmp_path):
    path = tiny_checkpoint(tmp_path / "model.pt")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(255 - b for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="model.pt is damaged: retrain or restore it"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="is damaged: retrain or restore it"):
        tiny_fit(fashion, path, resume=True)


def test_resume_messages_do_not_offer_a_checkpoint_option(fashion, tmp_path):
    (tmp_path / "model.pt").write_text("not a zip")
    with pytest.raises(UserError) as err:
        tiny_fit(fashion, tmp_path / "model.pt", resume=True)
    assert "--checkpoint" not in str(err.value) and "drop --resume" in str(err.value)


# ---- 3. one run per folder; children die with run_all ---------------------------------------------------

HOLD = "import sys, time, files; files.claim_out_dir(sys.argv[1]); print('held', flush=True); time.sleep(30)"


def test_a_second_run_into_a_locked_folder_names_the_holder(tmp_path):
    holder = subprocess.Popen([*PY, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([*PY, "-c", "import sys, cli, files\ncli.run(lambda: files.claim_out_dir(sys.argv[1]))",
                               str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2
        line = one_line(proc.stderr)
        assert f"in use by process {holder.pid}" in line and "choose another --out-dir" in line
    finally:
        holder.kill()
        holder.wait()
    files.claim_out_dir(tmp_path)  # the lock died with its process
    files.release(tmp_path.resolve())
    assert list(tmp_path.iterdir()) == []  # the lock leaves no file


def test_a_child_dies_with_a_killed_run_all(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = ("import subprocess, sys, time; sys.path.insert(0, 'report'); import run_all\n"
              f"subprocess.Popen([sys.executable, '-c', {child!r}], preexec_fn=run_all.die_with_parent)\n"
              "time.sleep(60)")
    proc = subprocess.Popen([*PY, "-c", parent], cwd=ROOT)
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


# ---- 4. disk errors: one line naming the path and the fix -------------------------------------------------

def run_main(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(main)
    return exit_.value.code, one_line(capsys.readouterr().err)


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                       (errno.EACCES, "permission denied")])
def test_a_full_or_read_only_disk_is_one_line(tmp_path, monkeypatch, capsys, code, fix):
    def fail(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))  # as write() raises it: no file name
    monkeypatch.setattr(Path, "write_text", fail)
    status, line = run_main(lambda: files.write_json(tmp_path / "metrics.json", {}), capsys)
    assert status == 1 and str(tmp_path / "metrics.json") in line and fix in line and "--out-dir" in line
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary


def test_a_disk_error_names_the_scripts_own_output_option(tmp_path, monkeypatch, capsys):
    def fail(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(SystemExit):
        cli.run(lambda: files.write_json(tmp_path / "x.json", {}), out_flag="--out")
    line = one_line(capsys.readouterr().err)
    assert "choose another --out" in line and "--out-dir" not in line


def test_a_full_disk_during_torch_save_is_one_line(tmp_path, monkeypatch, capsys):
    def fail(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", fail)
    monkeypatch.setattr(training, "_disk_full", lambda path: True)
    status, line = run_main(lambda: save_checkpoint(tmp_path / "model.pt", {}), capsys)
    assert "model.pt" in line and "no space left" in line and "unexpected pos" not in line


def test_long_names_and_folders_in_the_way_are_one_line(tmp_path, capsys):
    status, line = run_main(lambda: files.claim_out_dir(tmp_path / ("x" * 300)), capsys)
    assert "too long" in line and "shorter --out-dir" in line
    (tmp_path / "model.pt").mkdir()
    status, line = run_main(lambda: save_checkpoint(tmp_path / "model.pt", {}), capsys)
    assert "model.pt" in line and "a folder stands where a file must be" in line
    (tmp_path / "file").write_text("")
    status, line = run_main(lambda: files.claim_out_dir(tmp_path / "file"), capsys)
    assert status == 2 and "a file is in the way" in line


def test_a_symlink_loop_or_a_file_system_without_new_folders_is_one_line(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    status, line = run_main(lambda: files.claim_out_dir(tmp_path / "a" / "run"), capsys)
    assert status == 2 and "loop of symbolic links" in line and "choose another --out-dir" in line
    if Path("/proc/self").is_dir():  # Linux: /proc makes no folders
        status, line = run_main(lambda: files.claim_out_dir("/proc/convlens-run"), capsys)
        assert status == 2 and "takes no new folders there" in line


def test_renames_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    files.write_text(tmp_path / "a.txt", "a")
    assert len(synced) == 2  # the file, then its folder
    assert (tmp_path / "a.txt").read_text() == "a"


# ---- 5. killed writes leave no temporaries for long -------------------------------------------------------

KILLED_WRITE = ("import os, signal, sys, files\n"
                "with files.atomic_path(sys.argv[1]) as tmp:\n"
                "    tmp.write_bytes(b'x' * 1000)\n"
                "    os.kill(os.getpid(), signal.SIGKILL)\n")


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start(tmp_path):
    sub = tmp_path / "run-a"
    for target in (tmp_path / "model.pt", sub / "model.pt"):
        proc = subprocess.run([*PY, "-c", KILLED_WRITE, str(target)], cwd=ROOT)
        assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.rglob(".model*"))
    assert len(left) == 2 and all(files.TMP_MARK in name for name in left)
    (tmp_path / "keep.txt").write_text("mine")
    files.claim_out_dir(tmp_path)
    files.release(tmp_path.resolve())
    assert not list(tmp_path.rglob(".model*")) and (tmp_path / "keep.txt").exists()


# ---- 6. short runs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_any_schedule_with_a_step_trains(steps):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = training.make_scheduler(opt, TrainConfig(lr=0.1, warmup=0.2 if steps != 10 else 0.1), steps)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert all(np.isfinite(lrs)) and max(lrs) <= 0.1 + 1e-9 and lrs[-1] < 0.1 or steps == 1


def test_a_five_step_run_trains(fashion, tmp_path):
    """--epochs 1 with 5 steps once divided by zero inside OneCycleLR (a one-step warm-up)."""
    torch.manual_seed(0)
    model = build_model("FFN", dict(hidden=[8]))
    x, y = fashion.x_train[:125], fashion.y_train[:125]
    history = fit(model, x, y, TrainConfig(epochs=1, batch_size=25, lr=0.01, warmup=0.2), mean=fashion.mean,
                  std=fashion.std, device=torch.device("cpu"))
    assert len(history["step_loss"]) == 5


# ---- 7. interruptions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_starting_is_one_line(tmp_path, sig):
    # the signal's default disposition in the child, whatever the suite inherited: a background job
    # of a shell starts with SIGINT ignored, and the scripts rightly keep an ignored signal ignored
    proc = subprocess.Popen([*PY, str(ROOT / "fashionmnist.py"), "--out-dir", str(tmp_path)], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    time.sleep(0.5)  # importing torch takes seconds
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted" in one_line(err)


def test_sigterm_inside_a_run_says_how_to_continue(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_resumable", True)
    try:
        status, line = run_main(lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5), capsys)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert status == 130 and "interrupted; rerun with --resume to continue" in line


# ---- 8. models that cannot train are refused before training -------------------------------------------

def test_impossible_models_are_refused_in_one_line():
    with pytest.raises(UserError, match="more than this machine's free memory"):
        build_model("FFN", dict(hidden=[100_000_000]))
    with pytest.raises(UserError, match="more than this machine's free memory"):
        build_model("CNN", dict(in_channels=3, image_size=32, channels=[10_000_000]))
    small = build_model("GAPNet", dict(channels=[2, 2, 2, 2, 2], blocks=1))
    with pytest.raises(UserError, match="cannot take the 24x24 images of --low-res 24"):
        check_trainable(small, TrainConfig(epochs=2, low_res=24), (3, 32, 32), torch.device("cpu"))
    check_trainable(small, TrainConfig(epochs=2), (3, 32, 32), torch.device("cpu"))  # 32 -> 1 pixel: fine
    with pytest.raises(UserError, match="--crop 100000 .* use at most 27"):
        check_trainable(build_model("FFN", {}), TrainConfig(crop=100_000), (1, 28, 28), torch.device("cpu"))
    with pytest.raises(UserError, match="smaller --batch-size"):
        check_trainable(build_model("FFN", dict(hidden=[8])), TrainConfig(batch_size=10**12), (1, 28, 28),
                        torch.device("cpu"))


# ---- 10. odd checkpoints and data files -------------------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    (dict(dataset=None), "'dataset' is missing"),
    (dict(mean=None), "'mean' is missing"),
    (dict(classes=FASHION_CLASSES[:3]), "'classes' is not 10 class names \\(it has 3 entries\\)"),
    (dict(model={"name": "CNN", "args": {**SPEC["args"], "width": 3}}), "unexpected keyword argument 'width'"),
    (dict(model={"name": "CNN", "args": {**SPEC["args"], "hidden": [-1]}}), "cannot build a CNN"),
    (dict(dataset="cifar10", mean=[0.5] * 3, std=[0.25] * 3),
     "its CNN does not take the 32x32 3-channel images of cifar10"),
    (dict(dataset="cifar10"), "1 normalization values for 3-channel cifar10 images"),
])
def test_checkpoints_with_missing_or_wrong_keys_are_damaged(tmp_path, change, match):
    path = tiny_checkpoint(tmp_path / "model.pt", **change)
    with pytest.raises(UserError, match=f"damaged: retrain or restore it.*{match}|{match}.*retrain"):
        load_checkpoint(path)


def test_nan_weights_and_a_missing_optimizer_are_refused(fashion, tmp_path):
    torch.manual_seed(0)
    state = build_model(SPEC["name"], SPEC["args"]).state_dict()
    state["features.conv1_1.weight"][0] = float("nan")
    path = tiny_checkpoint(tmp_path / "model.pt", state_dict=state)
    with pytest.raises(UserError, match="holds NaN or infinite values"):
        load_checkpoint(path)
    tiny_checkpoint(tmp_path / "model.pt", epoch=1)
    with pytest.raises(UserError, match="'optimizer' is missing"):
        tiny_fit(fashion, tmp_path / "model.pt", resume=True)


def odd_npz(path, **changes):
    make_npz(path, (28, 28), FASHION_CLASSES, n_train=16, n_test=8)
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("changes, match", [
    (dict(classes=np.array("T-shirt")), "'classes' must be a list of 10 names"),
    (dict(x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.uint8)), "x_test holds no images"),
    (dict(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8)), "x_train holds no images"),
])
def test_odd_data_files_are_one_line(tmp_path, changes, match):
    odd_npz(tmp_path / "fashion_mnist.npz", **changes)
    with pytest.raises(UserError, match=match):
        data.load_dataset("fashion_mnist", tmp_path)


def test_an_npz_member_that_is_not_npy(tmp_path):
    path = odd_npz(tmp_path / "fashion_mnist.npz")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist() if n != "classes.npy"}
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
        z.writestr("classes", b"T-shirt,Trouser")
    with pytest.raises(UserError, match="'classes' is not a NumPy array"):
        data.load_dataset("fashion_mnist", tmp_path)


def test_an_empty_training_set_does_not_blame_val():
    with pytest.raises(UserError, match="the training set holds no images") as err:
        data.train_val_split(0, 0, 0)
    assert "--val" not in str(err.value)


# ---- 11. images -------------------------------------------------------------------------------------------

def test_a_decompression_bomb_is_refused(tmp_path):
    from PIL import Image
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    with pytest.raises(UserError, match="bomb.png") as err:
        data.load_image(tmp_path / "bomb.png", 1, (28, 28))
    assert "\n" not in str(err.value)


def test_a_16_bit_image_is_scaled_by_its_bit_depth(tmp_path):
    from PIL import Image
    ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    x = data.load_image(tmp_path / "deep.png", 1, (28, 28))
    assert x.dtype == torch.uint8 and (x == 255).float().mean() < 0.01
    assert abs(x.float().mean().item() - 127.5) < 2  # the ramp's middle, not clipped to white


# ---- 12. smaller ------------------------------------------------------------------------------------------

def test_names_of_other_scripts_get_distinct_slugs():
    assert cli.slug("猫") != cli.slug("狗") and cli.slug("猫") and cli.slug("my photo") == "my-photo"


def test_run_all_writes_no_traceback_on_a_read_only_runs_dir(tmp_path):
    proc = subprocess.run([*PY, str(ROOT / "report/run_all.py"), "--runs-dir", str(tmp_path / ("y" * 300))],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode != 0 and "too long" in one_line(proc.stderr)


def test_a_run_into_a_file_fails_before_training(tiny_data_dir, tmp_path):
    (tmp_path / "out").write_text("")
    proc = subprocess.run([*PY, str(ROOT / "cifar10.py"), "--arch", "gap", "--out-dir", str(tmp_path / "out"),
                           "--data-dir", str(tiny_data_dir), "--limit", "64", "--epochs", "1", "--val-size", "64",
                           "--channels", "4", "8", "8"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode == 2 and "a file is in the way" in one_line(proc.stderr)
    assert "epoch" not in proc.stdout
