"""--time-budget: the epoch arithmetic, a timing that leaves the model and the random streams as they
were, a run that then trains exactly like one with --epochs set to its choice, and bad inputs."""
import json

import pytest
import torch

import cifar10
import cli
import fashionmnist
import training
from cli import UserError, run
from training import MAX_BUDGET_EPOCHS, TrainConfig, build_model, epochs_within_budget, fit, time_steps

CPU = torch.device("cpu")


# ---- the arithmetic, on numbers whose answer is known ------------------------------------------------

def test_the_most_epochs_that_fit_and_no_more():
    # 10 s before training + E * 10 s + 10 s after: 8 epochs end at exactly 100 s, 9 at 110 s
    assert epochs_within_budget(100, spent=10, epoch_seconds=10, after_seconds=10) == 8
    assert epochs_within_budget(99.9, spent=10, epoch_seconds=10, after_seconds=10) == 7
    # a huge budget chooses MAX_BUDGET_EPOCHS, not a schedule stretched over a million epochs
    assert epochs_within_budget(1000, spent=0, epoch_seconds=0.001, after_seconds=0) == MAX_BUDGET_EPOCHS
    assert epochs_within_budget(1e9, spent=5, epoch_seconds=3, after_seconds=10) == MAX_BUDGET_EPOCHS


def test_low_res_epochs_count_at_their_cheaper_cost():
    # int(E / 2) epochs at 4 s, the rest at 10 s: E = 11 costs 20 + 5 * 4 + 6 * 10 = 100, E = 12 104
    assert epochs_within_budget(100, 10, 10, 10, low_res_epoch_seconds=4, low_res_fraction=0.5) == 11
    # a fraction of 0 trains no epoch at low resolution: as without
    assert epochs_within_budget(100, 10, 10, 10, low_res_epoch_seconds=4, low_res_fraction=0.0) == 8


def test_a_budget_too_short_for_one_epoch_is_refused_with_the_fix():
    with pytest.raises(UserError) as err:
        epochs_within_budget(25, spent=10, epoch_seconds=10, after_seconds=10)
    message = str(err.value)
    assert "--time-budget 25 s is too short" in message and "one epoch takes about 10.0 s" in message
    assert "--limit" in message and "at least 30 s" in message and "\n" not in message  # 10 + 10 + 10


# ---- the timing leaves everything as it was -----------------------------------------------------------

def test_timing_leaves_the_model_its_buffers_and_the_random_streams_untouched():
    torch.manual_seed(3)
    model = build_model("GAPNet", dict(in_channels=3, num_classes=10, channels=[4, 8], blocks=[1, 1],
                                       dropout=0.5, batchnorm=True, stem=0))  # dropout draws from the global RNG
    x = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)  # (N, C, H, W)
    y = torch.randint(0, 10, (96,))
    before = {k: v.clone() for k, v in model.state_dict().items()}  # weights and batch-norm statistics
    rng = torch.get_rng_state()
    cfg = TrainConfig(batch_size=32, flip=True, crop=2, channels_last=True, low_res=16, time_budget=60)
    times = time_steps(model, x, y, cfg, mean=[0.5] * 3, std=[0.25] * 3, device=CPU, steps=1)
    assert set(times) == {"step_seconds", "low_res_step_seconds", "eval_batch_seconds"}
    assert all(v > 0 for v in times.values())
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(v == 0 for k, v in after.items() if k.endswith("num_batches_tracked"))  # no batch-norm update
    assert model.training and all(p.grad is None for p in model.parameters())


# ---- fit chooses the epochs; the run trains as with --epochs --------------------------------------------

def fixed_timing(monkeypatch, step=1.0, low_res_step=None, eval_batch=0.5, really_time=True):
    """Make the measured seconds known (the real timing still runs, with its effects, unless
    really_time is False) and the time spent before training 0."""
    real = training.time_steps

    def timed(*args, **kwargs):
        times = real(*args, **kwargs) if really_time else {}
        return {"step_seconds": step, "eval_batch_seconds": eval_batch,
                **({"low_res_step_seconds": low_res_step} if low_res_step is not None or "low_res_step_seconds" in times
                   else {})}
    monkeypatch.setattr(training, "time_steps", timed)
    monkeypatch.setattr(cli, "seconds_since_start", lambda: 0.0)


def test_fit_counts_low_res_epochs_cheaper_and_trains_that_many(monkeypatch):
    fixed_timing(monkeypatch, step=1.0, low_res_step=0.25, eval_batch=0.5)
    model = build_model("GAPNet", dict(in_channels=3, num_classes=10, channels=[4, 8], blocks=[0, 0],
                                       dropout=0.0, batchnorm=True, stem=0))
    x, y = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (64,))
    # 2 steps an epoch, 1 evaluation batch (train_eval): 2.5 s, or 1.0 s at 16x16; after: 10 s allowance
    budget = training.AFTER_TRAINING_SECONDS + 2 * 1.0 + 3 * 2.5 + 0.2  # E = 5: 2 low-res + 3 full epochs
    cfg = TrainConfig(batch_size=32, lr=0.01, low_res=16, low_res_fraction=0.5, time_budget=budget)
    history = fit(model, x, y, cfg, mean=[0.5] * 3, std=[0.25] * 3, device=CPU)
    assert cfg.epochs == 5 and cfg.low_res_epochs == 2 and len(history["epochs"]) == 5
    assert len(history["step_loss"]) == 5 * 2
    record = history["time_budget"]
    assert record["epochs"] == 5 and record["low_res_epochs"] == 2
    assert record["epoch_seconds"] == 2.5 and record["low_res_epoch_seconds"] == 1.0
    assert record["estimated_seconds"] == pytest.approx(budget - 0.2)


def run_fashion(tiny_data_dir, out, *extra):
    fashionmnist.main(["--model", "cnn", "--data-dir", str(tiny_data_dir), "--out-dir", str(out), "--limit", "256",
                       "--batch-size", "64", "--channels", "4", "8", "--hidden", "16", *extra])
    return json.loads((out / "metrics.json").read_text())


def test_a_budget_run_records_its_epochs_and_trains_exactly_like_those_epochs(tiny_data_dir, tmp_path,
                                                                           monkeypatch, capsys):
    # 4 steps of 1 s + 2 evaluation batches of 0.5 s (train_eval 256, test 128 images): 5 s an epoch;
    # after training 2 passes over the 128 test images (0.5 s each) + the allowance
    after = 1.0 + training.AFTER_TRAINING_SECONDS
    fixed_timing(monkeypatch)
    budget = after + 3 * 5.0 + 2.5
    chosen = run_fashion(tiny_data_dir, tmp_path / "budget", "--time-budget", str(budget))
    assert f"--time-budget {budget:g} s: 3 epochs (about 5.0 s each, {after + 15:.0f} s in all)" in capsys.readouterr().out
    assert chosen["config"]["epochs"] == 3 and chosen["config"]["time_budget"] == budget
    record = chosen["time_budget"]
    assert record["epochs"] == 3 and record["step_seconds"] == 1.0
    assert record["estimated_seconds"] == pytest.approx(after + 15)
    monkeypatch.undo()
    fixed = run_fashion(tiny_data_dir, tmp_path / "epochs", "--epochs", "3")
    for key in ("test_loss", "test_accuracy", "train_eval_loss", "confusion_matrix"):
        assert chosen[key] == fixed[key], key
    a, b = (torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("budget", "epochs"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["history"]["step_loss"] == b["history"]["step_loss"]


# ---- bad inputs: one line, exit status 2 -------------------------------------------------------------------

def run_cli(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(lambda: main(argv))
    return exit_.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("argv, message", [
    (["--time-budget", "0"], "expected a positive, finite number of seconds, got 0.0"),
    (["--time-budget", "-5"], "expected a positive, finite number of seconds, got -5.0"),
    (["--time-budget", "nan"], "expected a positive, finite number of seconds, got nan"),
    (["--time-budget", "inf"], "expected a positive, finite number of seconds, got inf"),
    (["--time-budget", "soon"], "expected a number of seconds, got 'soon'"),
    (["--time-budget", "60", "--epochs", "3"], "--time-budget and --epochs conflict"),
    (["--epochs", "3", "--time-budget", "60"], "--time-budget and --epochs conflict"),
    (["--time-budget", "60", "--resume"], "--time-budget and --resume conflict"),
])
def test_bad_budgets_are_one_line_errors(argv, message, capsys):
    code, err = run_cli(fashionmnist.main, argv, capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_cifar10_refuses_a_budget_with_ablation_or_epochs_and_takes_it_over_the_default(capsys):
    code, err = run_cli(cifar10.main, ["--time-budget", "60", "--ablation"], capsys)
    assert code == 2 and "--ablation trains several" in err and len(err.splitlines()) == 1
    code, err = run_cli(cifar10.main, ["--time-budget", "60", "--epochs", "2"], capsys)
    assert code == 2 and "--time-budget and --epochs conflict" in err
    args = cifar10.parse_args(["--time-budget", "60"])  # the table's epochs are no conflict
    assert training.config_from_args(args, CPU).time_budget == 60.0


def test_torchrun_with_several_processes_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, err = run_cli(fashionmnist.main, ["--time-budget", "60"], capsys)
    assert code == 2 and "under torchrun give --epochs" in err and len(err.splitlines()) == 1


def test_a_budget_too_short_for_one_epoch_stops_before_training(tiny_data_dir, tmp_path, monkeypatch, capsys):
    fixed_timing(monkeypatch, step=100.0, really_time=False)
    argv = ["--data-dir", str(tiny_data_dir), "--out-dir", str(tmp_path), "--limit", "256", "--channels", "4", "8",
            "--hidden", "16", "--time-budget", "30"]
    code, err = run_cli(fashionmnist.main, argv, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --time-budget 30 s is too short: one epoch takes about 101.0 s") and "--limit" in err
    assert not (tmp_path / "model.pt").exists()
