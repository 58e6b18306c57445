"""benchmarks/common: figures are taken from a run_all step only when it is the very run, and
write_results keeps what it does not replace."""
import json
import os

import pytest

from benchmarks import common
from benchmarks.common import from_run, write_results
from cli import UserError


def stamp(runs, step, argv, state="done", seconds=12.5):
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    (runs / "logs" / f"{step}.json").write_text(json.dumps({"argv": argv, "state": state, "seconds": seconds}))


def test_from_run_reads_a_finished_default_run(tmp_path):
    out = tmp_path / "fashionmnist-cnn"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.93}))
    stamp(tmp_path, "fashionmnist-cnn", ["/x/fashionmnist.py", "--model", "cnn", "--out-dir", str(out),
                                         "--seed", "0", "--data-dir", "/d"])
    r = from_run("fashionmnist.py", ["--model", "cnn"], tmp_path, "fashionmnist-cnn")
    assert r["metrics"] == {"test_accuracy": 0.93} and r["wall_seconds"] == 12.5


@pytest.mark.parametrize("argv, state", [
    (["/x/fashionmnist.py", "--model", "cnn", "--epochs", "3", "--out-dir", "o"], "done"),  # not the defaults
    (["/x/fashionmnist.py", "--model", "cnn", "--out-dir", "o"], "running"),               # cut off
    (["/x/cifar10.py", "--model", "cnn", "--out-dir", "o"], "done"),                        # another script
])
def test_from_run_refuses_any_other_run(tmp_path, argv, state):
    stamp(tmp_path, "fashionmnist-cnn", argv, state)
    with pytest.raises(UserError, match="fashionmnist-cnn.json is (not a finished|a finished run of another command)"):
        from_run("fashionmnist.py", ["--model", "cnn"], tmp_path, "fashionmnist-cnn")


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_from_run_float32_takes_only_float32_runs(tmp_path, cpu_bf16):
    out = tmp_path / "cifar10-gap"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.85, "cpu_bf16": cpu_bf16}))
    stamp(tmp_path, "cifar10-gap", ["/x/cifar10.py", "--arch", "gap", "--out-dir", str(out)])
    if cpu_bf16:
        with pytest.raises(UserError, match="trained with bfloat16 autocast.*ONEDNN_MAX_CPU_ISA=AVX2"):
            from_run("cifar10.py", ["--arch", "gap"], tmp_path, "cifar10-gap", float32=True)
    else:
        r = from_run("cifar10.py", ["--arch", "gap"], tmp_path, "cifar10-gap", float32=True)
        assert r["condition"] == "float32" and r["command"].startswith("ATEN_CPU_CAPABILITY=avx2")
        assert from_run("cifar10.py", ["--arch", "gap"], tmp_path, "cifar10-gap")["condition"] == "native"


def test_from_run_without_runs_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="run_all.py --preset full"):
        from_run("cifar10.py", ["--arch", "gap"], tmp_path, "cifar10-gap")


def test_from_run_refuses_metrics_written_after_the_run(tmp_path):
    out = tmp_path / "fashionmnist-ffn"
    out.mkdir()
    stamp(tmp_path, "fashionmnist-ffn", ["/x/fashionmnist.py", "--model", "ffn", "--out-dir", str(out)])
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9}))  # e.g. a later benchmark run
    stamp_file = tmp_path / "logs" / "fashionmnist-ffn.json"
    os.utime(stamp_file, (0, os.stat(out / "metrics.json").st_mtime - 10))
    with pytest.raises(UserError, match="is newer than"):
        from_run("fashionmnist.py", ["--model", "ffn"], tmp_path, "fashionmnist-ffn")


def test_write_results_keeps_other_cases_and_other_machines_figures(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    cpu = {"name": "CPU A", "bf16": False}
    monkeypatch.setattr(common, "machine", lambda: {"cpu": cpu["name"], "cpu_count": 2, "cpu_bf16": cpu["bf16"]})
    write_results(path, {"ffn": {"accuracy": 0.90}, "cnn": {"accuracy": 0.93}})
    write_results(path, {"ffn": {"accuracy": 0.89}})  # same CPU: supersedes 0.90
    cpu["name"] = "CPU B"
    write_results(path, {"ffn": {"accuracy": 0.91}})
    cpu["bf16"] = True  # same model name, another chip (virtual machines name only the family)
    results = write_results(path, {"ffn": {"accuracy": 0.92}})
    assert results == json.loads(path.read_text())
    assert results["cases"]["ffn"]["accuracy"] == 0.92
    assert results["cases"]["ffn"]["machine"]["cpu"] == "CPU B"
    assert results["cases"]["cnn"]["accuracy"] == 0.93  # not measured again: kept
    assert [(e["case"], e["accuracy"], e["machine"]["cpu"], e["machine"]["cpu_bf16"])
            for e in results["earlier"]] == [("ffn", 0.89, "CPU A", False), ("ffn", 0.91, "CPU B", False)]
    assert all(case["measured"] for case in (*results["cases"].values(), *results["earlier"]))


def test_machine_names_the_cpu_from_cpuinfo(tmp_path, monkeypatch):
    import files
    import training
    from pathlib import Path
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Planted\nmodel name\t: Planted CPU 9000 @ 1.0GHz\nflags\t: x\n")
    monkeypatch.setattr(files, "Path", lambda p: cpuinfo if str(p) == "/proc/cpuinfo" else Path(p))
    here = common.machine()
    assert here["cpu"] == "Planted CPU 9000 @ 1.0GHz"
    assert (here["cpu_count"], here["cpu_bf16"]) == (os.cpu_count(), training.cpu_bf16_supported())


def test_bench_mytorch_keeps_runs_from_a_same_named_cpu_without_bf16(tmp_path):
    from benchmarks.bench_mytorch import other_machines
    avx2, bf16, intel = ({"cpu": name, "cpu_bf16": flag} for name, flag in
                         (("AMD EPYC", False), ("AMD EPYC", True), ("Intel Xeon", True)))
    path = tmp_path / "mytorch.json"
    path.write_text(json.dumps({"machine": avx2, "cases": [], "other_machines": [{"machine": intel}]}))
    assert [run["machine"] for run in other_machines(path, bf16)] == [intel, avx2]
    assert [run["machine"] for run in other_machines(path, avx2)] == [intel]


def test_a_failing_script_ends_the_benchmark_with_one_line(tmp_path, capfd):
    (tmp_path / "fashion_mnist.npz").write_text("garbage")
    with pytest.raises(UserError, match=r"python fashionmnist.py --model ffn failed \(its error is above\)"):
        common.run_script("fashionmnist.py", ["--model", "ffn"], tmp_path)
    assert "fashion_mnist.npz is not a readable .npz file" in capfd.readouterr().err  # the script's own line


# ---- benchmarks/design_trials.py --------------------------------------------------------------

def trials_file(tmp_path, command):
    """A trials file with a tiny fake trial (its recorded numbers planted) and one it must not touch."""
    fake = {"name": "tiny", "arch": "gap", "change": "a hidden layer of 8", "command": command,
            "seeds": [0, 3], "runs": [{"seed": 0, "val_accuracy": 0.1234, "test_accuracy": None, "seconds": 99}],
            "parameters": 1, "machine": {"cpu": "recorded CPU"}, "precision": "float32", "measured": "2000-01-01",
            "timing": "train", "seconds_range": [1, 2], "decision": "kept", "reason": "planted"}
    other = {**fake, "name": "other", "command": "python cifar10.py --arch gap"}
    path = tmp_path / "trials.json"
    path.write_text(json.dumps({"about": "test", "trials": [fake, other]}))
    return path


def test_design_trials_rerun_replaces_only_that_trials_measurements(tmp_path, tiny_data_dir, monkeypatch):
    import datetime
    import fashionmnist
    from benchmarks import design_trials
    ran = []  # the script runs in this process (a fresh one would spend its time importing torch)
    monkeypatch.setattr(design_trials, "run_command",
                        lambda env, argv: ran.append(argv[1]) or fashionmnist.main(argv[2:]) or 0)
    path = trials_file(tmp_path, "python fashionmnist.py --model ffn --hidden 8 --limit 128 --val 64 --epochs 1")
    before = json.loads(path.read_text())
    design_trials.main(["--run", "tiny", "--file", str(path), "--data-dir", str(tiny_data_dir)])
    after = json.loads(path.read_text())
    tiny, other = after["trials"]
    assert other == before["trials"][1] and after["about"] == "test"
    assert ran == ["fashionmnist.py"] * 2 and [r["seed"] for r in tiny["runs"]] == [0, 3]
    assert tiny["runs"][0]["val_accuracy"] != tiny["runs"][1]["val_accuracy"]  # the seed reached the script
    assert all(0 <= r["val_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1 and r["seconds"] >= 0 for r in tiny["runs"])
    assert tiny["runs"][0]["val_accuracy"] != 0.1234 and tiny["parameters"] == 28 * 28 * 8 + 2 * 8 + 8 * 10 + 10  # linear (no bias: batch norm follows), batch norm, linear
    assert tiny["machine"] == common.machine() and tiny["measured"] == datetime.date.today().isoformat()
    assert "seconds_range" not in tiny and (tiny["decision"], tiny["reason"]) == ("kept", "planted")


def test_design_trials_dry_run_names_each_seeds_command_and_writes_nothing(tmp_path, capsys):
    from benchmarks import design_trials
    path = trials_file(tmp_path, "OMP_NUM_THREADS=1 python cifar10.py --arch gap --epochs 3")
    before = path.read_text()
    design_trials.main(["--run", "tiny", "--dry-run", "--file", str(path), "--data-dir", "d"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" --out-dir")[0] for line in lines] == [
        f"OMP_NUM_THREADS=1 python cifar10.py --arch gap --epochs 3 --seed {s} --data-dir d" for s in (0, 3)]
    assert path.read_text() == before


def test_design_trials_names_an_unknown_trial(tmp_path):
    from benchmarks import design_trials
    with pytest.raises(UserError, match="no trial named 'nope'.*--list"):
        design_trials.main(["--run", "nope", "--file", str(trials_file(tmp_path, "python x.py"))])


def test_the_recorded_trials_file_reads_and_reruns_its_commands():
    from benchmarks import design_trials
    trials = design_trials.read_trials(design_trials.TRIALS)
    names = [t["name"] for t in trials["trials"]]
    assert len(names) == len(set(names))
    for t in trials["trials"]:
        assert t["compared_to"] in (None, *names) and t["decision"] in ("baseline", "kept", "dropped", "superseded")
        if t["command"]:  # a command the parser of cifar10.py accepts as recorded
            env, argv = design_trials.split_command(t["command"])
            assert argv[0] == "cifar10.py"
            import cifar10
            cifar10.parse_args(argv[1:] + ["--out-dir", "x"])


@pytest.mark.parametrize("seconds", [{"train_seconds": 70.0, "wall_seconds": 82.0}, {"wall_seconds": 70.0}])
def test_bench_fashionmnist_reads_a_runs_training_seconds(tmp_path, seconds):
    """train_seconds, or wall_seconds where a run from an earlier fashionmnist.py has only that;
    the case's own wall time is the stamp's (the whole process)."""
    from benchmarks import bench_fashionmnist
    out = tmp_path / "fashionmnist-ffn"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.91, "parameters": 10, "device": "cpu",
                                                  "config": {"epochs": 22}, **seconds}))
    stamp(tmp_path, "fashionmnist-ffn", ["/x/fashionmnist.py", "--model", "ffn", "--out-dir", str(out)],
          seconds=40.0)
    r = bench_fashionmnist.run_case("ffn", 0, "/d", from_runs=tmp_path)
    assert r["train_seconds"] == 70.0 and r["wall_seconds"] == 40.0 and r["epochs"] == 22
    assert r["met"] and r["test_accuracy"] == 0.91


def test_time_to_accuracy_leaves_out_results_of_former_defaults(tmp_path, monkeypatch):
    """A benchmark result counts as today's default only with today's epochs and low-resolution
    epochs: the dense net's full-size 9 epochs of before are not plotted as today's 9 (5 at 24x24)."""
    from benchmarks import bench_cifar10, time_to_accuracy
    import cifar10
    row = cifar10.DEFAULTS["dense", "default"]
    today = {"epochs": row["epochs"], "config": {"low_res": row["low_res"], "low_res_fraction": row["low_res_fraction"]}}
    low = bench_cifar10.low_res_epochs(today)
    assert low == int(row["epochs"] * row["low_res_fraction"]) > 0
    assert bench_cifar10.low_res_epochs({"epochs": 9, "config": {"low_res": 0, "low_res_fraction": 0.5}}) == 0
    case = {"condition": "float32", "machine": {}, "test_accuracy": 0.86, "wall_seconds": 600.0}
    (tmp_path / "cifar10.json").write_text(json.dumps({"cases": {
        "dense seed0 float32": {**case, "epochs": row["epochs"], "low_res_epochs": low},
        "dense seed1 float32": {**case, "epochs": row["epochs"], "wall_seconds": 900.0}}}))  # before low-res
    monkeypatch.setattr(time_to_accuracy, "RESULTS", tmp_path)
    out, _ = time_to_accuracy.points()
    assert [p[0] for p in out["dense"]] == [600.0]
    assert out["dense"][0][3] == "float32"


def test_time_to_accuracy_marks_float32_runs_on_a_cpu_without_avx512_apart():
    """The float32 targets are set for an AVX512 CPU held to AVX2; a CPU with AVX2 only takes about
    twice as long, and its runs are drawn with their own marker."""
    from benchmarks import time_to_accuracy
    assert time_to_accuracy.precision(False, {"cpu_bf16": False}) == "float32-avx2"
    assert time_to_accuracy.precision(False, {"cpu_bf16": True}) == "float32"
    assert time_to_accuracy.precision(True, {"cpu_bf16": True}) == "bf16"


def test_time_to_accuracy_refuses_an_ending_it_cannot_draw(tmp_path):
    from benchmarks import time_to_accuracy
    with pytest.raises(UserError, match=r"cannot write a figure as .*plot\.txt.*\.png"):
        time_to_accuracy.main(["--out", str(tmp_path / "plot.txt")])
    assert not any(tmp_path.iterdir())


def test_profile_step_times_the_low_resolution_epochs_and_the_optimizer_apart(tmp_path, capsys, monkeypatch):
    import cifar10
    from benchmarks import profile_step
    args = cifar10.parse_args(["--arch", "gap", "--preset", "quick", "--batch-size", "32", "--optimizer", "muon",
                               "--out-dir", str(tmp_path / "unused")])  # the default's shape of run, smaller
    spec = cifar10.model_spec(args, batchnorm=args.batchnorm, dropout=args.dropout)
    monkeypatch.setattr(profile_step, "cases", lambda: {"cifar10-gap": (args, spec, "cifar10", (3, 32, 32))})
    out = tmp_path / "profile.json"
    profile_step.main(["--only", "cifar10-gap", "--steps", "1", "--no-cpu-bf16", "--out", str(out)])
    r = json.loads(out.read_text())["cases"]["cifar10-gap"]
    assert r["optimizer"] == "muon" and 0 < r["optimizer_step_seconds"] < r["step_seconds"]
    assert r["low_res"] == 24 and 0 < r["low_res_epochs"] < r["epochs"]
    low, full = r["low_res_epochs"], r["epochs"] - r["low_res_epochs"]
    assert r["training_seconds_estimate"] == pytest.approx(
        low * r["low_res_epoch_seconds_estimate"] + full * r["epoch_seconds_estimate"], abs=0.2)
    assert "at 24x24" in capsys.readouterr().out
