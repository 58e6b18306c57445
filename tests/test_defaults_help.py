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
    out = help_text(fashionmnist, capsys)
    assert "--epochs EPOCHS (default: 11 for cnn, 7 for ffn)" in out  # from the table, whatever it holds
    assert f"(default: {' '.join(map(str, fashionmnist.DEFAULTS['cnn']['channels']))} for cnn)" in out
    assert "DEFAULTS" not in out
    assert fashionmnist.parse_args(["--model", "ffn", "--out-dir", "x"]).epochs == 7  # and a run uses it


def test_cifar10_help_prints_every_arch_and_preset(capsys, monkeypatch):
    monkeypatch.setitem(cifar10.DEFAULTS, ("gap", "quick"), {**cifar10.DEFAULTS["gap", "quick"], "epochs": 3})
    out = help_text(cifar10, capsys)
    for arch, preset in cifar10.DEFAULTS:
        assert f" {arch} {preset} --batch-size" in out
    assert "gap quick --batch-size 512 --epochs 3 " in out
    assert "--momentum" not in out and "(fixed: momentum 0.9, warmup 0.2)" in out  # not options
    assert "DEFAULTS" not in out
