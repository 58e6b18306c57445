"""What the speed work relies on: the pre-training probe leaves the model as it was, and the
benchmarks' float32 reference condition reaches the child process."""
import json
import sys

import torch

from hooks import hook_count, hooks_set_aside
from training import TrainConfig, build_model, check_trainable


def test_check_trainable_probes_without_changing_the_model():
    model = build_model("CNN", dict(channels=[4, 8], hidden=[8])).train()
    seen = []
    model.features.register_forward_hook(lambda m, i, o: seen.append("features"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_trainable(model, TrainConfig(batch_size=64), (1, 28, 28), torch.device("cpu"))
    assert seen == [] and hook_count(model) == 1  # the caller's hook neither fired nor went away
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # batch-norm statistics too
    model(torch.zeros(2, 1, 28, 28))
    assert seen == ["features"]


def test_hooks_set_aside_puts_them_back_in_order_after_an_error():
    model = torch.nn.Linear(2, 2)
    order = []
    for tag in "ab":
        model.register_forward_hook(lambda m, i, o, tag=tag: order.append(tag))
    try:
        with hooks_set_aside(model):
            model(torch.zeros(1, 2))
            raise KeyError("inside")
    except KeyError:
        pass
    assert order == []
    model(torch.zeros(1, 2))
    assert order == ["a", "b"]


def test_float32_condition_reaches_the_script(tmp_path, monkeypatch):
    from benchmarks import common
    seen = {}

    def fake_run(cmd, cwd, env):
        seen.update(cmd=cmd, env=env)
        out = cmd[cmd.index("--out-dir") + 1]
        import pathlib
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(out) / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9}))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(common.subprocess, "run", fake_run)
    r = common.run_script("fashionmnist.py", ["--model", "ffn"], tmp_path, tmp_path / "out", float32=True)
    assert "--no-cpu-bf16" in seen["cmd"] and seen["cmd"][0] == sys.executable
    assert {k: seen["env"][k] for k in common.FLOAT32_ENV} == common.FLOAT32_ENV
    assert r["condition"] == "float32" and r["command"].startswith("ATEN_CPU_CAPABILITY=avx2 ")
    r = common.run_script("fashionmnist.py", ["--model", "ffn"], tmp_path, tmp_path / "out2")
    assert "--no-cpu-bf16" not in seen["cmd"] and r["condition"] == "native"


def test_flip_tta_averages_each_image_with_its_mirror():
    import fashionmnist
    import training
    from data import Dataset

    class LeftHalf(torch.nn.Module):
        """Class 1 when the left half is brighter than the right, else class 0: a mirror swaps it."""
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # (N, 1, H, W) -> (N, 2)
            d = x[..., : x.shape[-1] // 2].mean((1, 2, 3)) - x[..., x.shape[-1] // 2:].mean((1, 2, 3))
            return torch.stack([-d, d], 1) * 3 + torch.tensor([0.5, 0.0])  # class 0 wins ties

    x = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    x[0, ..., :2] = 200     # bright left: class 1, mirrored class 0
    x[1, ..., 2:] = 200     # bright right: class 0
    x[2, ..., :2] = 10      # a little brighter left: plain says class 0 (the bias), as does the mean
    y = torch.tensor([1, 0, 1, 0])
    ds = Dataset("toy", x, y, x, y, ["a", "b"])
    model = LeftHalf()
    plain, flipped = training.predict_flip(model, x, ds.mean, ds.std, torch.device("cpu"))
    mirrored = model(((x.flip(3).float() / 255 - ds.mean[0]) / ds.std[0]))
    assert torch.allclose(flipped, (plain + mirrored) / 2)
    accuracy = lambda logits: (logits.argmax(1) == y).float().mean().item()
    assert accuracy(flipped) != accuracy(plain)  # the mirror changed an answer
    for tta, used in ((True, flipped), (False, plain)):
        m = fashionmnist.split_metrics(plain, flipped, y, "test", tta)
        assert m["test_accuracy"] == accuracy(used)
        assert (m["test_accuracy_plain"], m["test_accuracy_tta"]) == (accuracy(plain), accuracy(flipped))
