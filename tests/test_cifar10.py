"""cifar10.py: both architectures, the run folder, the ablation, the split, torchrun/DDP and bad input.

Script runs use the tiny fake cifar10.npz (256 train / 128 test images) and small widths."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cifar10
import hooks
from cli import UserError, run
from data import train_val_split
from training import build_model, count_parameters, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--channels", "8", "16", "32", "--batch-size", "64", "--val-size", "56", "--epochs", "1"]
RUN_FILES = {"model.pt", "metrics.json", "history.csv", "steps.csv", "loss.png", "architecture.txt"}


def small_args(arch, *extra):
    return cifar10.parse_args(["--arch", arch, "--channels", "8", "16", "32", *extra])


def run_script(tiny_data_dir, out, *argv):
    cifar10.main([*SMALL, "--data-dir", str(tiny_data_dir), "--out-dir", str(out), *argv])


# ---- the two networks --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["dense", "gap"])
@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_both_networks_build_for_every_setting(arch, batchnorm, dropout):
    model = build_model(*cifar10.model_spec(small_args(arch), batchnorm=batchnorm, dropout=dropout))
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    types = [type(m) for m in model.modules()]
    assert (nn.BatchNorm2d in types) == batchnorm
    assert (nn.Dropout in types) == (dropout > 0)
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())


def test_gap_head_is_global_average_pooling_and_one_linear_layer():
    model = build_model(*cifar10.model_spec(small_args("gap"), batchnorm=True, dropout=0.3)).eval()
    names = [n for n, _ in model.named_children()]
    assert names == ["features", "gap", "flatten", "dropout", "fc"]
    assert isinstance(model.gap, nn.AdaptiveAvgPool2d) and isinstance(model.fc, nn.Linear)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert any(isinstance(m, type(model.features.res2_1)) for m in model.features)  # residual blocks
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)                      # (4, 32, 4, 4)
        assert torch.allclose(model(x), model.fc(features.mean((2, 3))), atol=1e-5)


def test_dense_head_takes_low_res_images_through_adaptive_pooling_an_identity_at_full_size():
    """With --low-res the dense head starts with adaptive average pooling (as torchvision's VGG):
    24x24 images reach it at the 4x4 it was sized for, and at 32x32 the network computes exactly
    what the same weights compute without it (so checkpoints carry over both ways)."""
    spec = cifar10.model_spec(small_args("dense", "--low-res", "24"), batchnorm=True, dropout=0.0)
    assert spec[1]["adaptive_pool"] is True
    model = build_model(*spec).eval()
    plain = build_model(*cifar10.model_spec(small_args("dense", "--low-res", "0"), batchnorm=True, dropout=0.0))
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in plain.modules())
    plain.load_state_dict(model.state_dict())  # no parameters added
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), plain.eval()(x))
        assert model(torch.randn(3, 3, 24, 24)).shape == (3, 10)
    with pytest.raises(RuntimeError):
        plain(torch.randn(3, 3, 24, 24))  # without it the flattened size no longer fits fc1


def test_dense_network_has_a_dense_head_and_airbench_order():
    model = build_model(*cifar10.model_spec(small_args("dense", "--hidden", "64"), batchnorm=True, dropout=0.2))
    order = list(model.features._modules)
    assert order[:4] == ["conv1_1", "pool1", "bn1_1", "relu1_1"]  # pool before norm and ReLU
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32 * 4 * 4, 64), (64, 10)]


def test_cnn_defaults_unchanged_for_fashion_mnist():
    import cnn
    order = list(cnn.CNN().features._modules)
    assert order[:4] == ["conv1_1", "bn1_1", "relu1_1", "pool1"]


@pytest.mark.parametrize("arch", ["dense", "gap"])
def test_architecture_table_has_every_layer_shape_and_the_total(arch):
    name, margs = cifar10.model_spec(small_args(arch), batchnorm=True, dropout=0.2)
    model = build_model(name, margs)
    before = [p.clone() for p in model.parameters()]
    rows = cifar10.layer_table(model)
    assert hooks.hook_count(model) == 0 and model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert sum(r["parameters"] for r in rows) == count_parameters(model)
    assert rows[-1]["shape"] == [10]
    convs = [r for r in rows if r["type"].startswith("Conv2d")]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    text = cifar10.architecture_text(model, name, margs)
    assert f"total parameters: {count_parameters(model):,}" in text
    assert "| 32×4×4 |" in text  # the last stage's output shape
    assert ("residual blocks" in text) == (arch == "gap")


def test_networks_without_batch_norm_get_he_initialization():
    torch.manual_seed(0)
    args = small_args("dense", "--channels", "64", "64", "64")
    model = build_model(*cifar10.model_spec(args, batchnorm=False, dropout=0.0))
    out_before = model.classifier.out.weight.clone()
    cifar10.he_init(model)
    conv = model.features.conv2_1                            # fan_in = 64 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert torch.equal(model.classifier.out.weight, out_before)  # the output layer keeps its default


# ---- the split and the test set ---------------------------------------------------------------

def test_train_validation_split_is_disjoint_seeded_and_45k_5k():
    train, val = train_val_split(50_000, 5_000, seed=0)
    assert len(train) == 45_000 and len(val) == 5_000
    assert len(set(train.tolist()) | set(val.tolist())) == 50_000
    assert torch.equal(val, train_val_split(50_000, 5_000, seed=0)[1])
    assert not torch.equal(val, train_val_split(50_000, 5_000, seed=1)[1])


def test_split_data_sizes_and_limits(tiny_data_dir):
    from data import load_dataset
    ds = load_dataset("cifar10", tiny_data_dir)
    args = cifar10.parse_args(["--val-size", "56", "--limit", "100", "--test-limit", "50"])
    splits = cifar10.split_data(ds, args)
    assert [len(splits[k][0]) for k in ("train", "val", "test")] == [100, 56, 50]
    train_idx, val_idx = train_val_split(256, 56, 0)
    assert torch.equal(splits["val"][0], ds.x_train[val_idx])  # validation comes from the training set


def test_flip_tta_averages_each_image_with_its_left_right_mirror():
    """test_accuracy_tta: the logits of each image and of its mirror image (columns reversed)
    averaged. A linear model on the raw pixels is not flip invariant, so a flip of the wrong axis
    (rows: upside down) or no flip gives other numbers."""
    from types import SimpleNamespace
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (40,))
    ds = SimpleNamespace(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    last = dict(train_loss=1.0, train_accuracy=0.5, train_eval_loss=1.0, train_eval_accuracy=0.5)
    history = {"epochs": [last], "train_eval_images": 40}
    out = cifar10.final_metrics(model=model, splits={"val": (x, y), "test": (x, y)}, ds=ds,
                                device=torch.device("cpu"), history=history, tta=True)
    plain_rule = cifar10.final_metrics(model=model, splits={"val": (x, y), "test": (x, y)}, ds=ds,
                                       device=torch.device("cpu"), history=history, tta=False)

    def logits(images: np.ndarray) -> torch.Tensor:                        # (N, 3, 32, 32) uint8
        z = (images / 255 - np.array(ds.mean)[:, None, None]) / np.array(ds.std)[:, None, None]
        with torch.no_grad():
            return model(torch.from_numpy(z).float())

    mirrored = x.numpy()[:, :, :, ::-1].copy()                            # each row read right to left
    plain = logits(images=x.numpy())
    tta = (plain + logits(images=mirrored)) / 2
    upside_down = (plain + logits(images=x.numpy()[:, :, ::-1].copy())) / 2
    expected = nn.functional.cross_entropy(tta, y).item()
    assert abs(expected - nn.functional.cross_entropy(upside_down, y).item()) > 1e-3  # the check can tell
    assert out["test_loss_tta"] == pytest.approx(expected, rel=1e-4)
    assert out["test_accuracy_tta"] == pytest.approx((tta.argmax(1) == y).float().mean().item())
    assert out["test_loss"] == pytest.approx(nn.functional.cross_entropy(plain, y).item(), rel=1e-4)
    # the reported accuracy is the rule's; the loss stays plain (the curves' and the gap's)
    plain_acc, tta_acc = [(z.argmax(1) == y).float().mean().item() for z in (plain, tta)]
    assert plain_acc != pytest.approx(tta_acc)  # the check can tell the rules apart
    for split in ("val", "test"):
        assert out[f"{split}_accuracy"] == pytest.approx(tta_acc) == out[f"{split}_accuracy_tta"]
        assert plain_rule[f"{split}_accuracy"] == pytest.approx(plain_acc) == out[f"{split}_accuracy_plain"]
        assert plain_rule[f"{split}_loss"] == out[f"{split}_loss"]


# ---- script runs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["dense", "gap"])
def test_smoke_run_writes_every_output(arch, tiny_data_dir, tmp_path):
    out = tmp_path / arch
    run_script(tiny_data_dir, out, "--arch", arch, "--test-limit", "100")
    assert {p.name for p in out.iterdir()} == RUN_FILES
    with Image.open(out / "loss.png") as im:
        im.verify()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "test_accuracy_tta", "val_loss", "loss_gap", "train_eval_loss"):
        assert math.isfinite(metrics[key])
    # the overfitting gap compares eval-mode losses, not the running (augmented, smoothed) training loss
    assert metrics["loss_gap"] == pytest.approx(metrics["val_loss"] - metrics["train_eval_loss"])
    assert metrics["train_eval_images"] == 200
    assert metrics["train_images"] == 200 and metrics["val_images"] == 56 and metrics["test_images"] == 100
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 1 and "val_accuracy" in rows[0] and "train_eval_loss" in rows[0]
    assert not any(k.startswith("test") for k in rows[0])  # the test set is not looked at during training
    # the per-epoch history is plain; metrics' val_accuracy is the reported (flip-averaged) rule's
    assert float(rows[0]["val_accuracy"]) == pytest.approx(metrics["val_accuracy_plain"], abs=1e-6)
    model, ckpt = load_checkpoint(out / "model.pt")
    assert ckpt["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert ckpt["model"]["name"] == {"dense": "CNN", "gap": "GAPNet"}[arch]
    assert "total parameters" in (out / "architecture.txt").read_text()


def test_dense_run_with_progressive_resizing_trains_small_then_full_size(tiny_data_dir, tmp_path):
    out = tmp_path / "dense-low-res"
    run_script(tiny_data_dir, out, "--arch", "dense", "--test-limit", "100", "--epochs", "2", "--low-res", "16",
               "--low-res-fraction", "0.5")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["low_res"] == 16 and len(list(csv.DictReader(open(out / "history.csv")))) == 2
    assert metrics["low_res_epochs"] == 1
    assert [int(r["image_size"]) for r in csv.DictReader(open(out / "history.csv"))] == [16, 32]
    assert "| classifier.adaptive_pool | AdaptiveAvgPool2d to 4×4 | 32×4×4 | 0 |" in (out / "architecture.txt").read_text()
    model, _ = load_checkpoint(out / "model.pt")
    assert isinstance(model.classifier.adaptive_pool, nn.AdaptiveAvgPool2d)


def test_default_out_dir_names_the_variant():
    assert cifar10.parse_args(["--arch", "dense"]).out_dir == Path("runs/cifar10-dense")
    assert cifar10.parse_args(["--no-batchnorm", "--dropout", "0"]).out_dir == Path("runs/cifar10-gap-nobn-nodrop")
    assert cifar10.parse_args(["--preset", "quick"]).out_dir == Path("runs/cifar10-gap-quick")
    assert cifar10.parse_args(["--arch", "dense", "--ablation"]).out_dir == Path("runs/cifar10-dense-ablation")
    assert cifar10.parse_args(["--preset", "large"]).out_dir == Path("runs/cifar10-gap-large")
    assert cifar10.parse_args(["--arch", "dense", "--dropout", "0"]).out_dir == Path("runs/cifar10-dense")  # its default
    assert cifar10.parse_args(["--arch", "dense", "--dropout", "0.2"]).out_dir == Path("runs/cifar10-dense-drop")


def test_ablation_turns_dropout_on_where_the_default_has_none():
    assert cifar10.DEFAULTS["dense", "default"]["dropout"] == 0  # so the ablation needs a rate of its own
    assert cifar10.parse_args(["--arch", "dense"]).dropout == 0
    assert cifar10.parse_args(["--arch", "dense", "--ablation"]).dropout == cifar10.ABLATION_DROPOUT > 0
    assert cifar10.parse_args(["--arch", "dense", "--ablation", "--dropout", "0.3"]).dropout == 0.3
    assert cifar10.parse_args(["--arch", "gap", "--ablation"]).dropout == cifar10.DEFAULTS["gap", "default"]["dropout"]


@pytest.mark.parametrize("arch", ["dense", "gap"])
def test_presets_grow_from_quick_to_default_to_large(arch):
    sizes = {}
    for preset in ("quick", "default", "large"):
        args = cifar10.parse_args(["--arch", arch, "--preset", preset])
        name, kwargs = cifar10.model_spec(args, batchnorm=True, dropout=args.dropout)
        sizes[preset] = count_parameters(build_model(name, kwargs))
    assert sizes["quick"] < sizes["default"] < sizes["large"]


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tiny_data_dir, tmp_path, monkeypatch):
    import training
    run_script(tiny_data_dir, tmp_path / "straight", "--arch", "gap", "--epochs", "2")
    real_epoch = training.train_epoch

    def interrupted(*args, **kwargs):
        if kwargs["epoch"] == 1:  # the epoch index: stop during the second epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(training, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_script(tiny_data_dir, tmp_path / "resumed", "--arch", "gap", "--epochs", "2")
    monkeypatch.setattr(training, "train_epoch", real_epoch)
    run_script(tiny_data_dir, tmp_path / "resumed", "--arch", "gap", "--epochs", "2", "--resume")
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("straight", "resumed"))
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "resumed" / "history.csv"))] == [1, 2]
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
    with pytest.raises(UserError, match="--resume: .* was trained with --epochs 2, not 3"):
        run_script(tiny_data_dir, tmp_path / "resumed", "--arch", "gap", "--epochs", "3", "--resume")


def test_ablation_writes_four_variants(tiny_data_dir, tmp_path):
    run_script(tiny_data_dir, tmp_path, "--arch", "dense", "--ablation", "--test-limit", "64", "--lr", "0.05")
    assert {"ablation.json", "ablation.md", "ablation.png"} <= {p.name for p in tmp_path.iterdir()}
    for folder, *_ in cifar10.VARIANTS:
        assert RUN_FILES <= {p.name for p in (tmp_path / folder).iterdir()}
    text = (tmp_path / "ablation.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + four variants
    assert "Dropout: p=0.2 in the dense head, before each of its 2 linear layers" in text
    assert "Setting: 1 epoch, channels 8-16-32, peak learning rate 0.05, batch 64, optimizer muon, 1 seed (0)" in text
    default = cifar10.DEFAULTS["dense", "default"]
    assert f"The default dense network trains with {default['epochs']} epochs, channels 48-96-192" in text
    ablation = json.loads((tmp_path / "ablation.json").read_text())
    assert ablation["setting"]["dropout"] == 0.2 and ablation["setting"]["seeds"] == [0]
    assert set(ablation["effects"]["dropout"]) == {"with_batchnorm", "without_batchnorm"}
    rows = ablation["variants"]
    assert [(r["batchnorm"], r["dropout"] > 0) for r in rows] == [(True, True), (True, False), (False, True),
                                                                  (False, False)]
    for r in rows:  # everything else equal: same data, epochs and seed
        assert r["epochs"] == 1 and r["runs"][0]["seed"] == 0
    with Image.open(tmp_path / "ablation.png") as im:
        im.verify()
    nobn = json.loads((tmp_path / "nobn-nodrop" / "metrics.json").read_text())
    assert nobn["batchnorm"] is False and nobn["dropout"] == 0


def test_ablation_summary_averages_seeds_and_reports_divergence():
    runs = [{"seed": s, "val_accuracy": a, "val_accuracy_plain": a, "val_accuracy_tta": a, "test_accuracy": a,
             "test_accuracy_plain": a, "test_accuracy_tta": a,
             "train_loss": 1.0, "train_eval_loss": 1.0, "train_eval_accuracy": a, "val_loss": 1.2, "loss_gap": 0.2,
             "epochs": 3, "train_seconds": 10.0, "parameters": 1000,
             "history": [{"epoch": 1, "val_loss": 1.2, "val_accuracy": a, "train_loss": 1.0, "train_eval_loss": 1.0}]}
            for s, a in ((0, 0.8), (1, 0.9))]
    row = cifar10.summarize("bn-drop", "batch norm + dropout", True, 0.2, runs + [{"seed": 2, "diverged": "nan"}])
    assert row["val_accuracy"] == pytest.approx(0.85) and row["val_accuracy_std"] == pytest.approx(0.0707, abs=1e-3)
    assert row["diverged"] == 1 and row["seeds"] == 3
    table = cifar10.ablation_table([row], "gap")
    assert "85.00 ± 7.07" in table and "2 of 3 seeds (1 diverged)" in table
    one = cifar10.summarize("bn-drop", "batch norm + dropout", True, 0.2, runs[:1] + [{"seed": 2, "diverged": "nan"}])
    assert "| 80.00 |" in cifar10.ablation_table([one], "gap")  # one seed counted: no ± 0.00
    setting = {"epochs": 3, "channels": [8, 16], "lr": 0.1, "batch_size": 64, "seeds": [0, 1], "train_images": 100,
               "val_images": 50, "dropout": 0.2, "dropout_position": "before fc"}
    setting["default_network"] = {k: setting[k] for k in ("epochs", "channels", "lr", "batch_size")}
    for tta, rule in ((True, "mirror image's (flip TTA); losses are plain"), (False, "alone (plain); losses are plain")):
        assert rule in cifar10.ablation_table([row], "gap", setting={**setting, "tta": tta})


def ablation_rows(with_bn: dict, without_bn: dict, seeds=(0, 1, 2)) -> list[dict]:
    """Four summarized variants from validation accuracies per seed: {(dropout on): [acc per seed]}."""
    rows = []
    for folder, label, batchnorm, drop_on in cifar10.VARIANTS:
        accs = (with_bn if batchnorm else without_bn)[drop_on]
        runs = [{"seed": s, "val_accuracy": a, "val_accuracy_plain": a, "val_accuracy_tta": a, "test_accuracy": a,
                 "test_accuracy_plain": a, "test_accuracy_tta": a,
                 "train_loss": 1.0, "train_eval_loss": 0.5, "train_eval_accuracy": 0.9, "val_loss": 0.6 + 0.1 * drop_on,
                 "loss_gap": 0.1 + 0.1 * drop_on, "epochs": 2, "train_seconds": 5.0, "parameters": 1000,
                 "history": [{"epoch": e, "val_loss": 0.7, "val_accuracy": a, "train_loss": 1.0,
                              "train_eval_loss": 0.6} for e in (1, 2)]}
                for s, a in zip(seeds, accs)]
        rows.append(cifar10.summarize(folder, label, batchnorm, 0.2 if drop_on else 0.0, runs))
    return rows


def test_ablation_reports_dropout_per_batch_norm_setting_never_averaged():
    """Dropout helps by 2 points with batch norm and hurts by 6 without: the table says +2 and -6,
    never their average -2."""
    rows = ablation_rows({True: [0.82, 0.83, 0.84], False: [0.80, 0.81, 0.82]},
                         {True: [0.50, 0.52, 0.54], False: [0.56, 0.58, 0.60]})
    effects = cifar10.ablation_effects(rows)
    with_bn, without_bn = effects["dropout"]["with_batchnorm"], effects["dropout"]["without_batchnorm"]
    assert with_bn["val_accuracy"]["mean"] == pytest.approx(0.02)
    assert without_bn["val_accuracy"]["mean"] == pytest.approx(-0.06)
    assert with_bn["val_accuracy"]["differences"] == pytest.approx([0.02] * 3)
    assert with_bn["val_accuracy"]["within_spread"] is False  # 2 points against a seed std of 1
    assert without_bn["loss_gap"]["mean"] == pytest.approx(0.1)
    assert effects["batchnorm"]["without_dropout"]["val_accuracy"]["mean"] == pytest.approx(0.23)
    table = cifar10.ablation_table(rows, "gap", effects=effects)
    assert "- dropout with batch norm: +2.00 ± 0.00 over 3 seeds, beyond the seed spread" in table
    assert "- dropout without batch norm: -6.00 ± 0.00 over 3 seeds" in table
    assert "-2.00" not in table
    fig = cifar10.plot_ablation(rows, "gap")
    import plots
    assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN and min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    assert [ax.get_title() for ax in fig.axes[:2]] == ["with batch norm", "without batch norm"]


def test_ablation_effect_within_the_seed_spread_is_flagged():
    rows = ablation_rows({True: [0.80, 0.84, 0.82], False: [0.81, 0.82, 0.83]},
                         {True: [0.50, 0.52, 0.54], False: [0.56, 0.58, 0.60]})
    effect = cifar10.ablation_effects(rows)["dropout"]["with_batchnorm"]["val_accuracy"]
    assert effect["mean"] == pytest.approx(0.0) and effect["within_spread"] is True
    one = cifar10.ablation_effects(ablation_rows({True: [0.8], False: [0.7]}, {True: [0.5], False: [0.6]}, seeds=(0,)))
    assert one["dropout"]["with_batchnorm"]["val_accuracy"]["within_spread"] is None  # one seed: unknown


def test_dropout_position_follows_the_model():
    dense = cifar10.parse_args(["--arch", "dense", "--hidden", "128", "64"])
    assert "before each of its 3 linear layers" in cifar10.dropout_position(
        "dense", cifar10.model_spec(dense, batchnorm=True, dropout=0.2)[1])
    no_hidden = cifar10.parse_args(["--arch", "dense", "--hidden"])
    assert "before the one linear (output) layer" in cifar10.dropout_position(
        "dense", cifar10.model_spec(no_hidden, batchnorm=True, dropout=0.2)[1])
    assert "globally average-pooled" in cifar10.dropout_position("gap", {})


# ---- torchrun / DistributedDataParallel ---------------------------------------------------------

def test_torchrun_two_processes_match_one_process(tiny_data_dir, tmp_path):
    """Without batch norm (per-process statistics) and dropout (per-process masks), two processes
    that each take half of every global batch, with its shifts and flips, compute the one-process
    gradient (DDP averages the two halves' mean gradients): the same losses, to float32 rounding."""
    argv = [*SMALL, "--arch", "gap", "--data-dir", str(tiny_data_dir), "--test-limit", "64", "--device", "cpu",
            "--epochs", "2", "--no-batchnorm", "--dropout", "0", "--lr", "0.05", "--no-cpu-bf16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(ROOT / "cifar10.py"), *argv, "--out-dir", str(tmp_path / "ddp")],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    cifar10.main([*argv, "--out-dir", str(tmp_path / "one")])
    ddp, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one"))
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert {p.name for p in (tmp_path / "ddp").iterdir()} == RUN_FILES  # one set of outputs, no extras
    h_ddp, h_one = (list(csv.DictReader(open(tmp_path / d / "history.csv"))) for d in ("ddp", "one"))
    assert [r["samples"] for r in h_ddp] == [r["samples"] for r in h_one]  # same global batches
    s_ddp, s_one = (np.loadtxt(tmp_path / d / "steps.csv", delimiter=",", skiprows=1)[:, 1] for d in ("ddp", "one"))
    # the first steps agree to float32 rounding; after that, half-batch and full-batch convolution
    # kernels (which differ on AVX512 CPUs) round differently and the runs drift apart slowly
    assert len(s_one) == 6 and np.allclose(s_ddp[:2], s_one[:2], rtol=1e-5) and np.allclose(s_ddp, s_one, rtol=2e-3)
    assert ddp["val_loss"] == pytest.approx(one["val_loss"], rel=2e-3)
    assert abs(ddp["test_accuracy"] - one["test_accuracy"]) <= 1 / 64  # at most one of the 64 test images


def test_torchrun_ablation_writes_one_table(tiny_data_dir, tmp_path):
    """Only the first process has results; the others must not summarize empty ones."""
    argv = [*SMALL, "--arch", "gap", "--ablation", "--data-dir", str(tiny_data_dir), "--test-limit", "64",
            "--device", "cpu", "--out-dir", str(tmp_path)]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(ROOT / "cifar10.py"), *argv], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   check=True, capture_output=True, timeout=180)
    rows = json.loads((tmp_path / "ablation.json").read_text())["variants"]
    assert [r["variant"] for r in rows] == [v[0] for v in cifar10.VARIANTS]
    assert all(json.loads((tmp_path / r["variant"] / "metrics.json").read_text())["world_size"] == 2 for r in rows)


# ---- bad input -------------------------------------------------------------------------------------

def main_exit(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run(lambda: cifar10.main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, err[-1]


@pytest.mark.parametrize("argv, message", [
    (["--arch", "resnet"], "invalid choice: 'resnet'"),
    (["--arch", "dense", "--blocks", "1"], "--blocks applies to --arch gap only"),
    (["--arch", "dense", "--stem", "16"], "--stem applies to --arch gap only"),
    (["--arch", "dense", "--low-res", "4"], "--low-res must be 0 (off) or from 8 to 31 pixels"),
    (["--low-res", "40"], "--low-res must be 0 (off) or from 8 to 31 pixels"),
    (["--ablation", "--no-batchnorm"], "--ablation trains with and without batch norm"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--seeds", "3"], "--seeds is for --ablation"),
    (["--channels", "8", "8", "8", "8", "8", "8"], "use at most 5"),
    (["--seed", "-1"], "expected a seed from 0 to 4294967295, got -1"),
    (["--seed", str(2**40)], "expected a seed from 0 to 4294967295"),
    (["--lr", "nan"], "--lr: expected a finite number within float32's range"),
    (["--weight-decay", "inf"], "--weight-decay: expected a finite number within float32's range"),
    (["--muon-lr", "1e300"], "(at most 3.4e+38 in size), got 1e+300"),  # torch would overflow
])
def test_bad_arguments_give_one_line_errors(argv, message, capsys):
    code, last = main_exit(argv, capsys)
    assert code == 2 and message in last


def test_limit_larger_than_the_data(tiny_data_dir, tmp_path, capsys):
    code, last = main_exit(["--data-dir", str(tiny_data_dir), "--val-size", "56", "--limit", "1000",
                            "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and last == ("error: --limit 1000 is more than the 200 training images left after holding "
                                  "out --val-size 56; use --limit 200 or less")
    code, last = main_exit(["--data-dir", str(tiny_data_dir), "--test-limit", "999", "--val-size", "56",
                            "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and "--test-limit 999 is more than the 128 test images" in last
    code, last = main_exit(["--data-dir", str(tiny_data_dir), "--val-size", "256", "--out-dir", str(tmp_path)],
                           capsys)
    assert code == 2 and "--val-size 256 leaves no training images" in last
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_data_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import data

    def offline(*a, **k):
        raise UserError("could not download cifar10 through torchvision (offline)")
    monkeypatch.setattr(data, "download", offline)
    code, last = main_exit(["--data-dir", str(tmp_path / "nothing"), "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and last.startswith("error: could not download cifar10")
