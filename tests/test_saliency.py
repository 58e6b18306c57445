"""saliency.py, cam.py, guided_backprop.py: maps checked against Captum, pytorch-grad-cam and
torchcam, and without them against hand-computable cases (guided backprop on a two-layer net,
CAM proportional to Grad-CAM on a GAP net); hooks, modes and module flags always restored; the
sanity check changes the maps but not the model; the figure titles name the classes."""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cam
import cli
import guided_backprop
import hooks
import plots
import saliency
import training
from cnn import CNN, GAPNet
from conftest import reference
from data import load_dataset, normalize
from training import TrainConfig, fit, predict


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
    np.testing.assert_allclose(plots.minmax(ours).numpy(), pgc, atol=2e-4)
    assert hooks.hook_count(model) == 0


def test_cam_equals_torchcam(gapnet):
    CAM = reference("torchcam.methods").CAM
    x, t = _batch(2)
    ours = saliency.class_activation_map(gapnet, x, t)                                  # (N, h, w)
    with CAM(gapnet, target_layer="features", fc_layer="fc", input_shape=(3, 16, 16)) as extractor:
        with torch.no_grad():
            gapnet(x)
        ref = extractor(class_idx=t.tolist(), normalized=False)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


# ---- hand-computable cases (no reference library needed) --------------------------------------

def test_cam_is_hw_times_grad_cam_on_a_gap_net(gapnet):
    x, t = _batch(2)
    cam_maps = saliency.class_activation_map(gapnet, x, t)                          # (N, h, w)
    assert (cam_maps < 0).any() and (cam_maps > 0).any()  # signed: the ReLU below does something
    # On a GAP net y^c = sum_k w_k^c mean_(x,y) A_k, so Grad-CAM's alpha_k = w_k^c / (h w)
    # (Selvaraju et al. 2017, Sec. 3.1): Grad-CAM = ReLU(CAM) / (h w).
    gc = saliency.grad_cam(gapnet, x, t)
    torch.testing.assert_close(gc * cam_maps[0].numel(), F.relu(cam_maps), rtol=1e-4, atol=1e-6)


def test_guided_backprop_by_hand():
    # y = w2 . relu(W1 x): the plain gradient is W1^T ([W1 x > 0] * w2); guided backprop also
    # drops the negative gradients arriving at the ReLU: W1^T ([W1 x > 0] * relu(w2)).
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False))
    W1 = torch.tensor([[1., 0, -1], [0, 2, 1], [-1, 1, 0], [1, 1, 1]])             # (4, 3)
    w2 = torch.tensor([2., -1, 3, -2])                                              # (4,)
    with torch.no_grad():
        net[0].weight.copy_(W1)
        net[2].weight.copy_(w2[None])
    x = torch.tensor([[1., 2, 0], [-1, 0, 2]])   # W1 x: all positive; [-3, 2, 1, 1]
    active = (x @ W1.T > 0).float()                                                 # (N, 4)
    guided = saliency.guided_backprop(net, x)                                       # (N, 3)
    plain = saliency.input_gradient(net, x, guided=False)
    torch.testing.assert_close(guided, (active * F.relu(w2)) @ W1)
    torch.testing.assert_close(plain, (active * w2) @ W1)
    assert not torch.allclose(guided, plain)


@pytest.mark.parametrize("name", ["gapnet", "cnn"])
def test_guided_backprop_differs_from_plain_gradient(name, request):
    model = request.getfixturevalue(name)
    x, t = _batch()
    guided = saliency.guided_backprop(model, x, t)
    plain = saliency.input_gradient(model, x, t, guided=False)
    assert guided.abs().max() > 0
    assert not torch.allclose(guided, plain)  # the guided rule changed something


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


def _no_hook_left(model):
    """No hook, and no module left flagged by one: register_full_backward_hook sets
    `_is_full_backward_hook` for good (removing the handle keeps it), after which the module
    refuses a legacy backward hook."""
    return hooks.hook_count(model) == 0 and all(m._is_full_backward_hook is None for m in model.modules())


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
        assert _no_hook_left(gapnet)
        assert [m.training for m in gapnet.modules()] == modes
        assert [p.requires_grad for p in gapnet.parameters()] == flags
    broken = nn.Sequential(gapnet, Explode())
    for fn in (saliency.guided_backprop, lambda m, x, t: saliency.grad_cam(m, x, t, "0.features.relu2")):
        with pytest.raises(RuntimeError, match="boom"):
            fn(broken, x, t)
        assert _no_hook_left(broken)
        assert [m.training for m in gapnet.modules()] == modes
        assert [p.requires_grad for p in gapnet.parameters()] == flags
    gapnet.eval()
    after = _fingerprint(gapnet, x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    for relu in saliency.relu_modules(gapnet):  # what the flag would forbid: a legacy backward hook
        relu.register_backward_hook(lambda *_: None).remove()


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


def test_examples_are_chosen_on_float32_logits(cnn, monkeypatch):
    """predict runs under bfloat16 autocast on CUDA; saliency chooses and titles its examples with
    full_precision=True. Here the CPU plays CUDA: autocast is made bfloat16 on it."""
    monkeypatch.setattr(training, "autocast", lambda device, cpu_bf16=False: torch.autocast("cpu", torch.bfloat16))
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    cpu = torch.device("cpu")
    with torch.no_grad():
        exact = cnn.eval()(normalize(images, mean, std))
    torch.testing.assert_close(predict(cnn, images, mean, std, cpu, batch_size=4, full_precision=True), exact)
    assert not torch.allclose(predict(cnn, images, mean, std, cpu), exact, rtol=0, atol=1e-5)  # bf16 did act


# ---- figure labels ------------------------------------------------------------------------------

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _examples(target=None):
    """A right (#4, a ship) and a wrong example (#7, a cat taken for a dog at 69%)."""
    return saliency.Examples(
        model=None, ckpt=None, classes=CLASSES, images=None, x=None, index=torch.tensor([4, 7]),
        y=torch.tensor([8, 3]), pred=torch.tensor([8, 5]), prob=torch.tensor([0.91, 0.69]),
        target=None if target is None else torch.full((2,), target), x_test=None, y_test=None,
        out_dir=None, device=None)


def test_titles_name_predicted_true_and_explained_class():
    titles, colors = saliency.titles(_examples())
    assert colors == ["tab:green", "tab:red"]
    assert titles[1].splitlines() == ["#7 wrong", "pred: dog (69%)", "true: cat"]
    assert titles[0].splitlines() == ["#4 right", "pred: ship (91%)", "true: ship"]
    assert saliency.explained_class(_examples()) == "maps for the predicted class"
    titles, colors = saliency.titles(_examples(target=3))  # --target cat
    assert titles[1].splitlines()[-1] == "map for: cat" and titles[0].splitlines()[-1] == "map for: cat"
    assert colors == ["tab:green", "tab:red"]  # still right and wrong by the prediction
    assert saliency.explained_class(_examples(target=3)) == "maps for class cat"


@pytest.mark.parametrize("text", ["²", "①", "٣", "-1", "10", "unicorn"])
def test_target_outside_ascii_digits_and_names_is_a_user_error(text):
    with pytest.raises(cli.UserError, match="--target"):
        saliency.parse_target(text, CLASSES)
    assert saliency.parse_target("3", CLASSES) == 3 and saliency.parse_target("CAT", CLASSES) == 3


def _printed_width(fig) -> float:
    """Inches the saved figure spans: plots.save crops to the drawn content, text included, and
    pads it by 0.1 in on each side."""
    fig.canvas.draw()
    return fig.get_tightbbox(fig.canvas.get_renderer()).width + 0.2


@pytest.mark.parametrize("n, rows", [(8, 2), (8, 5), (4, 5), (3, 2)])
def test_example_figure_prints_legibly(n, rows):
    """At most the text width, no text under 7 pt, and no example title wider than its column,
    with the longest CIFAR-10 class name and the longest row labels the scripts use."""
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    maps = torch.rand(n, 32, 32)
    labels = ["image", "Grad-CAM", "guided\nbackprop", "|guided\nbackprop|", "guided\nGrad-CAM"][:rows]
    kinds = ["image", "overlay", "rgb", "heatmap", "rgb"][:rows]
    grid = [(label, kind, maps[:, None].expand(-1, 3, -1, -1) if kind == "rgb" else maps)
            for label, kind in zip(labels, kinds)]
    ex = _examples(target=1)
    ex.y, ex.pred, ex.prob = torch.tensor([1, 0]), torch.tensor([1, 1]), torch.tensor([1.0, 0.99])
    ex.index = torch.tensor([9999, 9998])
    long_titles, _ = saliency.titles(ex)   # "pred: automobile (100%)", "true: airplane", "map for: automobile"
    titles = [long_titles[i % 2] for i in range(n)]
    fig = saliency.plot_example_maps(images, grid, titles, ["tab:green"] * n,
                                     "GAPNet (cifar10): CAM of features.res3_1.relu2\ncorrectly (green) and wrongly "
                                     "(red) classified test images, maps for the predicted class\nred = strongest, "
                                     "blue = weakest evidence (each map scaled on its own)")
    assert min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN
    assert _printed_width(fig) <= plots.PRINT_WIDTH_IN
    renderer = fig.canvas.get_renderer()
    for text_ax in [ax for ax in fig.axes if not ax.axison]:
        (title,) = text_ax.texts
        assert title.get_window_extent(renderer).width <= text_ax.get_window_extent(renderer).width + 1
    plt_close(fig)


def test_example_layout_keeps_figures_short_with_panels_that_read():
    # CAM (2 columns) and guided backprop of the GAP network (3): two groups of half the rows
    assert saliency.example_layout(8, 2)[0] == 2 and saliency.example_layout(8, 3)[0] == 2
    # five columns do not fit twice in the width with readable panels: one group
    groups, panel = saliency.example_layout(4, 5)
    assert groups == 1 and panel >= saliency.GOOD_PANEL_IN
    for n, k in ((4, 2), (8, 3), (8, 5), (16, 5)):
        groups, panel = saliency.example_layout(n, k)
        assert -(-n // groups) * panel + 0.9 <= saliency.MAX_HEIGHT_IN
        assert groups * (saliency.TEXT_WIDTH_IN + k * panel) <= plots.PRINT_WIDTH_IN


def test_a_flat_map_is_labelled_not_left_blank():
    """A Grad-CAM the ReLU zeroed everywhere draws as one flat colour: the panel says so."""
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    maps = torch.rand(2, 32, 32)
    maps[1] = 0.0
    fig = saliency.plot_example_maps(images, [("image", "image", None), ("Grad-CAM", "overlay", maps)],
                                     ["a", "b"], ["tab:green", "tab:red"], "title")
    labelled = [[t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_images()]
    assert labelled == [[], [], [], ["flat map"]]  # per example: the image, then its map
    plt_close(fig)


def test_sanity_figure_prints_legibly():
    steps = [{"randomized": k, "layer": f"features.conv{k}_1+features.bn{k}_1" if k else "none",
              **{m: {"mean": 1 - k / 14, "std": 0.1} for m in ("CAM", "Grad-CAM", "guided backprop", "gradient")}}
             for k in range(14)]
    fig = saliency.plot_sanity({"steps": steps, "images": 32,
                                "methods": ["CAM", "Grad-CAM", "guided backprop", "gradient"]}, "GAPNet")
    assert min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN / 2  # the report sets both networks' side by side
    assert _printed_width(fig) <= plots.PRINT_WIDTH_IN
    # each method keeps its colour whichever methods a network has (the dense net has no CAM), and
    # the legend sits above the axes, where it hides no curve
    dense = saliency.plot_sanity({"steps": steps, "images": 32, "methods": ["Grad-CAM", "guided backprop"]}, "CNN")
    colour = lambda f, m: next(li.get_color() for li in f.axes[0].get_lines() if li.get_label() == m)  # noqa: E731
    assert colour(fig, "guided backprop") == colour(dense, "guided backprop")
    assert colour(fig, "Grad-CAM") == colour(dense, "Grad-CAM")
    fig.canvas.draw()
    legend = fig.axes[0].get_legend().get_window_extent()
    assert legend.y0 >= fig.axes[0].get_window_extent().y1 - 1
    plt_close(fig)
    plt_close(dense)


def plt_close(fig):
    plots.plt.close(fig)


# ---- the sanity check ---------------------------------------------------------------------------

def test_cascading_randomization_changes_the_maps_not_the_model(gapnet):
    x, _ = _batch(4, n=8)
    state = copy.deepcopy(gapnet.state_dict())
    result = saliency.cascading_randomization(gapnet, x, saliency.methods_for(gapnet, x), seed=0)
    steps = result["steps"]
    assert [s["layer"].split("+")[0] for s in steps] == [
        "none", "fc", "features.res2_1.conv2", "features.res2_1.conv1", "features.conv2", "features.conv1"]
    assert all(steps[0][m]["mean"] == 1.0 for m in result["methods"])  # trained against trained
    # All layers random: the plain gradient no longer ranks pixels like the trained one's
    # (measured 0.10-0.17 over batch seeds 4-6 and randomization seeds 0-2).
    assert steps[-1]["gradient"]["mean"] < 0.9
    assert all(np.isfinite(s[m]["mean"]) for s in steps for m in result["methods"])
    assert state.keys() == gapnet.state_dict().keys()
    assert all(torch.equal(v, gapnet.state_dict()[k]) for k, v in state.items())  # it worked on a copy


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
    cam.main(["--checkpoint", str(checkpoints["gap"]), *base, "--sanity", "--sanity-n", "6", "--stats", "--stats-n", "16"])
    folder = checkpoints["gap"].parent
    stats = json.loads((folder / "saliency_stats.json").read_text())
    assert stats["images"] == 16 and stats["cam_method"] == "CAM" and stats["right"] + stats["wrong"] == 16
    assert set(stats["methods"]) == {"CAM", "Grad-CAM", "guided backprop"} and set(stats["sanity"]) >= {"CAM"}
    assert len(stats["shown"]["index"]) == 4 and stats["shown"]["index"] == [e["index"] for e in
                                                                           json.loads((folder / "cam.json").read_text())["examples"]]
    assert all(0 <= m["deletion"]["auc"] <= 1 for m in stats["methods"].values())
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
    import draft_saliency
    assert draft_saliency.cam_answer("the network", stats) and draft_saliency.guided_answer("the network", stats)
    assert (folder / "cam.png").stat().st_size > 0
    shown = json.loads((folder / "cam.json").read_text())["examples"]
    assert len(shown) == 4 and {e["correct"] for e in shown} == {True, False}
    sanity = json.loads((folder / "sanity.json").read_text())
    assert {"CAM", "Grad-CAM", "guided backprop"} <= set(sanity["methods"])
    assert len(sanity["steps"]) == 1 + 5  # none; fc, res2_1.conv2, res2_1.conv1, conv2, conv1 (each + its BN)
    assert all(np.isfinite(s[m]["mean"]) for s in sanity["steps"] for m in sanity["methods"])
    assert sanity["steps"][-1]["gradient"]["mean"] < 0.9  # measured 0.08: randomizing changed the maps
    assert (folder / "sanity.png").exists()
    cam.main(["--checkpoint", str(checkpoints["dense"]), *base])
    assert "CAM does not apply" in capsys.readouterr().out
    assert (checkpoints["dense"].parent / "gradcam.png").exists()
    cam.main(["--checkpoint", str(checkpoints["dense"]), *base, "--method", "gradcam", "--target", "cat",
              "--stats", "--stats-n", "8"])
    assert "CAM does not apply" not in capsys.readouterr().out  # asked for by name: nothing to explain
    assert (checkpoints["dense"].parent / "gradcam-target-cat.png").exists()  # the standard figure stays
    chosen = json.loads((checkpoints["dense"].parent / "saliency_stats-target-cat.json").read_text())
    assert chosen["cam_method"] == "Grad-CAM" and not (checkpoints["dense"].parent / "saliency_stats.json").exists()
    cam.main(["--checkpoint", str(checkpoints["dense"]), *base, "--layer", "features.relu1_1"])
    assert (checkpoints["dense"].parent / "gradcam-layer-features-relu1_1.png").exists()
    with pytest.raises(cli.UserError, match="gradcam"):
        cam.main(["--checkpoint", str(checkpoints["dense"]), *base, "--method", "cam"])
    for bad in ("unicorn", "²", "①"):
        with pytest.raises(cli.UserError, match="--target"):
            cam.main(["--checkpoint", str(checkpoints["gap"]), *base, "--target", bad])


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
    assert sanity["steps"][-1]["gradient"]["mean"] < 0.9  # measured 0.06


def test_guided_backprop_figure_says_its_grad_cam_is_cam_on_a_gap_network(checkpoints, tiny_data_dir, monkeypatch):
    """On a GAP network Grad-CAM of the last features is CAM (Selvaraju et al. 2017, Sec. 3.1): the
    figure says so there, and only there (not on the dense net, not for another --layer)."""
    import plots
    titles = []
    monkeypatch.setattr(plots, "save", lambda fig, path: titles.append(fig._suptitle.get_text().replace("\n", " ")))
    base = ["--data-dir", str(tiny_data_dir), "--index", "0", "1"]
    for arch, extra in (("gap", []), ("dense", []), ("gap", ["--layer", "features.relu2"])):
        guided_backprop.main(["--checkpoint", str(checkpoints[arch]), *base, *extra,
                              "--out-dir", str(checkpoints[arch].parent / "gb-title")])
    assert "Grad-CAM of features.res2_1.relu2 (= CAM where positive, on a GAP net)" in titles[0]
    assert "= CAM" not in titles[1] and "Grad-CAM of" in titles[1]
    assert "Grad-CAM of features.relu2: red" in titles[2]


# ---- interpretation statistics ----------------------------------------------------------------

def test_map_statistics_centre_and_concentration():
    flat = torch.ones(1, 32, 32)
    spot = torch.zeros(1, 32, 32)
    spot[0, 14:18, 14:18] = 1                        # 16 central pixels: all mass in the centre and the top 10%
    border = torch.zeros(1, 32, 32)
    border[0, :2] = 1                                # the top two rows: outside the central box
    uniform = saliency.uniform_statistics((32, 32))
    assert abs(uniform["centre"] - 0.5) < 0.05 and abs(uniform["top"] - 0.1) < 0.01
    st = saliency.map_statistics(torch.cat([flat, spot, border, torch.zeros(1, 32, 32)]))
    assert st["centre"][0] == pytest.approx(uniform["centre"]) and st["top"][0] == pytest.approx(uniform["top"])
    assert st["centre"][1] == 1 and st["top"][1] == 1
    assert st["centre"][2] == 0 and st["top"][2] == 1   # its 64 pixels are within the top 102
    assert torch.isnan(st["centre"][3]) and torch.isnan(st["top"][3])   # no mass: undefined


class KnownPixels(nn.Module):
    """A network whose answer depends only on the pixels in `mask` (H, W): class 0's logit is the
    sum of those pixels (over channels), class 1's is 0."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        s = (x * self.mask).sum((1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_deletion_ranks_the_true_map_above_a_random_one():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 9:14] = True                                   # the evidence: 20 of 256 pixels
    x = torch.rand(12, 3, 16, 16, generator=g) * 0.2          # positive: every evidence pixel counts
    model = KnownPixels(mask)
    target = torch.zeros(12, dtype=torch.long)
    true_map = mask.float().expand(12, -1, -1)
    random_map = torch.rand(12, 16, 16, generator=g)
    true_curve = saliency.deletion_curve(model, x, true_map, target, steps=16)
    random_curve = saliency.deletion_curve(model, x, random_map, target, steps=16)
    with torch.no_grad():
        intact = model(x).softmax(1)[:, 0]
    torch.testing.assert_close(true_curve[:, 0], intact)                  # nothing removed yet
    torch.testing.assert_close(true_curve[:, -1], torch.full((12,), 0.5))  # all removed: logits 0, 0
    torch.testing.assert_close(true_curve[:, 2], torch.full((12,), 0.5))   # 2/16 = 32 pixels: the 20 are gone
    assert (saliency.area_under(true_curve) < saliency.area_under(random_curve)).all()
    blank = saliency.deletion_curve(model, x, torch.zeros(12, 16, 16), target, seed=3)    # random order
    torch.testing.assert_close(blank, saliency.deletion_curve(model, x, torch.zeros(12, 16, 16), target, seed=3))
    assert not torch.equal(blank, saliency.deletion_curve(model, x, torch.zeros(12, 16, 16), target, seed=4))


class KnownPixelsHurtByHoles(KnownPixels):
    """KnownPixels minus k times the image's total variation: like a trained network, it is thrown
    off by scattered single-pixel holes (many sharp edges) more than by one blob of the same size."""

    def __init__(self, mask, k):
        super().__init__(mask)
        self.k = k

    def forward(self, x):
        s = (x * self.mask).sum((1, 2, 3)) / self.mask.sum()
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
        return torch.stack([s - self.k * tv, torch.zeros_like(s)], 1)


def test_deletion_baseline_has_the_maps_coarseness():
    """A coarse map (a 4 x 4 CAM-like map, upsampled) on the known evidence ranks above a random map
    of the same coarseness, although a random pixel order, whose scattered holes the network
    dislikes, lowers the probability sooner still: the pixel-random baseline is unfair to it."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 8:12] = True                                   # the evidence: cell (1, 2) of a 4 x 4 grid
    x = 1 + 0.1 * torch.rand(12, 3, 16, 16, generator=g)      # nearly flat: holes make the edges
    model, target = KnownPixelsHurtByHoles(mask, k=16), torch.zeros(12, dtype=torch.long)
    coarse = torch.zeros(12, 4, 4)
    coarse[:, 1, 2] = 1
    true_map = saliency.upsample(coarse, (16, 16))
    blobs = saliency.random_maps(12, (4, 4), (16, 16), torch.Generator().manual_seed(1))
    assert torch.equal(saliency.random_maps(3, (16, 16), (16, 16), torch.Generator().manual_seed(1)),
                       torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)))  # own size: not resampled

    def area(maps, seed=0):
        return saliency.area_under(saliency.deletion_curve(model, x, maps, target, steps=16, seed=seed))
    true, pixels, matched = area(true_map), area(torch.zeros(12, 16, 16), 1), area(blobs, 1)
    assert (true < matched).all()                            # measured 0.06 against 0.27
    assert (pixels < true).all()                             # measured 0.05: the artifact the baseline avoids


def test_deletion_fill():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, ::2, ::2] = 1                                    # a fine checkerboard-like pattern
    x[1] = 0.3                                               # a flat image
    blurred = saliency.deletion_fill(x, "blur")
    assert blurred.shape == x.shape and blurred[0].std() < 0.2 * x[0].std()     # the fine detail is gone
    torch.testing.assert_close(blurred[0].mean(), x[0].mean(), atol=0.02, rtol=0)  # the colour stays
    torch.testing.assert_close(blurred[1], x[1])             # a flat image is its own blur
    assert torch.equal(saliency.deletion_fill(x, "mean"), torch.zeros_like(x))   # the mean colour, normalized
    with pytest.raises(cli.UserError, match="fill"):
        saliency.deletion_fill(x, "black")


def test_statistics_name_each_methods_baseline(gapnet):
    x, y = _batch(5, n=6)
    st = saliency.saliency_statistics(gapnet, x, y, seed=0, steps=4)
    sizes = saliency.native_sizes(gapnet, x)
    with torch.no_grad():
        h, w = saliency.class_activation_map(gapnet, x[:1]).shape[-2:]
    assert sizes["CAM"] == (h, w) and sizes["guided backprop"] == tuple(x.shape[-2:])
    cam = st["methods"]["CAM"]
    assert cam["native_size"] == [h, w] and cam["deletion"]["baseline"] == f"random map at {h} x {w}, upsampled"
    assert set(cam["deletion_blur"]) >= {"auc", "random_auc", "pixel_random_auc", "p", "faster_share"}
    gbp = st["methods"]["guided backprop"]["deletion"]
    assert gbp["random_auc"] == gbp["pixel_random_auc"]     # a full-resolution map's baseline is the pixel order
    assert cam["deletion"]["random_auc"] != cam["deletion"]["pixel_random_auc"]


def test_saliency_statistics_reproducible_and_model_left_alone(gapnet):
    x, y = _batch(5, n=12)
    before = _fingerprint(gapnet, x)
    st = saliency.saliency_statistics(gapnet, x, y, seed=0, steps=4)
    assert set(st["methods"]) == {"CAM", "Grad-CAM", "guided backprop"}
    assert st["right"] + st["wrong"] == 12
    assert {(a["a"], a["b"]) for a in st["agreement"]} == {("CAM", "Grad-CAM"), ("CAM", "guided backprop"),
                                                          ("Grad-CAM", "guided backprop")}
    # Grad-CAM = ReLU(CAM) / (h w) on a GAP net (test above): where both are defined they rank alike
    cam_gradcam = next(a for a in st["agreement"] if a["b"] == "Grad-CAM")
    assert cam_gradcam["mean"] > 0.5
    assert st == saliency.saliency_statistics(gapnet, x, y, seed=0, steps=4)     # same seed, same numbers
    assert _no_hook_left(gapnet)
    after = _fingerprint(gapnet, x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


@pytest.mark.parametrize("script, extra, match", [
    (cam, ["--method", "cam"], "gradcam"),                            # a dense net has no GAP
    (cam, ["--method", "cam", "--layer", "features.relu1_1"], "gradcam"),
    (cam, ["--layer", "nope"], "--layer 'nope' is not a submodule"),
    (guided_backprop, ["--layer", "nope"], "--layer 'nope' is not a submodule"),
])
def test_options_that_do_not_fit_the_network_fail_before_any_prediction(checkpoints, tiny_data_dir, monkeypatch,
                                                                         script, extra, match):
    def no_prediction(*a, **k):
        raise AssertionError("predicted test images before checking the options")
    monkeypatch.setattr(saliency, "predict", no_prediction)
    with pytest.raises(cli.UserError, match=match):
        script.main(["--checkpoint", str(checkpoints["dense"]), "--data-dir", str(tiny_data_dir), *extra])


def test_more_examples_than_one_figure_shows_are_refused(checkpoints, tiny_data_dir, capsys):
    with pytest.raises(SystemExit):
        cam.main(["--checkpoint", str(checkpoints["gap"]), "--n", str(saliency.MAX_EXAMPLES + 1)])
    assert f"a number from 1 to {saliency.MAX_EXAMPLES}" in capsys.readouterr().err
    with pytest.raises(cli.UserError, match=f"at most {saliency.MAX_EXAMPLES}"):
        cam.main(["--checkpoint", str(checkpoints["gap"]), "--data-dir", str(tiny_data_dir),
                  "--index", *map(str, range(saliency.MAX_EXAMPLES + 1))])
