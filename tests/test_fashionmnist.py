"""Smoke runs of fashionmnist.py on a slice of the real data, and its bad-input errors."""
import csv
import json
import urllib.error

import numpy as np
import torch
import pytest
from PIL import Image

import data
import fashionmnist
import training
from conftest import FASHION_CLASSES, reference
from cli import run
from training import load_checkpoint, predict

FILES = ["model.pt", "metrics.json", "history.csv", "steps.csv", "loss.png", "confusion_matrix.png",
         "examples.png"]


@pytest.mark.parametrize("model", ["ffn", "cnn"])
def test_smoke_run_writes_every_output(model, real_data_dir, tmp_path):
    out = tmp_path / model
    cnn_args = ["--channels", "8", "16"] if model == "cnn" else []
    fashionmnist.main(["--model", model, "--limit", "1024", "--epochs", "2", "--data-dir", str(real_data_dir),
                       "--out-dir", str(out), "--hidden", "64", *cnn_args, "--batch-size", "128"])
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for png in ("loss.png", "confusion_matrix.png", "examples.png"):
        with Image.open(out / png) as im:
            im.verify()
    metrics = json.loads((out / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10_000
    assert metrics["test_accuracy"] == pytest.approx(np.trace(cm) / 10_000)
    assert 0.3 < metrics["test_accuracy"] <= 1  # 2 short epochs on 1k images: well above chance (0.1)
    assert metrics["parameters"] > 0 and metrics["train_images"] == 1024
    assert metrics["precision"] == ("bfloat16 autocast" if training.cpu_bf16_supported() else "float32")  # auto
    assert metrics["wall_seconds"] >= metrics["train_seconds"] > 0  # the process, and its training within it
    assert set(metrics["per_class_accuracy"]) == set(data.load_dataset("fashion_mnist", real_data_dir).classes)
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "test_loss" in rows[0]
    steps = list(csv.DictReader(open(out / "steps.csv")))
    assert len(steps) == 2 * (1024 // 128)
    model_, ckpt = load_checkpoint(out / "model.pt")
    assert ckpt["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert ckpt["model"]["name"] == {"ffn": "FFN", "cnn": "CNN"}[model]


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(lambda: fashionmnist.main(argv))
    return exit_.value.code, capsys.readouterr().err.strip()


def test_unknown_model_is_a_one_line_error(capsys):
    code, err = run_cli(argv=["--model", "resnet"], capsys=capsys)
    assert code == 2 and "invalid choice: 'resnet'" in err


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "expected a number >= 1"),
    (["--model", "cnn", "--kernel-size", "4"], "--kernel-size must be odd"),
    (["--model", "cnn", "--channels", "8", "8", "8", "8", "8"], "at most 4"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--crop", "-2"], "--crop must be >= 0"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
    (["--model", "ffn", "--kernel-size", "5"], "--kernel-size applies to --model cnn only"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
])
def test_bad_arguments(argv, message, capsys):
    code, err = run_cli(argv=argv, capsys=capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1  # no usage block first


@pytest.mark.parametrize("error", [
    urllib.error.URLError("no network"),
    RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://x, got:\n<urlopen error -3>"),
])
def test_missing_data_offline_is_a_one_line_error(error, tmp_path, monkeypatch, capsys):
    def offline(name, root):
        raise error
    monkeypatch.setattr(data, "_torchvision_arrays", offline)
    code, err = run_cli(argv=["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")], capsys=capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: could not download fashion_mnist") and "fashion_mnist.npz" in err


def test_corrupt_data_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "fashion_mnist.npz").write_bytes(b"PK\x03\x04 broken")
    code, err = run_cli(argv=["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")], capsys=capsys)
    assert code == 2 and "not a readable .npz" in err and len(err.splitlines()) == 1


def test_limit_larger_than_the_data_is_a_one_line_error(tiny_data_dir, tmp_path, capsys):
    argv = ["--data-dir", str(tiny_data_dir), "--limit", "1000", "--out-dir", str(tmp_path)]
    code, err = run_cli(argv=argv, capsys=capsys)
    assert code == 2 and err == ("error: --limit 1000 is more than the 256 training images left after holding "
                                 "out --val 0; use --limit 256 or less")


# ---- what the numbers and figures claim, on inputs whose answer is known ----------------------------------

def test_confusion_matrix_rows_are_true_classes_and_per_class_accuracy_is_recall():
    y = torch.tensor([0, 0, 0, 1])                      # three images of class 0, one of class 1
    logits = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])  # predicted 0, 0, 1, 1
    r = fashionmnist.test_results(logits, y, ["zero", "one"])
    assert r["confusion_matrix"] == [[2, 1], [0, 1]]   # row = true class, column = predicted
    assert r["per_class_accuracy"] == {"zero": round(2 / 3, 4), "one": 1.0}  # recall, not precision (2/2)


def test_confusion_matrix_equals_sklearn():
    confusion_matrix = reference("sklearn.metrics").confusion_matrix
    g = torch.Generator().manual_seed(0)
    y, pred = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (500,), generator=g)
    y[y == 9] = 8   # class 9 never true: its row must still be there, all zeros
    expected = confusion_matrix(y.numpy(), pred.numpy(), labels=range(10))
    assert (fashionmnist.confusion_matrix(y, pred, 10) == expected).all() and expected[9].sum() == 0


def test_example_titles_name_the_predicted_and_the_true_class():
    x = torch.zeros(2, 1, 28, 28)
    y, pred = torch.tensor([3, 5]), torch.tensor([3, 7])
    picks = (torch.tensor([0, 1]), torch.tensor([True, False]))
    classes = [f"class{i}" for i in range(10)]
    fig = fashionmnist.examples_figure(x, y, pred, torch.tensor([0.9, 0.6]), picks, classes, "CNN")
    titles = [ax.get_title() for ax in fig.axes]
    assert "predicted: class3 (90%)" in titles[0] and "true: class3" in titles[0] and titles[0].startswith("correct")
    assert "predicted: class7 (60%)" in titles[1] and "true: class5" in titles[1] and titles[1].startswith("wrong")
    assert "CNN" in fig._suptitle.get_text()


def planted_val_data(folder, n_train: int, n_val: int, seed: int):
    """fashion_mnist.npz whose held-out images contradict the training images: class c is
    brightest in band c of the training images (learnable), but each image train_val_split holds
    out for --val n_val is labelled c + 1. A network that learned the training images is right on
    the training images and wrong on every held-out one. Every image is distinct (noise)."""
    rng = np.random.default_rng(seed=0)
    band = rng.integers(0, 10, n_train)                                     # (N,) class by brightness
    x = rng.integers(0, 60, (n_train, 28, 28)).astype(np.uint8)
    for c in range(10):
        x[band == c, c * 28 // 10:(c + 1) * 28 // 10] += 150
    y = band.copy()
    _, val_idx = data.train_val_split(n_train, n_val, seed)
    y[val_idx.numpy()] = (band[val_idx.numpy()] + 1) % 10
    np.savez_compressed(folder / "fashion_mnist.npz", x_train=x, y_train=y.astype(np.uint8), x_test=x[:64],
                        y_test=band[:64].astype(np.uint8), classes=np.array(FASHION_CLASSES))
    return x, y, val_idx


def test_val_measures_the_held_out_images_never_the_trained_on_ones(tmp_path, monkeypatch):
    n_train, n_val, seed = 320, 64, 3
    x, y, val_idx = planted_val_data(folder=tmp_path, n_train=n_train, n_val=n_val, seed=seed)
    seen = {}
    real_fit = fashionmnist.fit

    def recording_fit(model, x_fit, y_fit, cfg, **kwargs):
        seen["train"], seen["evals"] = x_fit.clone(), kwargs["evals"]
        return real_fit(model, x_fit, y_fit, cfg, **kwargs)

    monkeypatch.setattr(fashionmnist, "fit", recording_fit)
    out = tmp_path / "run"
    fashionmnist.main(["--model", "ffn", "--hidden", "64", "--val", str(n_val), "--epochs", "6",
                       "--batch-size", "32", "--no-cpu-bf16", "--seed", str(seed),
                       "--data-dir", str(tmp_path), "--out-dir", str(out)])
    # the validation images are exactly the held-out ones, and none of them was trained on
    x_val, y_val = seen["evals"]["val"]
    assert torch.equal(x_val[:, 0], torch.from_numpy(x[val_idx.numpy()])), "not the held-out images"
    assert torch.equal(y_val, torch.from_numpy(y[val_idx.numpy()]).long()), "not the held-out labels"
    train_rows = {bytes(img.numpy()) for img in seen["train"][:, 0]}
    assert len(seen["train"]) == n_train - n_val
    assert not train_rows & {bytes(img) for img in x[val_idx.numpy()]}, "held-out images were trained on"
    # and the validation metrics are those of the held-out images: the network learned the
    # training images (train_eval) and is wrong on every contradicting held-out image
    metrics = json.loads((out / "metrics.json").read_text())
    history = list(csv.DictReader(open(out / "history.csv")))
    assert metrics["train_eval_accuracy"] > 0.9
    assert metrics["val_accuracy"] < 0.1 and float(history[-1]["val_accuracy"]) == metrics["val_accuracy"]
    model, _ = load_checkpoint(out / "model.pt")
    ds = data.load_dataset("fashion_mnist", tmp_path)
    logits = predict(model, x_val, ds.mean, ds.std, torch.device("cpu"))
    assert metrics["val_accuracy"] == pytest.approx((logits.argmax(1) == y_val).float().mean().item())
