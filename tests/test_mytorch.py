"""mytorch.Conv2D against torch (float64, 1e-10), finite differences, dtypes and errors; the Conv2D
tester's text, its notebook (HW2 Problem 1) and report/mytorch_check.py's tester_output.txt.

Run:  python -m pytest tests/test_mytorch.py -q
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mytorch import Conv2D
from mytorch import check
from mytorch.check import torch_reference

ATOL = 1e-10

# (N, C_in, C_out, H, W, kernel_size, stride, padding, dilation, bias)
GRID = {
    "k1x1": (2, 3, 4, 5, 5, 1, 1, 0, 1, True),
    "k2x2": (2, 2, 3, 6, 6, 2, 1, 0, 1, True),
    "k3x3-p1": (3, 3, 5, 8, 8, 3, 1, 1, 1, True),
    "k4x4-s2": (2, 2, 3, 10, 10, 4, 2, 1, 1, True),
    "k5x5-p2": (2, 3, 2, 9, 9, 5, 1, 2, 1, True),
    "k5x5-valid": (1, 2, 2, 7, 7, 5, 1, 0, 1, False),
    "s2": (2, 3, 4, 9, 9, 3, 2, 0, 1, True),
    "s3": (2, 3, 4, 11, 11, 3, 3, 0, 1, True),
    "s3-p2": (2, 3, 4, 10, 10, 3, 3, 2, 1, True),
    "d2": (2, 3, 4, 9, 9, 3, 1, 0, 2, True),
    "d2-p2": (2, 3, 4, 9, 9, 3, 1, 2, 2, True),
    "d2-s2-p1": (2, 2, 3, 11, 11, 3, 2, 1, 2, True),
    "kernel(1,3)": (2, 3, 4, 6, 7, (1, 3), 1, 0, 1, True),
    "kernel(5,2)-s(2,1)-p(2,0)": (2, 3, 4, 9, 6, (5, 2), (2, 1), (2, 0), 1, True),
    "kernel(3,4)-d(2,1)": (2, 2, 3, 10, 8, (3, 4), 1, (1, 2), (2, 1), True),
    "input7x12": (2, 3, 4, 7, 12, 3, 1, 1, 1, True),
    "input13x4-s(3,1)": (2, 3, 4, 13, 4, 3, (3, 1), 1, 1, True),
    "Cin1-Cout1": (3, 1, 1, 6, 6, 3, 1, 0, 1, True),
    "Cin1-Cout6": (2, 1, 6, 6, 6, 3, 1, 1, 1, True),
    "Cin6-Cout1": (2, 6, 1, 6, 6, 3, 1, 1, 1, False),
    "batch1": (1, 4, 5, 8, 8, 3, 1, 1, 1, True),
    "batch5": (5, 2, 3, 6, 6, 3, 2, 1, 1, True),
    "output1x1": (2, 3, 4, 5, 5, 5, 1, 0, 1, True),
    "stride>kernel": (2, 2, 3, 12, 12, 2, 3, 1, 1, True),
}


def make_case(rng, N, C_in, C_out, H, W, kernel_size, stride, padding, dilation, bias):
    layer = Conv2D(C_in, C_out, kernel_size, stride, padding, dilation, bias=bias, rng=rng)
    A = rng.standard_normal((N, C_in, H, W))
    dLdZ = rng.standard_normal(layer.output_shape(A.shape))
    return layer, A, dLdZ


def assert_matches_torch(layer, A, dLdZ):
    Z = layer.forward(A)
    dLdA = layer.backward(dLdZ)
    Z_ref, dLdA_ref, dLdW_ref, dLdb_ref = torch_reference(
        A, layer.W, layer.b, dLdZ, layer.stride, layer.padding, layer.dilation)
    assert Z.shape == Z_ref.shape and dLdA.shape == A.shape
    np.testing.assert_allclose(Z, Z_ref, rtol=0, atol=ATOL, err_msg="Z")
    np.testing.assert_allclose(dLdA, dLdA_ref, rtol=0, atol=ATOL, err_msg="dLdA")
    np.testing.assert_allclose(layer.dLdW, dLdW_ref, rtol=0, atol=ATOL, err_msg="dLdW")
    if layer.b is None:
        assert dLdb_ref is None and layer.dLdb is None
    else:
        np.testing.assert_allclose(layer.dLdb, dLdb_ref, rtol=0, atol=ATOL, err_msg="dLdb")


@pytest.mark.parametrize("params", GRID.values(), ids=GRID.keys())
def test_matches_torch(params):
    assert_matches_torch(*make_case(np.random.default_rng(0), *params))


@st.composite
def conv_configs(draw):
    """Random valid (N, C_in, C_out, H, W, kernel, stride, padding, dilation, bias)."""
    def pair(lo, hi):
        return draw(st.integers(lo, hi)), draw(st.integers(lo, hi))

    kernel, stride, padding, dilation = pair(1, 5), pair(1, 3), pair(0, 2), pair(1, 2)
    # smallest input giving one output position, plus up to 7 more rows/columns
    H, W = (max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 7))
            for k, p, d in zip(kernel, padding, dilation))
    channels = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (draw(st.integers(1, 3)), *channels, H, W, kernel, stride, padding, dilation,
            draw(st.booleans()))


@settings(max_examples=60, deadline=None, database=None)
@given(params=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_matches_torch_on_random_shapes(params, seed):
    assert_matches_torch(*make_case(np.random.default_rng(seed), *params))


def test_gradients_match_central_differences():
    """dLdA and dLdW equal central differences of L = sum(Z * G), without torch."""
    rng = np.random.default_rng(1)
    layer = Conv2D(2, 3, (2, 3), stride=(2, 1), padding=1, dilation=(1, 2), bias=True, rng=rng)
    A = rng.standard_normal((2, 2, 5, 6))
    G = rng.standard_normal(layer.output_shape(A.shape))

    def loss():
        return float(np.sum(layer.forward(A) * G))

    layer.forward(A)
    dLdA = layer.backward(G)
    dLdW, dLdb = layer.dLdW.copy(), layer.dLdb.copy()

    def numeric_gradient(X, eps=1e-6):
        grad = np.zeros_like(X)
        for index in np.ndindex(X.shape):
            original = X[index]
            X[index] = original + eps
            plus = loss()
            X[index] = original - eps
            minus = loss()
            X[index] = original
            grad[index] = (plus - minus) / (2 * eps)
        return grad

    np.testing.assert_allclose(dLdA, numeric_gradient(A), rtol=0, atol=1e-8)
    np.testing.assert_allclose(dLdW, numeric_gradient(layer.W), rtol=0, atol=1e-8)
    np.testing.assert_allclose(dLdb, numeric_gradient(layer.b), rtol=0, atol=1e-8)


@pytest.mark.parametrize("padding", [0, 1])
def test_reused_buffers_change_no_result(padding):
    """The scratch buffers kept between calls: outputs of one call are not overwritten by the
    next, a reused padded buffer keeps its zero border, and a new input shape gets new buffers."""
    rng = np.random.default_rng(4)
    layer = Conv2D(3, 4, 3, padding=padding, bias=True, rng=rng)
    A1, A2, A3 = (rng.standard_normal(shape) for shape in [(2, 3, 7, 7), (2, 3, 7, 7), (1, 3, 9, 6)])
    G1, G2, G3 = (rng.standard_normal(layer.output_shape(A.shape)) for A in (A1, A2, A3))
    Z1, dLdA1 = layer.forward(A1), layer.backward(G1)
    kept = Z1.copy(), dLdA1.copy()
    assert_matches_torch(layer, A2, G2)  # same shape: the same buffers
    assert_matches_torch(layer, A3, G3)  # another shape: new ones
    for before, now in zip(kept, (Z1, dLdA1)):
        np.testing.assert_array_equal(before, now)
    assert_matches_torch(layer, A1, G1)  # back to the first shape, through the same buffers


@pytest.mark.parametrize("param_dtype", [np.float32, np.float64], ids=["W32", "W64"])
def test_float32_input_keeps_float32(param_dtype):
    rng = np.random.default_rng(2)
    layer = Conv2D(3, 4, 3, stride=2, padding=1, bias=True, dtype=param_dtype, rng=rng)
    A = rng.standard_normal((2, 3, 9, 9))
    dLdZ = rng.standard_normal(layer.output_shape(A.shape))
    Z64, dLdA64, dLdW64 = layer.forward(A), layer.backward(dLdZ), layer.dLdW
    Z32 = layer.forward(A.astype(np.float32))
    dLdA32 = layer.backward(dLdZ.astype(np.float32))
    assert Z32.dtype == dLdA32.dtype == np.float32
    assert layer.dLdW.dtype == layer.dLdb.dtype == layer.W.dtype == param_dtype
    np.testing.assert_allclose(Z32, Z64, atol=1e-5)
    np.testing.assert_allclose(dLdA32, dLdA64, atol=1e-5)
    np.testing.assert_allclose(layer.dLdW, dLdW64, atol=1e-4)


def test_default_init_is_torch_like_and_overridable():
    layer = Conv2D(4, 6, (3, 2), bias=True, rng=np.random.default_rng(3))
    bound = 1 / np.sqrt(4 * 3 * 2)
    assert layer.W.shape == (6, 4, 3, 2) and layer.b.shape == (6,)
    assert layer.W.dtype == layer.b.dtype == np.float64
    assert np.abs(layer.W).max() <= bound and np.abs(layer.b).max() <= bound
    assert np.abs(layer.W).max() > bound / 2  # actually spread over the range
    assert Conv2D(4, 6, 3).b is None
    custom = Conv2D(2, 3, 3, bias=True, weight_init_fn=np.ones, bias_init_fn=np.zeros)
    np.testing.assert_array_equal(custom.W, np.ones((3, 2, 3, 3)))
    np.testing.assert_array_equal(custom.b, np.zeros(3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(stride=0), "stride must be positive"),
    (dict(stride=(1, -2)), "stride must be positive"),
    (dict(dilation=0), "dilation must be positive"),
    (dict(padding=-1), "padding must be non-negative"),
    (dict(kernel_size=0), "kernel_size must be positive"),
    (dict(kernel_size=(3, 3, 3)), "pair of ints"),
    (dict(weight_init_fn=lambda shape: np.ones(3)), "weight_init_fn returned shape"),
], ids=["stride0", "stride-negative", "dilation0", "padding-negative", "kernel0", "kernel3d",
        "init-shape"])
def test_constructor_errors(kwargs, match):
    arguments = dict(in_channels=2, out_channels=3, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=match):
        Conv2D(**arguments)


@pytest.mark.parametrize("A_shape, match", [
    ((2, 5, 5), r"shape \(N, C_in, H, W\).*A\[None\]"),
    ((1, 2, 2, 5, 5), r"shape \(N, C_in, H, W\)"),
    ((1, 3, 5, 5), "has 3 channels.*in_channels=2"),
    ((1, 2, 2, 8), "output size would be 0x6.*larger input"),
], ids=["rank3", "rank5", "channels", "output-too-small"])
def test_forward_errors(A_shape, match):
    with pytest.raises(ValueError, match=match):
        Conv2D(2, 3, 3).forward(np.zeros(A_shape))


def test_forward_rejects_integer_input():
    with pytest.raises(ValueError, match="floating-point input"):
        Conv2D(2, 3, 3).forward(np.zeros((1, 2, 5, 5), dtype=int))


def test_backward_errors():
    layer = Conv2D(2, 3, 3, padding=1)
    with pytest.raises(ValueError, match="backward called before forward"):
        layer.backward(np.zeros((1, 3, 5, 5)))
    layer.forward(np.zeros((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"dLdZ has shape \(1, 3, 4, 5\).*\(1, 3, 5, 5\)"):
        layer.backward(np.zeros((1, 3, 4, 5)))


def test_check_report_passes_and_names_every_case(capsys):
    assert check.main(["--seed", "3", "--repeats", "1"]) == 0
    report = capsys.readouterr().out
    for case in check.CASES:
        assert case.name in report
    assert "FAIL" not in report and f"{len(check.CASES)}/{len(check.CASES)} cases pass" in report


def test_check_report_fails_with_exit_status_1(monkeypatch, capsys):
    monkeypatch.setattr(check, "CASES", check.CASES[:1])
    monkeypatch.setattr(check, "TOLERANCE", -1.0)  # no error can be below it
    assert check.main(["--repeats", "1"]) == 1
    assert "FAIL" in capsys.readouterr().out


# ---- the Conv2D tester (HW2 Problem 1: the output of Conv2DTester.ipynb) ----------------------------

ROOT = Path(__file__).resolve().parents[1]


def verdict_lines(text: str) -> list:
    """The verdict lines of a tester text: '<quantity>: PASS|FAIL|SKIP ...'."""
    return [line.strip() for line in text.splitlines() if line.startswith("  ") and ":" in line
            and line.split(":", 1)[1].split()[0] in ("PASS", "FAIL", "SKIP")]


def test_tester_text_gives_each_case_each_quantity_and_the_verdict():
    text = check.run_tester(seed=3)
    for number, case in enumerate(check.CASES, 1):
        assert f"Case {number}/{len(check.CASES)}: {case.name}" in text
    verdicts = verdict_lines(text)
    assert len(verdicts) == 4 * len(check.CASES)  # Z, dLdA, dLdW, dLdb per case
    no_bias = sum(not case.bias for case in check.CASES)
    assert sum(v.startswith("backward dLdb:") and "SKIP (no bias)" in v for v in verdicts) == no_bias
    assert sum("PASS (error" in v for v in verdicts) == 4 * len(check.CASES) - no_bias
    assert "FAIL" not in text
    assert text.endswith(f"Conv2D: all {len(check.CASES)} cases passed")


def test_tester_text_reports_a_failing_quantity():
    case = check.CASES[0]
    shapes = ((2, 3, 6, 6), (4, 3, 1, 1), (2, 4, 6, 6))
    text = check.tester_text([(case, shapes, (1e-16, 0.5, float("nan"), 1e-16))])
    verdicts = verdict_lines(text)
    assert verdicts[0].startswith("forward output Z:") and "PASS" in verdicts[0]
    assert verdicts[1] == "backward dLdA:     FAIL (error 5.0e-01)"
    assert verdicts[2].startswith("backward dLdW:") and "FAIL" in verdicts[2]  # NaN never passes
    assert text.endswith(f"Conv2D: 1 of 1 cases FAILED ({case.name})")


def run_notebook(path) -> str:
    """Execute the notebook's code cells in order, in this process; return what they print."""
    import contextlib
    import io

    import nbformat

    nb = nbformat.read(path, as_version=4)
    namespace, printed = {"__name__": "__main__"}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for cell in nb.cells:
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{path.name} cell", "exec"), namespace)
    return printed.getvalue()


def test_notebook_prints_the_testers_pass_lines():
    printed = run_notebook(ROOT / "mytorch" / "Conv2DTester.ipynb")
    assert check.run_tester(seed=0) in printed  # the same text as report/mytorch_check.py writes
    assert len(verdict_lines(printed)) == 4 * len(check.CASES)
    assert "FAIL" not in printed and f"Conv2D: all {len(check.CASES)} cases passed" in printed


def test_notebook_prints_fail_for_a_planted_wrong_gradient(monkeypatch):
    backward = Conv2D.backward

    def wrong_dLdA(self, dLdZ):  # the planted bug: dL/dA off by 0.1%
        return 1.001 * backward(self, dLdZ)

    monkeypatch.setattr(Conv2D, "backward", wrong_dLdA)
    printed = run_notebook(ROOT / "mytorch" / "Conv2DTester.ipynb")
    verdicts = verdict_lines(printed)
    assert all("FAIL" in v for v in verdicts if v.startswith("backward dLdA:"))
    assert all("PASS" in v for v in verdicts if v.startswith(("forward output Z:", "backward dLdW:")))
    assert f"Conv2D: {len(check.CASES)} of {len(check.CASES)} cases FAILED" in printed


def test_mytorch_check_writes_the_testers_output_beside_check_json(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("report_mytorch_check", ROOT / "report" / "mytorch_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--seed", "2", "--repeats", "1", "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / "check.json").read_text())
    tester = (tmp_path / "tester_output.txt").read_text()
    assert tester == check.run_tester(seed=2) + "\n"  # timing draws no numbers from the cases' generator
    assert report["passed"] == report["total"] == len(check.CASES)
    assert f"Conv2D: all {report['total']} cases passed" in tester
