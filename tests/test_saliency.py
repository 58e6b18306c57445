"""saliency.py, cam.py, guided_backprop.py: maps checked against Captum, pytorch-grad-cam and
torchcam; CAM proportional to Grad-CAM on a GAP net; hooks and modes always restored."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cam
import cli
import guided_backprop
import hooks
import saliency
from cnn import CNN, GAPNet
from conftest import reference
from data import load_dataset
from training import TrainConfig, fit


def _randomize_bn(model, seed):
    """Non-trivial batch-norm statistics, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture
def gapnet():
    torch.manual_seed(0)
    return _randomize_bn(GAPNet(channels=(8, 16), blocks=[0, 1], dropout=0.2), 1)


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return _randomize_bn(CNN(in_channels=3, image_size=16, channels=(8, 16), hidden=(32,)), 1)


def _batch(seed=0, n=6, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


# ---- reference implementations -----------------------------------------------------------

@pytest.mark.parametrize("name", ["gapnet", "cnn"])
def test_guided_backprop_equals_captum(name, request):
    GuidedBackprop = reference("captum.attr").GuidedBackprop
    model = request.getfixturevalue(name)
    x, t = _batch()
    ours = saliency.guided_backprop(model, x, t)
    ref = GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=t)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    plain = saliency.input_gradient(model, x, t, guided=False)
    assert not torch.allclose(ours, plain)  # the guided rule changed something


@pytest.mark.parametrize("name", ["gapnet", "cnn"])
def test_grad_cam_equals_captum_and_pytorch_grad_cam(name, request):
    captum_attr = reference("captum.attr")
    GradCAM = reference("pytorch_grad_cam").GradCAM
    ClassifierOutputTarget = reference("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget
    model = request.getfixturevalue(name)
    x, t = _batch(1)
    layer = saliency.default_layer(model, x)
    ours = saliency.upsample(saliency.grad_cam(model, x, t, layer), x.shape[-2:])      # (N, H, W)
    ref = captum_attr.LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=t, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(ref, x.shape[-2:], "bilinear")[:, 0]
    assert ours.max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as gc:
        pgc = gc(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])  # min-max scaled
    np.testing.assert_allclose(saliency.minmax(ours).numpy(), pgc, atol=2e-4)
    assert hooks.hook_count(model) == 0


def test_cam_equals_torchcam_and_is_proportional_to_grad_cam(gapnet):
    CAM = reference("torchcam.methods").CAM
    x, t = _batch(2)
    ours = saliency.class_activation_map(gapnet, x, t)                                  # (N, h, w)
    with CAM(gapnet, target_layer="features", fc_layer="fc", input_shape=(3, 16, 16)) as extractor:
        with torch.no_grad():
            gapnet(x)
        ref = extractor(class_idx=t.tolist(), normalized=False)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert (ours < 0).any() and (ours > 0).any()
    # Grad-CAM's alpha_k = w_k^c / (h w) on a GAP net, so Grad-CAM = ReLU(CAM) / (h w).
    gc = saliency.grad_cam(gapnet, x, t)
    torch.testing.assert_close(gc * ours[0].numel(), F.relu(ours), rtol=1e-4, atol=1e-6)


def test_cam_on_dense_head_is_a_user_error(cnn):
    with pytest.raises(cli.UserError, match="gradcam"):
        saliency.class_activation_map(cnn, _batch()[0])
    assert not saliency.is_gap_network(cnn)


# ---- hooks, modes and flags restored ---------------------------------------------------------

def _fingerprint(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


class Explode(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_model_unchanged_after_maps_and_after_errors(gapnet):
    x, t = _batch(3)
    gapnet.train()                        # a mode to restore
    gapnet.fc.weight.requires_grad_(False)  # a flag to restore
    modes = [m.training for m in gapnet.modules()]
    flags = [p.requires_grad for p in gapnet.parameters()]
    gapnet.eval()
    before = _fingerprint(gapnet, x)
    gapnet.train()
    for fn in (saliency.class_activation_map, saliency.grad_cam, saliency.guided_backprop,
               saliency.guided_grad_cam):
        fn(gapnet, x, t)
        assert hooks.hook_count(gapnet) == 0
        assert [m.training for m in gapnet.modules()] == modes
        assert [p.requires_grad for p in gapnet.parameters()] == flags
    broken = nn.Sequential(gapnet, Explode())
    for fn in (saliency.guided_backprop, lambda m, x, t: saliency.grad_cam(m, x, t, "0.features.relu2")):
        with pytest.raises(RuntimeError, match="boom"):
            fn(broken, x, t)
        assert hooks.hook_count(broken) == 0
        assert [m.training for m in gapnet.modules()] == modes
        assert [p.requires_grad for p in gapnet.parameters()] == flags
    gapnet.eval()
    after = _fingerprint(gapnet, x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


class FunctionalReLU(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.conv, self.relu, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 10)

    def forward(self, x):
        h = self.relu(self.conv(x))
        h = F.relu(h) if self.kind == "F.relu" else torch.relu(h) if self.kind == "torch.relu" else h.relu()
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("kind", ["F.relu", "torch.relu", "method"])
def test_functional_relu_is_a_user_error(kind):
    model = FunctionalReLU(kind)
    with pytest.raises(cli.UserError, match="nn.ReLU"):
        saliency.guided_backprop(model, _batch()[0])
    assert hooks.hook_count(model) == 0


def test_inplace_relu_is_a_user_error(gapnet):
    gapnet.features.relu2.inplace = True
    for fn in (saliency.guided_backprop, saliency.grad_cam):
        with pytest.raises(cli.UserError, match="inplace"):
            fn(gapnet, _batch()[0])


# ---- choosing examples --------------------------------------------------------------------------

def test_choose_examples_reproducible_half_correct_half_wrong():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (500,), generator=g)
    pred = torch.where(torch.rand(500, generator=g) < 0.7, y, (y + 1) % 10)
    idx, correct = saliency.choose_examples(pred, y, 8, seed=3)
    again, _ = saliency.choose_examples(pred, y, 8, seed=3)
    other, _ = saliency.choose_examples(pred, y, 8, seed=4)
    assert torch.equal(idx, again) and not torch.equal(idx, other)
    assert correct.tolist() == [True] * 4 + [False] * 4
    assert (pred[idx] == y[idx]).tolist() == correct.tolist()
    assert len(set(idx.tolist())) == 8


# ---- the scripts ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tiny_data_dir, tmp_path_factory):
    """Tiny GAPNet and CNN trained for one epoch on the fake CIFAR-10, saved as the scripts do."""
    ds = load_dataset("cifar10", tiny_data_dir)
    folder, paths = tmp_path_factory.mktemp("ckpt"), {}
    specs = {"gap": ("GAPNet", dict(channels=[8, 16], blocks=[0, 1], dropout=0.1)),
             "dense": ("CNN", dict(in_channels=3, image_size=32, channels=[8, 16], hidden=[32]))}
    for arch, (name, args) in specs.items():
        torch.manual_seed(0)
        model = GAPNet(**args) if name == "GAPNet" else CNN(**args)
        meta = {"model": {"name": name, "args": args}, "dataset": "cifar10", "classes": ds.classes,
                "mean": ds.mean, "std": ds.std}
        paths[arch] = folder / arch / "model.pt"
        fit(model, ds.x_train, ds.y_train, TrainConfig(epochs=1, batch_size=64, lr=0.05),
            mean=ds.mean, std=ds.std, device=torch.device("cpu"), checkpoint=paths[arch], meta=meta)
    return paths


def test_cam_script(checkpoints, tiny_data_dir, capsys):
    base = ["--data-dir", str(tiny_data_dir), "--n", "4"]
    cam.main(["--checkpoint", str(checkpoints["gap"]), *base, "--sanity", "--sanity-n", "6"])
    folder = checkpoints["gap"].parent
    assert (folder / "cam.png").stat().st_size > 0
    shown = json.loads((folder / "cam.json").read_text())["examples"]
    assert len(shown) == 4 and {e["correct"] for e in shown} == {True, False}
    sanity = json.loads((folder / "sanity.json").read_text())
    assert {"CAM", "Grad-CAM", "guided backprop"} <= set(sanity["methods"])
    assert len(sanity["steps"]) == 1 + 5  # none; fc, res2_1.conv2, res2_1.conv1, conv2, conv1 (each + its BN)
    assert all(np.isfinite(s[m]["mean"]) for s in sanity["steps"] for m in sanity["methods"])
    assert (folder / "sanity.png").exists()
    cam.main(["--checkpoint", str(checkpoints["dense"]), *base])
    assert "CAM does not apply" in capsys.readouterr().out
    assert (checkpoints["dense"].parent / "gradcam.png").exists()
    cam.main(["--checkpoint", str(checkpoints["dense"]), *base, "--method", "gradcam", "--target", "cat"])
    assert "CAM does not apply" not in capsys.readouterr().out  # asked for by name: nothing to explain
    assert (checkpoints["dense"].parent / "gradcam-target-cat.png").exists()  # the standard figure stays
    with pytest.raises(cli.UserError, match="gradcam"):
        cam.main(["--checkpoint", str(checkpoints["dense"]), *base, "--method", "cam"])
    with pytest.raises(cli.UserError, match="--target"):
        cam.main(["--checkpoint", str(checkpoints["gap"]), *base, "--target", "unicorn"])


def test_guided_backprop_script(checkpoints, tiny_data_dir):
    out = checkpoints["dense"].parent / "gb"
    guided_backprop.main(["--checkpoint", str(checkpoints["dense"]), "--data-dir", str(tiny_data_dir),
                          "--index", "0", "5", "--out-dir", str(out), "--sanity", "--sanity-n", "4"])
    assert (out / "guided_backprop-index-0-5.png").stat().st_size > 0
    assert [e["index"] for e in json.loads((out / "guided_backprop-index-0-5.json").read_text())["examples"]] == [0, 5]
    assert not (out / "guided_backprop.png").exists()
    sanity = json.loads((out / "sanity.json").read_text())
    assert "CAM" not in sanity["methods"]
    assert all(np.isfinite(s[m]["mean"]) for s in sanity["steps"] for m in sanity["methods"])
