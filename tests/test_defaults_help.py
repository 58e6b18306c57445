"""--help shows the defaults a run will use, from each script's one DEFAULTS table."""
import pytest

import cifar10
import fashionmnist


def help_text(module, capsys) -> str:
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_fashionmnist_help_names_each_models_default(capsys, monkeypatch):
    monkeypatch.setitem(fashionmnist.DEFAULTS, "ffn", {**fashionmnist.DEFAULTS["ffn"], "epochs": 7})
    monkeypatch.setitem(fashionmnist.DEFAULTS, "cnn", {**fashionmnist.DEFAULTS["cnn"], "epochs": 11})
    out = help_text(module=fashionmnist, capsys=capsys)
    assert "--epochs EPOCHS (default: 11 for cnn, 7 for ffn)" in out  # from the table, whatever it holds
    assert f"(default: {' '.join(map(str, fashionmnist.DEFAULTS['cnn']['channels']))} for cnn)" in out
    assert "DEFAULTS" not in out
    assert fashionmnist.parse_args(["--model", "ffn", "--out-dir", "x"]).epochs == 7  # and a run uses it


def test_cifar10_help_prints_every_arch_and_preset(capsys, monkeypatch):
    monkeypatch.setitem(cifar10.DEFAULTS, ("gap", "quick"), {**cifar10.DEFAULTS["gap", "quick"], "epochs": 2})
    out = help_text(module=cifar10, capsys=capsys)
    for arch, preset in cifar10.DEFAULTS:
        assert f" {arch} {preset} --batch-size" in out
    assert "gap quick --batch-size 512 --epochs 2 " in out
    assert "--momentum" not in out and "(fixed: momentum 0.9, warmup 0.2)" in out  # not options
    assert "DEFAULTS" not in out


def test_cifar10_help_shows_the_default_presets_values_per_option(capsys, monkeypatch):
    monkeypatch.setitem(cifar10.DEFAULTS, ("dense", "default"), {**cifar10.DEFAULTS["dense", "default"], "epochs": 4})
    monkeypatch.setitem(cifar10.DEFAULTS, ("gap", "default"), {**cifar10.DEFAULTS["gap", "default"], "epochs": 6})
    out = help_text(module=cifar10, capsys=capsys)
    assert "--epochs EPOCHS (default: 4 for dense, 6 for gap)" in out
    assert "--blocks BLOCKS [BLOCKS ...] gap: residual" in out and "(default: 1 1 1 for gap)" in out


TRAIN_OPTIONS = {"seed", "cpu_bf16", "channels_last", "compile", "time_budget"}  # options with their own defaults, not the table's


@pytest.mark.parametrize("arch, preset", list(cifar10.DEFAULTS))
def test_cifar10_runs_use_their_table_row_and_nothing_else(arch, preset):
    """Every training setting a run uses comes from its row of the one table (none from
    TrainConfig's own field defaults), and no row overrides the shared settings --help prints once."""
    import dataclasses
    import torch
    from training import TrainConfig, config_from_args

    row = cifar10.DEFAULTS[arch, preset]
    assert all(row[k] == v for k, v in cifar10.SHARED.items())
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - TRAIN_OPTIONS
    needed = fields - {"low_res_fraction"}  # needed where low_res is on, checked below
    assert needed <= row.keys(), f"not in the table: {needed - row.keys()}"
    args = cifar10.parse_args(["--arch", arch, "--preset", preset])
    cfg = config_from_args(args, torch.device("cpu"))
    for key in fields & row.keys():
        assert getattr(cfg, key) == row[key], key
    for key in ("channels", "dropout", "convs_per_block", "hidden", "blocks", "stem"):
        if key in row:
            assert getattr(args, key) == row[key], key
    assert cfg.low_res_epochs == (int(row["epochs"] * row["low_res_fraction"]) if row["low_res"] else 0)
