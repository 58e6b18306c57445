"""Check mytorch.Conv2D against torch, case by case.

Run:  python -m mytorch.check [--seed 0] [--repeats 5]

For each named case the layer and torch.nn.functional.conv2d get the same
input, weights and bias in float64; the table shows the max abs error of Z,
dL/dA, dL/dW and dL/db (torch autograd of L = sum(Z * G)), PASS when all are
within 1e-10, and the median float32 forward+backward time of each side.
The exit status is 1 if any case fails.
"""
import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from mytorch.conv import Conv2D

TOLERANCE = 1e-10


@dataclass(frozen=True)
class Case:
    name: str
    N: int
    C_in: int
    C_out: int
    H: int
    W: int
    kernel_size: object
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    bias: bool = True


CASES = [
    Case("1x1 kernel", 2, 3, 4, 6, 6, 1),
    Case("3x3 same padding", 4, 3, 8, 16, 16, 3, padding=1),
    Case("5x5 valid", 2, 2, 3, 12, 12, 5),
    Case("stride 2", 3, 4, 6, 15, 15, 3, stride=2, padding=1),
    Case("stride 3, 17x11 input", 2, 3, 5, 17, 11, 3, stride=3),
    Case("padding 2, 5x5 kernel", 2, 3, 4, 9, 9, 5, padding=2),
    Case("dilation 2", 2, 3, 4, 13, 13, 3, padding=2, dilation=2),
    Case("2x4 kernel, stride (1,2)", 2, 3, 5, 10, 12, (2, 4), stride=(1, 2), padding=(1, 0)),
    Case("single channel, no bias", 1, 1, 1, 8, 8, 3, bias=False),
    Case("batch 1, 16->32 channels", 1, 16, 32, 8, 8, 3, padding=1),
    Case("mixed (3,5) s(2,3) p(2,1) d(2,1)", 3, 5, 7, 14, 19, (3, 5), (2, 3), (2, 1), (2, 1)),
    Case("CIFAR conv1, batch 8", 8, 3, 32, 32, 32, 3, padding=1),
]


def make_layer(case, rng, dtype=np.float64):
    return Conv2D(case.C_in, case.C_out, case.kernel_size, case.stride, case.padding,
                  case.dilation, bias=case.bias, dtype=dtype, rng=rng)


def torch_reference(A, W, b, dLdZ, stride, padding, dilation):
    """Z, dLdA, dLdW, dLdb from torch conv2d + autograd (dLdb is None without bias)."""
    A_t = torch.tensor(A, requires_grad=True)
    W_t = torch.tensor(W, requires_grad=True)
    b_t = None if b is None else torch.tensor(b, requires_grad=True)
    Z_t = torch.nn.functional.conv2d(A_t, W_t, b_t, stride, padding, dilation)
    Z_t.backward(torch.tensor(dLdZ))
    dLdb = None if b_t is None else b_t.grad.numpy()
    return Z_t.detach().numpy(), A_t.grad.numpy(), W_t.grad.numpy(), dLdb


def max_errors(layer, A, dLdZ):
    """Max abs differences of Z, dLdA, dLdW, dLdb between layer and torch (dLdb None if no bias)."""
    Z = layer.forward(A)
    dLdA = layer.backward(dLdZ)
    ref = torch_reference(A, layer.W, layer.b, dLdZ, layer.stride, layer.padding, layer.dilation)
    ours = (Z, dLdA, layer.dLdW, layer.dLdb)
    return tuple(None if r is None else float(np.abs(o - r).max()) for o, r in zip(ours, ref))


def median_ms(step, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def time_case(case, repeats):
    """Median float32 forward+backward ms of mytorch and of torch (autograd, dLdA included).
    Its own random numbers, so that timing or not leaves the checked cases' inputs the same."""
    rng = np.random.default_rng(0)
    layer = make_layer(case, rng, np.float32)
    A = rng.standard_normal((case.N, case.C_in, case.H, case.W), dtype=np.float32)
    dLdZ = rng.standard_normal(layer.output_shape(A.shape), dtype=np.float32)
    A_t, dLdZ_t = torch.tensor(A, requires_grad=True), torch.tensor(dLdZ)
    W_t = torch.tensor(layer.W, requires_grad=True)
    b_t = None if layer.b is None else torch.tensor(layer.b, requires_grad=True)

    def mytorch_step():
        layer.forward(A)
        layer.backward(dLdZ)

    def torch_step():
        Z_t = torch.nn.functional.conv2d(A_t, W_t, b_t, layer.stride, layer.padding, layer.dilation)
        A_t.grad = W_t.grad = None
        Z_t.backward(dLdZ_t)

    mytorch_step()  # warm-up
    torch_step()
    return median_ms(mytorch_step, repeats), median_ms(torch_step, repeats)


def run_case(case, rng, repeats):
    """(shapes (A, W, Z), errors (Z, dLdA, dLdW, dLdb; dLdb None without bias), passed, timings
    (mytorch ms, torch ms), or None with repeats=0)."""
    layer = make_layer(case, rng)
    A = rng.standard_normal((case.N, case.C_in, case.H, case.W))
    dLdZ = rng.standard_normal(layer.output_shape(A.shape))
    errors = max_errors(layer, A, dLdZ)
    passed = all(error_passes(e) for e in errors)
    shapes = (A.shape, layer.W.shape, dLdZ.shape)
    return shapes, errors, passed, time_case(case, repeats) if repeats else None


def error_passes(error) -> bool:
    return error is None or error <= TOLERANCE  # a NaN error fails


# ---- the tester's text: each case, each quantity, PASS or FAIL -------------------------------------

QUANTITIES = ("forward output Z", "backward dLdA", "backward dLdW", "backward dLdb")


def tester_case_lines(number: int, case, shapes, errors) -> list:
    """The tester's lines for one case: its settings and shapes, then each quantity's verdict."""
    A, W, Z = (tuple(shape) for shape in shapes)
    lines = [f"Case {number}/{len(CASES)}: {case.name}",
             f"  A {A}, W {W}, stride {case.stride}, padding {case.padding}, dilation {case.dilation}, "
             f"bias {'yes' if case.bias else 'no'} -> Z {Z}"]
    for quantity, error in zip(QUANTITIES, errors):
        verdict = ("SKIP (no bias)" if error is None else
                   f"{'PASS' if error_passes(error) else 'FAIL'} (error {error:.1e})")  # max abs, as the header says
        lines.append(f"  {quantity + ':':<18} {verdict}")
    return lines


def tester_text(results) -> str:
    """The Conv2D tester's output for [(case, shapes, errors)] in CASES order, ending with the
    verdict over all cases."""
    lines = [f"Conv2D tester: mytorch.Conv2D against torch.nn.functional.conv2d and autograd, float64, "
             f"PASS when the max abs error <= {TOLERANCE:g}", ""]
    failed = []
    for number, (case, shapes, errors) in enumerate(results, 1):
        lines += tester_case_lines(number, case, shapes, errors) + [""]
        if not all(error_passes(e) for e in errors):
            failed.append(case.name)
    lines.append(f"Conv2D: all {len(results)} cases passed" if not failed else
                 f"Conv2D: {len(failed)} of {len(results)} cases FAILED ({', '.join(failed)})")
    return "\n".join(lines)


def run_tester(seed: int = 0) -> str:
    """Run every case (no timing) and return the tester's text (Conv2DTester.ipynb prints it)."""
    rng = np.random.default_rng(seed)
    results = []
    for case in CASES:
        shapes, errors, _, _ = run_case(case, rng, repeats=0)
        results.append((case, shapes, errors))
    return tester_text(results)


def fmt_shape(shape):
    return "x".join(map(str, shape))


def fmt_error(error):
    return "-" if error is None else f"{error:.1e}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and weights")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per case")
    args = parser.parse_args(argv)
    if args.seed < 0 or args.repeats < 1:
        parser.error(f"--seed must be >= 0 and --repeats >= 1, got {args.seed} and {args.repeats}")
    rng = np.random.default_rng(args.seed)

    header = (f"{'case':<34} {'A':>11} {'W':>10} {'Z':>11} {'err Z':>8} {'err dLdA':>8} "
              f"{'err dLdW':>8} {'err dLdb':>8} {'result':>6} {'mytorch':>9} {'torch':>9}")
    print(f"mytorch Conv2D vs torch {torch.__version__} (float64 errors, tolerance "
          f"{TOLERANCE:g}; float32 forward+backward median of {args.repeats}, seed {args.seed})")
    print(header)
    print("-" * len(header))
    failures = 0
    for case in CASES:
        shapes, errors, passed, (ms_mytorch, ms_torch) = run_case(case, rng, args.repeats)
        failures += not passed
        A, W, Z = (fmt_shape(shape) for shape in shapes)
        error_cells = " ".join(f"{fmt_error(e):>8}" for e in errors)
        print(f"{case.name:<34} {A:>11} {W:>10} {Z:>11} {error_cells} "
              f"{'PASS' if passed else 'FAIL':>6} {ms_mytorch:>7.2f}ms {ms_torch:>7.2f}ms")
    print("-" * len(header))
    print(f"{len(CASES) - failures}/{len(CASES)} cases pass")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
