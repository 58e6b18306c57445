"""kernel_vis.py: filtered images are the layer's own convolution, the feature-map path lists
every stage in order with the right shapes, hooks always come off, the Gabor fit finds a known
Gabor and scores noise low, and main writes every figure or fails with a one-line UserError."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hooks
import kernel_vis as kv
from cli import UserError
from cnn import CNN, GAPNet
from ffn import FFN
from training import save_checkpoint

FASHION_CLASSES = [str(i) for i in range(10)]


def tiny_cnn(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, num_classes=10, image_size=28, channels=[4, 8], hidden=[16], **kw)
    return CNN(**args).eval(), args


def tiny_gapnet():
    torch.manual_seed(0)
    args = dict(in_channels=3, num_classes=10, channels=[4, 8], blocks=[1, 1], stem=4)
    return GAPNet(**args).eval(), args


def randomize_bn(model):
    """Non-trivial running statistics, so eval-mode batch norm is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


# ---- kernels and filtered images --------------------------------------------------------------------

def test_filter_responses_are_the_layers_own_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 5, stride=2, padding=1, bias=True)
    x = torch.randn(1, 3, 17, 17)
    responses = kv.filter_responses(conv, x)
    assert responses.shape == (5, 8, 8)  # (17 + 2 - 5) // 2 + 1
    for k in range(5):
        expected = F.conv2d(x, conv.weight[k:k + 1], conv.bias[k:k + 1], stride=2, padding=1)[0, 0]
        torch.testing.assert_close(responses[k], expected)
    torch.testing.assert_close(responses, conv(x)[0].detach(), rtol=1e-5, atol=1e-5)


def test_first_conv_and_kernels_normalized_each_on_its_own():
    model, _ = tiny_cnn()
    name, conv = kv.first_conv(model)
    assert name == "conv1_1" and conv is model.features.conv1_1
    k01 = kv.kernels(conv)
    assert k01.shape == conv.weight.shape
    torch.testing.assert_close(k01.amin((1, 2, 3)), torch.zeros(4))
    torch.testing.assert_close(k01.amax((1, 2, 3)), torch.ones(4))
    # min-max keeps each kernel's pattern: an affine map of the weights with a positive slope
    w = conv.weight.detach()[2].flatten()
    assert torch.corrcoef(torch.stack([w, k01[2].flatten()]))[0, 1] > 0.9999
    with pytest.raises(UserError, match="no convolutional layer"):
        kv.first_conv(FFN(in_shape=(1, 28, 28), hidden=(8,)))


# ---- the feature-map path ------------------------------------------------------------------------------

def test_feature_path_cnn_lists_every_stage_in_order_with_shapes():
    model, _ = tiny_cnn()
    randomize_bn(model)
    x = torch.randn(1, 1, 28, 28)
    path = kv.feature_path(model, kv.trace(model, x)[0])
    assert [(n, k, tuple(t.shape)) for n, k, t in path] == [
        ("relu1_1", "conv+bn+relu", (1, 4, 28, 28)), ("pool1", "maxpool", (1, 4, 14, 14)),
        ("relu2_1", "conv+bn+relu", (1, 8, 14, 14)), ("pool2", "maxpool", (1, 8, 7, 7))]
    f = model.features
    with torch.no_grad():
        torch.testing.assert_close(path[0][2], f.relu1_1(f.bn1_1(f.conv1_1(x))))
        torch.testing.assert_close(path[-1][2], f(x))


def test_feature_path_early_pool_cnn():
    model, _ = tiny_cnn(early_pool=True)
    path = kv.feature_path(model, kv.trace(model, torch.randn(1, 1, 28, 28))[0])
    assert [(n, k, tuple(t.shape)) for n, k, t in path] == [
        ("pool1", "conv+maxpool", (1, 4, 14, 14)), ("relu1_1", "bn+relu", (1, 4, 14, 14)),
        ("pool2", "conv+maxpool", (1, 8, 7, 7)), ("relu2_1", "bn+relu", (1, 8, 7, 7))]


def test_feature_path_gapnet_includes_stem_and_residual_blocks():
    model, _ = tiny_gapnet()
    randomize_bn(model)
    x = torch.randn(1, 3, 32, 32)
    path = kv.feature_path(model, kv.trace(model, x)[0])
    assert [(n, k, tuple(t.shape[1:])) for n, k, t in path] == [
        ("stem_relu", "conv+bn+relu", (4, 32, 32)),
        ("pool1", "conv+maxpool", (4, 16, 16)), ("relu1", "bn+relu", (4, 16, 16)),
        ("res1_1.relu1", "conv+bn+relu", (4, 16, 16)), ("res1_1.relu2", "conv+bn+skip+relu", (4, 16, 16)),
        ("pool2", "conv+maxpool", (8, 8, 8)), ("relu2", "bn+relu", (8, 8, 8)),
        ("res2_1.relu1", "conv+bn+relu", (8, 8, 8)), ("res2_1.relu2", "conv+bn+skip+relu", (8, 8, 8))]
    with torch.no_grad():
        torch.testing.assert_close(path[4][2], model.features[:8](x))  # res1_1's output, skip included
        torch.testing.assert_close(path[-1][2], model.features(x))


def test_conv_feature_maps_are_the_activation_after_each_conv():
    model, _ = tiny_gapnet()
    x = torch.randn(1, 3, 32, 32)
    maps = kv.conv_feature_maps(model, kv.trace(model, x)[0], ["stem_conv", "conv1", "res1_1.conv2"])
    f = model.features
    with torch.no_grad():
        torch.testing.assert_close(maps["stem_conv"][1], f[:3](x)[0])
        torch.testing.assert_close(maps["conv1"][1], f[:7](x)[0])     # conv1, pool1, bn1, relu1
        torch.testing.assert_close(maps["res1_1.conv2"][1], f[:8](x)[0])  # the block's output
    assert "res1_1.relu2" in maps["res1_1.conv2"][0]
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 3))  # no activation after either conv
    x1 = torch.randn(1, 1, 9, 9)
    maps = kv.conv_feature_maps(plain, kv.trace(plain, x1)[0], ["1"])
    with torch.no_grad():
        torch.testing.assert_close(maps["1"][1], plain(x1)[0])  # falls back to the raw conv output
    assert "raw output" in maps["1"][0]


def test_feature_path_leaves_no_hook_and_changes_nothing():
    model, _ = tiny_cnn()
    randomize_bn(model)
    x = torch.randn(2, 1, 28, 28)[:1]
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # trace evaluates in eval mode and must hand the mode back
    kv.trace(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert hooks.hook_count(model) == 0
    for k, v in model.state_dict().items():  # batch-norm running statistics untouched
        torch.testing.assert_close(v, state[k])
    model.eval()
    torch.testing.assert_close(model(x).detach(), before)
    with pytest.raises(RuntimeError):
        kv.trace(model, torch.randn(1, 3, 28, 28))  # wrong channels: fails inside the forward
    assert hooks.hook_count(model) == 0
    assert not model.training


# ---- Gabor fits ----------------------------------------------------------------------------------------------

def test_fit_gabor_recovers_a_synthetic_gabor():
    k = 9
    yy, xx = np.mgrid[:k, :k] - (k - 1) / 2
    true = dict(amplitude=0.8, x0=0.3, y0=-0.4, sigma_x=1.8, sigma_y=2.4, theta=2.2, frequency=0.2,
                phase=0.5, offset=0.05)
    kernel = kv.gabor(list(true.values()), xx, yy)
    kernel = kernel + 0.02 * np.random.default_rng(0).standard_normal(kernel.shape)
    fit = kv.fit_gabor(kernel)
    assert fit["r2"] > 0.95
    p = fit["params"]
    # theta and theta + pi describe the same Gabor (with the phase negated): compare modulo pi
    d_theta = abs((p["theta"] - true["theta"] + math.pi / 2) % math.pi - math.pi / 2)
    assert d_theta < 0.1
    assert abs(p["frequency"] - true["frequency"]) < 0.02
    assert np.abs(fit["fitted"] - kernel).max() < 0.1


def test_fit_gabor_scores_noise_low():
    rng = np.random.default_rng(3)
    r2 = [kv.fit_gabor(rng.standard_normal((9, 9)), seed=i)["r2"] for i in range(3)]
    assert max(r2) < 0.5
    assert kv.fit_gabor(np.ones((5, 5)))["r2"] == 0.0


def test_gabor_report_shares_and_caveat():
    fits = lambda r2s: [{"r2": r, "params": None} for r in r2s]
    report = kv.gabor_report(fits([0.9, 0.8, 0.2, 0.75]), fits([0.1, 0.72, 0.3, 0.4]), 0.7, 3, 3)
    assert report["trained"]["share_above_threshold"] == 0.75
    assert report["untrained"]["share_above_threshold"] == 0.25
    assert not report["meaningful"] and "9 pixels" in report["caveat"]
    assert kv.gabor_report(fits([0.9]), fits([0.1]), 0.7, 7, 1)["caveat"] is None


# ---- main -------------------------------------------------------------------------------------------------------

def save_tiny(path, model, args, name, dataset, channels):
    save_checkpoint(path, {"model": {"name": name, "args": args}, "dataset": dataset,
                           "classes": FASHION_CLASSES, "mean": [0.3] * channels, "std": [0.3] * channels,
                           "state_dict": model.state_dict(), "epoch": 1})
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    cnn, cnn_args = tiny_cnn()
    gap, gap_args = tiny_gapnet()
    ffn_args = dict(in_shape=[1, 28, 28], num_classes=10, hidden=[8])
    corrupt = folder / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    return {"cnn": save_tiny(folder / "cnn" / "model.pt", cnn, cnn_args, "CNN", "fashion_mnist", 1),
            "gap": save_tiny(folder / "gap" / "model.pt", gap, gap_args, "GAPNet", "cifar10", 3),
            "ffn": save_tiny(folder / "ffn" / "model.pt", FFN(**ffn_args), ffn_args, "FFN", "fashion_mnist", 1),
            "corrupt": corrupt}


def test_main_writes_every_figure_and_gabor_json(checkpoints, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "cnn"
    kv.main(["--checkpoint", str(checkpoints["cnn"]), "--data-dir", str(tiny_data_dir),
             "--out-dir", str(out), "--index", "3"])
    names = {p.name for p in out.iterdir()}
    assert names == {"kernels.png", "filtered.png", "feature_maps.png", "gabor.png", "gabor.json",
                     "feature_maps_conv1_1.png", "filters_conv1_1.png",
                     "feature_maps_conv2_1.png", "filters_conv2_1.png"}
    report = json.loads((out / "gabor.json").read_text())
    assert report["kernel_size"] == 3 and report["threshold"] == kv.GABOR_THRESHOLD
    assert len(report["trained"]["r2"]) == len(report["untrained"]["r2"]) == 4
    # the tiny model was never trained and was built after manual_seed(0), like --seed 0's baseline
    assert report["trained"]["r2"] == report["untrained"]["r2"]
    assert report["weight_correlation_trained_untrained"] == pytest.approx(1.0)
    assert "Gabor fits" in capsys.readouterr().out
    (out / "notes.txt").write_text("not a figure of ours")
    kv.main(["--checkpoint", str(checkpoints["cnn"]), "--data-dir", str(tiny_data_dir),
             "--out-dir", str(out), "--seed", "5", "--layers", "conv1_1"])
    report = json.loads((out / "gabor.json").read_text())
    assert report["trained"]["r2"] != report["untrained"]["r2"]
    assert abs(report["weight_correlation_trained_untrained"]) < 0.9
    # conv2_1's figures were the first run's: deleted, so the folder shows only this run's layers
    assert {p.name for p in out.iterdir()} == {"kernels.png", "filtered.png", "feature_maps.png", "gabor.png",
                                               "gabor.json", "feature_maps_conv1_1.png", "filters_conv1_1.png",
                                               "notes.txt"}
    assert "removed stale figures of other layers: feature_maps_conv2_1.png, filters_conv2_1.png" \
        in capsys.readouterr().out


def test_compute_traces_the_model_once(monkeypatch):
    model, args = tiny_gapnet()
    x = torch.randn(1, 3, 32, 32)
    calls, real_trace = [], kv.trace
    monkeypatch.setattr(kv, "trace", lambda m, x: calls.append(1) or real_trace(m, x))
    ckpt = {"model": {"name": "GAPNet", "args": args}, "classes": FASHION_CLASSES}
    result = kv.compute(model, ckpt, x, ["conv1", "res2_1.conv2"], seed=0, threshold=0.7)
    assert len(calls) == 1
    for (n, k, t), (n2, k2, t2) in zip(result["path"], kv.feature_path(model, kv.trace(model, x)[0]), strict=True):
        assert (n, k) == (n2, k2) and torch.equal(t, t2)
    assert set(result["maps"]) == set(result["filters"]) == {"conv1", "res2_1.conv2"}
    assert result["filters"]["res2_1.conv2"][0].shape == (8, 1, 3, 3)  # first input channel of 8
    with torch.no_grad():
        assert result["predicted"][0] == FASHION_CLASSES[int(model(x).argmax())]


def test_main_gapnet_with_an_image_file(checkpoints, tmp_path):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    kv.main(["--checkpoint", str(checkpoints["gap"]), "--image", str(image), "--layers", "res2_1.conv2",
             "--max-channels", "5"])  # no --data-dir needed: the image replaces the test set
    # beside the checkpoint, in a folder named after the choice: the standard kernels/ stays
    out = checkpoints["gap"].parent / "kernels-image-photo-layers-res2_1-conv2"
    assert {"kernels.png", "feature_maps_res2_1-conv2.png", "filters_res2_1-conv2.png",
            "gabor.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "feature_maps_conv1.png").exists()
    assert not (checkpoints["gap"].parent / "kernels").exists()


def test_default_layers_span_the_depth_and_every_channel_is_shown():
    names = lambda model: [n for n, _ in kv.conv_layers(model)]
    gap = GAPNet(channels=[8, 16, 32], blocks=[1, 1, 1])
    assert kv.pick_layers(gap, None) == ["conv1", "res2_1.conv1", "res3_1.conv2"]  # first, middle, last
    for n in (1, 2, 3):
        model = CNN(in_channels=1, image_size=28, channels=[4] * n, convs_per_block=1, hidden=[8])
        assert kv.pick_layers(model, None) == names(model)
    args = kv.parse_args(["--checkpoint", "x/model.pt"])
    assert args.max_channels is None and args.out_dir == Path("x/kernels")
    fig = kv.plot_layer_maps(torch.rand(96, 4, 4), "conv", "net", args.max_channels)
    assert sum(ax.get_title().startswith("ch ") for ax in fig.axes) == 96  # a panel per channel (Problem 3)


def test_load_image_converts_channels_and_size(tmp_path):
    from PIL import Image

    path = tmp_path / "wide.jpg"
    Image.fromarray(np.full((40, 80, 3), 200, dtype=np.uint8)).save(path)
    x = kv.load_image(path, 1, (28, 28))
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.uint8
    assert abs(int(x.float().mean()) - 200) <= 2


@pytest.mark.parametrize("which, extra, message", [
    ("ffn", [], "no convolutional layer"),
    ("missing", [], "no checkpoint at"),
    ("corrupt", [], "not a readable checkpoint"),
    ("cnn", ["--image", "NOTES"], "cannot read --image"),
    ("cnn", ["--layers", "conv9"], "no conv layer named 'conv9'"),
    ("cnn", ["--index", "100000"], "out of range"),
])
def test_bad_input_gives_a_user_error(checkpoints, tiny_data_dir, tmp_path, which, extra, message):
    ckpt = checkpoints.get(which, tmp_path / "nothing" / "model.pt")
    if "NOTES" in extra:
        notes = tmp_path / "notes.png"
        notes.write_text("this is text, not an image")
        extra = ["--image", str(notes)]
    with pytest.raises(UserError, match=message):
        kv.main(["--checkpoint", str(ckpt), "--data-dir", str(tiny_data_dir),
                 "--out-dir", str(tmp_path / "out"), *extra])
