"""The shared training loop: determinism, checkpoints, resume, divergence, bad checkpoints."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import training
from cli import UserError
from training import TrainConfig, build_model, fit, load_checkpoint, read_checkpoint, save_checkpoint

SPEC = {"name": "CNN", "args": dict(in_channels=1, num_classes=10, image_size=28, channels=[4, 8],
                                   hidden=[16], dropout=0.2)}


def tiny_fit(ds, tmp_path=None, epochs=2, resume=False, name="model.pt", device="cpu", optimizer="sgd"):
    training.seed_everything(0)
    model = build_model(SPEC["name"], SPEC["args"])
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, flip=True, crop=2, seed=1, optimizer=optimizer)
    meta = {"model": SPEC, "dataset": ds.name, "classes": ds.classes, "mean": ds.mean, "std": ds.std}
    history = fit(model.to(device), ds.x_train, ds.y_train, cfg, mean=ds.mean, std=ds.std, device=torch.device(device),
                  evals={"val": (ds.x_test, ds.y_test)}, checkpoint=tmp_path / name if tmp_path else None,
                  meta=meta, resume=resume)
    return model, history


@pytest.fixture(scope="module")
def fashion(tiny_data_dir):
    import data
    return data.load_dataset("fashion_mnist", tiny_data_dir)


def test_training_learns_and_records_history(fashion):
    model, history = tiny_fit(fashion, epochs=3)
    epochs = history["epochs"]
    assert len(epochs) == 3 and len(history["step_loss"]) == 3 * (256 // 64) == len(history["step_lr"])
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["samples"] == 256 and "val_accuracy" in epochs[-1]
    lrs = history["step_lr"]  # one-cycle: up to the peak, then down to ~0
    assert 0.04 < max(lrs) <= 0.05 and lrs[0] < max(lrs) and lrs[-1] < 0.002


def test_muon_learns_with_its_own_peak_learning_rate_for_the_filters(fashion):
    model, history = tiny_fit(fashion, epochs=3, optimizer="muon")
    epochs = history["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] < 2.3
    lrs = history["step_lr"]  # the first group's: the dense weights at cfg.lr
    assert 0.04 < max(lrs) <= 0.05


def newton_schulz(m, steps=5):
    """Jordan et al.'s iteration as written, on X itself: the reference for training.orthogonalize."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = m / (m.norm() + 1e-7)
    x = x.T if len(x) > x.size(1) else x
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if len(m) > m.size(1) else x


def test_orthogonalize_on_the_gram_matrix_is_the_newton_schulz_iteration():
    torch.manual_seed(0)
    for shape in [(192, 1728), (1728, 192), (48, 27)]:
        m = torch.randn(shape, dtype=torch.float64)
        assert torch.allclose(training.orthogonalize(m), newton_schulz(m), atol=1e-12), shape


def test_orthogonalize_sets_every_singular_value_near_one():
    for shape in [(40, 360), (360, 40), (10, 30)]:
        m = torch.randn(shape) * torch.logspace(-1, 1, shape[1])  # singular values spread over 2 decades
        s = torch.linalg.svdvals(training.orthogonalize(m))
        assert 0.6 < s.min() and s.max() < 1.25, (shape, s)


def test_muon_orthogonalizes_the_filters_step_and_leaves_the_rest_to_sgd():
    torch.manual_seed(0)
    model = build_model(SPEC["name"], SPEC["args"])
    sgd_model = build_model(SPEC["name"], SPEC["args"])
    sgd_model.load_state_dict(model.state_dict())
    for a, b in zip(model.parameters(), sgd_model.parameters()):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    cfg = TrainConfig(lr=0.05, optimizer="muon", muon_lr=0.1, weight_decay=5e-4)
    muon = training.make_optimizer(model, cfg)
    filters = muon.param_groups[-1]
    assert filters["renormalize"] and {id(p) for p in filters["params"]} == {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    muon.step()
    training.make_optimizer(sgd_model, TrainConfig(lr=0.05, optimizer="sgd", weight_decay=5e-4)).step()
    for (name, p), q in zip(model.named_parameters(), sgd_model.parameters()):
        if p.ndim != 4:  # torch's Nesterov SGD exactly
            assert torch.allclose(p, q), name
            continue
        w = before[name] * len(p) ** 0.5 / before[name].norm()  # rescaled to norm sqrt(C_out)
        g = p.grad * (1 + training.MUON_MOMENTUM)  # first Nesterov step: grad + momentum * grad
        expected = w - 0.1 * training.orthogonalize(g.reshape(len(p), -1)).view_as(p)
        assert torch.allclose(p, expected, atol=1e-6), name


def test_muon_keeps_one_momentum_buffer_per_parameter_across_steps(monkeypatch):
    """The buffer is made on the first step only (no zeros_like after it) and then updated in
    place: M <- m M + g."""
    model = build_model(SPEC["name"], SPEC["args"])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    muon = training.make_optimizer(model, TrainConfig(optimizer="muon", weight_decay=0.0))
    muon.step()
    first = {id(p): muon.state[p]["momentum_buffer"] for p in model.parameters()}
    made = []
    monkeypatch.setattr(torch, "zeros_like", lambda *a, **k: made.append(1) or torch.empty(0))
    muon.step()
    monkeypatch.undo()
    assert not made
    for group in muon.param_groups:  # filters: Muon's momentum; the rest: SGD's
        for p in group["params"]:
            buf = muon.state[p]["momentum_buffer"]
            assert buf is first[id(p)]
            assert torch.allclose(buf, torch.full_like(p, 1 + group["momentum"]))


def test_muon_leaves_the_filters_scale_alone_without_batch_norm():
    model = build_model(SPEC["name"], {**SPEC["args"], "batchnorm": False})
    groups = training.make_optimizer(model, TrainConfig(optimizer="muon")).param_groups
    assert groups[-1]["orthogonalize"] and not groups[-1]["renormalize"]


def test_muon_on_a_network_without_conv_filters_is_a_clear_error():
    ffn = build_model("FFN", dict(in_shape=[1, 28, 28], num_classes=10, hidden=[16], dropout=0.0, batchnorm=False))
    with pytest.raises(UserError, match="has none; use --optimizer sgd or adamw"):
        training.make_optimizer(ffn, TrainConfig(optimizer="muon"))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_session.sh runs the tests on one)"))])
def test_same_seed_same_numbers(fashion, device):
    a, ha = tiny_fit(fashion, device=device)
    b, hb = tiny_fit(fashion, device=device)
    assert ha["step_loss"] == hb["step_loss"]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_low_res_epochs_train_on_downsampled_images_then_full_size(fashion):
    """Progressive resizing: the first half of 4 epochs sees 14x14 images, the rest 28x28;
    evaluation is always at full size."""
    torch.manual_seed(0)
    model = build_model("GAPNet", dict(in_channels=1, num_classes=10, channels=[4, 8], blocks=[0, 0]))
    sizes = []  # (epoch's training mode, input height) of every forward pass
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append((m.training, args[0].shape[-1])))
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, low_res=14, low_res_fraction=0.5)
    try:
        fit(model, fashion.x_train, fashion.y_train, cfg, mean=fashion.mean, std=fashion.std,
            device=torch.device("cpu"), evals={"val": (fashion.x_test, fashion.y_test)})
    finally:
        handle.remove()
    steps = 256 // 64
    train_sizes = [h for training, h in sizes if training]
    assert train_sizes == [14] * (2 * steps) + [28] * (2 * steps)
    assert {h for training, h in sizes if not training} == {28}
    assert cfg.low_res_epochs == 2 and TrainConfig(epochs=1, low_res=14).low_res_epochs == 0
    assert not model._forward_pre_hooks


def test_checkpoint_round_trips_to_identical_model(fashion, tmp_path):
    model, _ = tiny_fit(fashion, tmp_path)
    loaded, ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["classes"] == fashion.classes and ckpt["epoch"] == 2
    x = torch.randn(5, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_resume_continues_exactly_where_it_stopped(fashion, tmp_path, monkeypatch, optimizer):
    full, full_history = tiny_fit(fashion, tmp_path, name="full.pt", optimizer=optimizer)
    real_epoch = training.train_epoch

    def crash_in_second_epoch(*args, **kwargs):
        if kwargs["epoch"] == 1:  # the epoch index, counted from 0
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(training, "train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        tiny_fit(fashion, tmp_path, name="cut.pt", optimizer=optimizer)
    assert read_checkpoint(tmp_path / "cut.pt")["epoch"] == 1  # the completed epoch was saved
    monkeypatch.setattr(training, "train_epoch", real_epoch)
    resumed, history = tiny_fit(fashion, tmp_path, resume=True, name="cut.pt", optimizer=optimizer)
    assert history["step_loss"] == full_history["step_loss"]
    assert history["seconds"] >= sum(r["seconds"] for r in history["epochs"])  # both sessions' time
    for pa, pb in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(pa, pb)


def test_resume_refuses_another_schedule_or_other_data(fashion, tmp_path):
    """A one-cycle schedule saved for E epochs of S steps cannot continue as another one."""
    tiny_fit(fashion, tmp_path, epochs=1)
    with pytest.raises(UserError, match="--resume: .* was trained with --epochs 1, not 2"):
        tiny_fit(fashion, tmp_path, epochs=2, resume=True)
    model = build_model(SPEC["name"], SPEC["args"])
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, flip=True, crop=2, seed=1)
    with pytest.raises(UserError, match=r"trained on 256 images, not 128; pass the same --limit"):
        fit(model, fashion.x_train[:128], fashion.y_train[:128], cfg, mean=fashion.mean, std=fashion.std,
            device=torch.device("cpu"), checkpoint=tmp_path / "model.pt",
            meta={"model": SPEC}, resume=True)
    with pytest.raises(UserError, match=r"trained on other images \(another --val/--val-size"):
        fit(model, fashion.x_train.flip(0), fashion.y_train.flip(0), cfg, mean=fashion.mean, std=fashion.std,
            device=torch.device("cpu"), checkpoint=tmp_path / "model.pt", meta={"model": SPEC}, resume=True)


@pytest.mark.parametrize("change, match", [
    (dict(seed=2), "--seed 1, not 2"),                      # another seed: another train/validation split
    (dict(optimizer="adamw"), "--optimizer sgd, not adamw"),  # SGD's state cannot drive AdamW
    (dict(weight_decay=0.5), "--weight-decay 0.0005, not 0.5"),
    (dict(crop=4), "--crop 2, not 4"),
])
def test_resume_refuses_other_training_settings(fashion, tmp_path, change, match):
    tiny_fit(fashion, tmp_path, epochs=1)
    model = build_model(SPEC["name"], SPEC["args"])
    cfg = TrainConfig(**{**dict(epochs=1, batch_size=64, lr=0.05, flip=True, crop=2, seed=1), **change})
    with pytest.raises(UserError, match=f"--resume: .* was trained with {match}; pass the same value"):
        fit(model, fashion.x_train, fashion.y_train, cfg, mean=fashion.mean, std=fashion.std,
            device=torch.device("cpu"), checkpoint=tmp_path / "model.pt", meta={"model": SPEC}, resume=True)


def test_nan_loss_stops_with_clear_error(fashion):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    nn.init.constant_(model[1].weight, float("nan"))
    cfg = TrainConfig(epochs=1, batch_size=64)
    with pytest.raises(training.TrainingError, match="loss became nan.*lower --lr"):
        fit(model, fashion.x_train, fashion.y_train, cfg, mean=fashion.mean, std=fashion.std,
            device=torch.device("cpu"))


def test_finite_training_loss_but_nan_validation_loss_is_divergence(fashion, tmp_path, monkeypatch):
    """A training loss of 1e15 is finite; the evaluation after the epoch tells the truth."""
    monkeypatch.setattr(training, "evaluate", lambda *args: {"loss": float("nan"), "accuracy": 0.1})
    with pytest.raises(training.TrainingError, match="(train eval|val) loss became nan after epoch 1.*lower --lr"):
        tiny_fit(fashion, tmp_path, epochs=1)
    assert not (tmp_path / "model.pt").exists()  # nothing saved as if it were a result


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "model.pt")


def test_truncated_checkpoint(fashion, tmp_path):
    tiny_fit(fashion, tmp_path, epochs=1)
    blob = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "model.pt")


def test_foreign_checkpoints(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "plain_state_dict.pt")
    with pytest.raises(UserError, match="not a convlens checkpoint"):
        load_checkpoint(tmp_path / "plain_state_dict.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # refused by weights_only=True
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "pickled_module.pt")


def test_checkpoint_of_unknown_model_or_wrong_weights(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"model": {"name": "Transformer", "args": {}}, "state_dict": {}})
    with pytest.raises(UserError, match="unknown model 'Transformer'"):
        load_checkpoint(tmp_path / "a.pt")
    save_checkpoint(tmp_path / "b.pt", {"model": SPEC, "state_dict": nn.Linear(2, 2).state_dict()})
    with pytest.raises(UserError, match="weights do not fit a CNN"):
        load_checkpoint(tmp_path / "b.pt")


def test_interrupted_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "model.pt", {"model": SPEC, "state_dict": {}, "epoch": 1})

    def crash(obj, f, *args, **kwargs):
        open(f, "wb").write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "model.pt", {"model": SPEC, "state_dict": {}, "epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "model.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the renamed file must be readable as any
    other file the user writes (0644 under umask 022), e.g. a report.pdf to share."""
    import os

    import files
    old = os.umask(0o022)
    try:
        files.write_json(tmp_path / "metrics.json", {"a": 1})
        save_checkpoint(tmp_path / "model.pt", {"model": SPEC, "state_dict": {}})
    finally:
        os.umask(old)
    for name in ("metrics.json", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_device_errors_are_one_line_user_errors():
    for name, message in [("bogus", "is not a device"), ("xla", "runs on the CPU, CUDA or MPS")]:
        with pytest.raises(UserError, match=message):
            training.pick_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU here"):
            training.pick_device("cuda")
    assert training.pick_device("cpu") == torch.device("cpu")


def test_torchrun_processes_each_take_their_local_gpu(monkeypatch):
    """No GPU is needed: torch.cuda's answers are faked; only the device chosen is checked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert training.pick_device("auto") == training.pick_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training.pick_device("auto") == training.pick_device("cuda") == torch.device("cuda", 1)
    with pytest.raises(UserError, match="under torchrun every process takes the GPU of its LOCAL_RANK"):
        training.pick_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(UserError, match="started process 3 on a machine with 2 CUDA GPU.*--nproc_per_node=2"):
        training.pick_device("auto")


def test_a_global_batch_must_split_evenly_across_processes(fashion, monkeypatch):
    monkeypatch.setattr(training, "rank_and_world", lambda: (0, 3))
    with pytest.raises(UserError, match="--batch-size 64 does not split evenly across 3 processes"):
        fit(build_model(SPEC["name"], SPEC["args"]), fashion.x_train, fashion.y_train, TrainConfig(batch_size=64),
            mean=fashion.mean, std=fashion.std, device=torch.device("cpu"))


def test_resume_names_what_differs_in_the_model(fashion, tmp_path):
    tiny_fit(fashion, tmp_path, epochs=1)
    meta = {"model": {"name": "CNN", "args": {**SPEC["args"], "channels": [4, 16]}}, "dataset": fashion.name}
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, flip=True, crop=2, seed=1)
    with pytest.raises(UserError, match=r"holds a CNN with channels=\[4, 8\], not channels=\[4, 16\]; pass the"):
        fit(build_model("CNN", meta["model"]["args"]), fashion.x_train, fashion.y_train, cfg, mean=fashion.mean,
            std=fashion.std, device=torch.device("cpu"), checkpoint=tmp_path / "model.pt", meta=meta, resume=True)
    meta = {"model": {"name": "GAPNet", "args": {}}, "dataset": "cifar10"}
    with pytest.raises(UserError, match="holds a CNN for fashion_mnist, not this run's GAPNet for cifar10"):
        fit(build_model("CNN", SPEC["args"]), fashion.x_train, fashion.y_train, cfg, mean=fashion.mean,
            std=fashion.std, device=torch.device("cpu"), checkpoint=tmp_path / "model.pt", meta=meta, resume=True)


# ---- the eval-mode training loss and the loss actually minimized ------------------------------

def test_train_eval_subset_is_fixed_seeded_and_all_when_fewer():
    a = training.train_eval_subset(256, 100, seed=1)
    assert torch.equal(a, training.train_eval_subset(256, 100, seed=1))  # every epoch, and after --resume
    assert len(set(a.tolist())) == 100 and torch.equal(a, a.sort().values) and a.max() < 256
    assert not torch.equal(a, training.train_eval_subset(256, 100, seed=2))
    assert torch.equal(training.train_eval_subset(80, 100, seed=1), torch.arange(80))


def test_train_eval_loss_is_plain_cross_entropy_in_eval_mode(fashion):
    """The training loss set beside the validation loss is measured as that one is: the model in eval
    mode (dropout off), unaugmented images, no label smoothing. A model with heavy dropout, flips,
    shifts and label smoothing makes every one of those differences visible."""
    import data
    training.seed_everything(0)
    model = build_model("CNN", {**SPEC["args"], "dropout": 0.5})
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, flip=True, crop=2, seed=1, label_smoothing=0.3)
    history = fit(model, fashion.x_train, fashion.y_train, cfg, mean=fashion.mean, std=fashion.std,
                  device=torch.device("cpu"), evals={"val": (fashion.x_test, fashion.y_test)}, train_eval_images=100)
    row = history["epochs"][-1]
    assert history["train_eval_images"] == 100 and list(row).index("train_eval_loss") < list(row).index("val_loss")
    idx = training.train_eval_subset(256, 100, cfg.seed)
    x = data.normalize(fashion.x_train[idx], torch.tensor(fashion.mean), torch.tensor(fashion.std))
    y = fashion.y_train[idx]
    with torch.no_grad():
        logits = model.eval()(x)
        plain = F.cross_entropy(logits, y).item()
        smoothed = F.cross_entropy(logits, y, label_smoothing=0.3).item()
        torch.manual_seed(0)
        dropped = F.cross_entropy(model.train()(x), y).item()
    assert row["train_eval_loss"] == pytest.approx(plain, rel=1e-5)
    assert row["train_eval_accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert abs(smoothed - plain) > 1e-3 and abs(dropped - plain) > 1e-3  # the check above can fail


def test_training_loss_uses_the_label_smoothing_asked_for(fashion):
    """The loss minimized (and logged per step) is cross-entropy with label smoothing (Szegedy et al.
    2016): checked on the first step, whose logits a hook records; every label is the same class, so
    the targets are known whatever the shuffle."""
    y = torch.full_like(fashion.y_train, 3)
    for smoothing in (0.0, 0.4):
        training.seed_everything(0)
        model = build_model("CNN", {**SPEC["args"], "dropout": 0.0})
        seen = []
        handle = model.register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()) if m.training else None)
        try:
            history = fit(model, fashion.x_train, y, TrainConfig(epochs=1, batch_size=64, lr=0.05, seed=1,
                                                                  label_smoothing=smoothing),
                          mean=fashion.mean, std=fashion.std, device=torch.device("cpu"), train_eval_images=64)
        finally:
            handle.remove()
        first = seen[0].float()                                     # (64, 10): the first step's logits
        target = torch.full((len(first),), 3)
        assert history["step_loss"][0] == pytest.approx(
            F.cross_entropy(first, target, label_smoothing=smoothing).item(), rel=1e-5)
        if smoothing:
            assert abs(F.cross_entropy(first, target).item() - history["step_loss"][0]) > 1e-3


def test_loss_plot_shows_the_eval_mode_training_loss_and_prints_legibly(fashion):
    import plots
    _, history = tiny_fit(fashion, epochs=2)
    fig = plots.plot_loss(history, "loss", eval_names=("val",))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "training loss, eval mode (per epoch)" in labels and "validation loss (per epoch)" in labels
    line = next(li for li in fig.axes[0].get_lines() if li.get_label() == "training loss, eval mode (per epoch)")
    assert list(line.get_ydata()) == [e["train_eval_loss"] for e in history["epochs"]]
    footnote = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "label smoothing" in footnote and "eval mode" in footnote and "256 training images" in footnote
    assert "like the validation images" in footnote and "Validation minus eval mode" in footnote
    assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN and min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    import matplotlib.pyplot as plt
    plt.close(fig)
    # the footnote names only what the run's training did: no "dropout on" for a net without dropout
    plain = plots.plot_loss(history, "loss", eval_names=("val", "test"),
                            conditions=plots.batch_conditions(flip=True, crop=0, dropout=0.0, label_smoothing=0.1))
    footnote = " ".join(t.get_text() for t in plain.texts).replace("\n", " ")
    assert "(augmented, label smoothing)" in footnote and "dropout" not in footnote
    assert "like the validation images" in footnote  # history has no test loss: only the curves drawn are named
    plt.close(plain)
    assert plots.batch_conditions(False, 0, 0.0, 0.0) == "no augmentation, dropout or label smoothing"


def test_loss_plot_greys_the_epochs_trained_on_smaller_images_and_only_those(fashion):
    import matplotlib.pyplot as plt
    import plots
    _, history = tiny_fit(fashion, epochs=2)
    assert [e["image_size"] for e in history["epochs"]] == [28, 28]
    texts = lambda fig: [t.get_text() for t in fig.axes[0].texts]  # noqa: E731
    fig = plots.plot_loss(history, "loss", eval_names=("val",))
    assert not any("trained at" in t for t in texts(fig)) and not fig.axes[0].patches
    plt.close(fig)
    history["epochs"][0]["image_size"] = 20
    fig = plots.plot_loss(history, "loss", eval_names=("val",))
    assert "trained at 20×20" in texts(fig)
    (span,) = fig.axes[0].patches
    corners = fig.axes[0].transData.inverted().transform(span.get_window_extent().get_points())  # (2, 2)
    assert corners[:, 0] == pytest.approx([0, 1], abs=1e-6)  # epoch 1 only: x from 0 to 1
    plt.close(fig)


def test_keep_freed_memory_takes_effect_on_glibc_and_training_still_runs():
    """mallopt answers 1 for each threshold it accepts; elsewhere (macOS, Windows, musl) the
    function is a no-op returning False. Either way, memory freed and allocated again is usable."""
    import platform
    import sys
    on_glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert training.keep_freed_memory() is on_glibc
    a = torch.ones(1 << 22)   # 16 MiB: mmapped by default glibc, kept in the heap after the call
    del a
    b = torch.zeros(1 << 22)
    assert b.sum().item() == 0  # a reused block comes back zeroed by torch.zeros, not with old values
    if on_glibc:
        import resource

        def faults_of_a_48_mib_tensor():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.ones(12 << 20)  # made, written and freed: over the largest mmap threshold older glibc takes
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        for _ in range(10):  # the heap grows for the first few (aligned blocks fit freed ones only then)
            faults_of_a_48_mib_tensor()
        assert faults_of_a_48_mib_tensor() < 1000  # in its own mmap all 12,288 pages would fault in again


def test_the_epoch_line_says_when_training_images_were_shrunk():
    from training import format_epoch
    row = {"epoch": 1, "train_loss": 1.5, "train_accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.6, "seconds": 80.0}
    assert format_epoch(row, 9, 24).startswith("epoch 1/9 (trained at 24x24)  train loss 1.5000")
    assert format_epoch(row, 9).startswith("epoch 1/9  train loss")


@pytest.mark.parametrize("world", ["2", "two"])
def test_world_size_without_torchrun_is_a_one_line_error(monkeypatch, world):
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(UserError, match=f"WORLD_SIZE={world} is set, but this process was not started by torchrun"):
        training.setup_distributed(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert training.setup_distributed(torch.device("cpu")) == (0, 1)
