"""Speed of mytorch.Conv2D against torch's CPU conv on CIFAR-10-sized layers.

Run:  python benchmarks/bench_mytorch.py [--repeats 30] [--threads N] [--phases]
                                         [--out benchmarks/results/mytorch.json]

Each case (float32, batch 64, 3x3 kernel, padding 1, with bias) times one
forward + backward: mytorch's ``forward(A); backward(dLdZ)`` against torch's
``conv2d`` + autograd with ``A.requires_grad`` (so dL/dA, dL/dW and dL/db are
all computed). Both run with the same thread count (torch intra-op threads and
numpy's BLAS threads), timed in alternating blocks (each after a warm-up),
and the median is reported. The target is mytorch within 2x of torch; a case that
misses it (or every case, with --phases) also gets a per-phase breakdown of
mytorch's time. Results go to a JSON file; the exit status is 1 on a miss.
"""
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
import files  # noqa: E402
from benchmarks.common import cpu_key, machine  # noqa: E402
from mytorch import Conv2D  # noqa: E402

TARGET_RATIO = 2.0
ROUNDS = 5  # alternating timing blocks per case
# Idle time before each block: after a call, OpenBLAS's and torch's OpenMP worker threads spin
# for a while waiting for more work; on 2 cores they would steal the CPU from the other library.
SETTLE_SECONDS = 0.5
# name, N, C_in, C_out, H (= W)
CASES = [
    ("conv1 3->32 @32x32", 64, 3, 32, 32),
    ("conv2 32->64 @16x16", 64, 32, 64, 16),
    ("conv3 64->128 @8x8", 64, 64, 128, 8),
]


def make_inputs(N, C_in, C_out, H, rng):
    layer = Conv2D(C_in, C_out, 3, padding=1, bias=True, dtype=np.float32, rng=rng)
    A = rng.standard_normal((N, C_in, H, H), dtype=np.float32)
    dLdZ = rng.standard_normal(layer.output_shape(A.shape), dtype=np.float32)
    return layer, A, dLdZ


def time_side_by_side(steps, warmup, repeats):
    """Median seconds of each step over ROUNDS alternating blocks of repeats.

    Each block starts with a warm-up, so the threads of one library (OpenBLAS,
    OpenMP) are not still spinning when the other one is timed; alternating
    blocks lets every step see the same machine load.
    """
    times = [[] for _ in steps]
    for _ in range(ROUNDS):
        for step, record in zip(steps, times):
            time.sleep(SETTLE_SECONDS)
            for _ in range(warmup):
                step()
            for _ in range(max(1, repeats // ROUNDS)):
                start = time.perf_counter()
                step()
                record.append(time.perf_counter() - start)
    return [float(np.median(record)) for record in times]


def mytorch_and_torch_steps(layer, A, dLdZ):
    A_t, dLdZ_t = torch.from_numpy(A).requires_grad_(), torch.from_numpy(dLdZ)
    W_t = torch.from_numpy(layer.W.copy()).requires_grad_()
    b_t = torch.from_numpy(layer.b.copy()).requires_grad_()

    def mytorch_step():
        layer.forward(A)
        layer.backward(dLdZ)

    def torch_step():
        A_t.grad = W_t.grad = b_t.grad = None
        torch.nn.functional.conv2d(A_t, W_t, b_t, padding=1).backward(dLdZ_t)

    return mytorch_step, torch_step


def phase_steps(layer, A, dLdZ):
    """The steps of Conv2D.forward/backward one by one, on the same data.

    Each is timed on its own, with its inputs warm in cache, so the sum comes
    out below the time of a whole forward+backward.
    """
    N, C_out, H_out, W_out = dLdZ.shape
    cols = layer._im2col(A, H_out, W_out)
    W_mat = layer._W_mat(A.dtype)
    Z_cols = (W_mat @ cols).reshape(C_out, N, H_out, W_out)
    Z = np.empty(dLdZ.shape, dtype=A.dtype)
    dLdZ_mat = np.ascontiguousarray(dLdZ.transpose(1, 0, 2, 3)).reshape(C_out, -1)
    dLdcols = W_mat.T @ dLdZ_mat
    return {
        "pad + im2col copy": lambda: layer._im2col(A, H_out, W_out),
        "matmul Z = W cols": lambda: W_mat @ cols,
        "Z to NCHW + bias":
            lambda: np.add(Z_cols.transpose(1, 0, 2, 3), layer.b[:, None, None], out=Z),
        "dLdZ to (C_out,N,H,W)": lambda: np.ascontiguousarray(dLdZ.transpose(1, 0, 2, 3)),
        "dLdb sum": lambda: dLdZ_mat.sum(axis=1),
        "matmul dLdW": lambda: (cols @ dLdZ_mat.T).T,
        "matmul dLdcols": lambda: W_mat.T @ dLdZ_mat,
        "col2im scatter-add": lambda: layer._col2im(dLdcols, A.shape, (H_out, W_out)),
    }


def print_phases(layer, A, dLdZ, warmup, repeats):
    phases = phase_steps(layer, A, dLdZ)
    seconds = time_side_by_side(list(phases.values()), warmup, repeats)
    total = sum(seconds)
    for name, s in zip(phases, seconds):
        print(f"    {name:<24} {1e3 * s:7.2f} ms  {100 * s / total:4.0f}%")
    print(f"    {'sum (each timed alone)':<24} {1e3 * total:7.2f} ms")
    return {name: 1e3 * s for name, s in zip(phases, seconds)}


def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def blas_kernels():
    """The CPU kernels numpy's BLAS picked, e.g. OpenBLAS "Haswell" (AVX2) or "SkylakeX"
    (AVX-512): OpenBLAS may not recognise a newer CPU and fall back to AVX2 kernels, about 1.5x
    slower on AVX-512 chips; OPENBLAS_CORETYPE=SkylakeX then picks the AVX-512 ones."""
    return [pool.get("architecture") for pool in threadpool_info() if pool["user_api"] == "blas"]


def other_machines(path, here):
    """The latest earlier run on each other CPU found in the results file at path, so that
    measuring on one machine does not erase what was measured on another."""
    old = files.read_json_or_none(path)
    if not isinstance(old, dict):  # missing or unreadable
        return []
    runs = old.pop("other_machines", []) + [old]
    latest = {cpu_key(run["machine"]): run for run in runs if isinstance(run.get("machine"), dict)}
    return [run for cpu, run in latest.items() if cpu != cpu_key(here)]


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=cli.positive_int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=cli.positive_int, default=torch.get_num_threads(),
                        help="torch and numpy BLAS threads (default: torch's default)")
    parser.add_argument("--phases", action="store_true", help="phase breakdown for every case")
    parser.add_argument("--seed", type=cli.seed, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/mytorch.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    results = []
    with threadpool_limits(limits=args.threads, user_api="blas"):
        print(f"float32 forward+backward, median of {args.repeats} in {ROUNDS} blocks (each after "
              f"{args.warmup} warm-up calls); torch {torch.__version__} threads="
              f"{torch.get_num_threads()}, numpy {np.__version__} BLAS threads={blas_threads()} "
              f"kernels={blas_kernels()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"{'case':<22} {'mytorch':>10} {'torch':>10} {'ratio':>6}  vs {TARGET_RATIO:g}x")
        for name, N, C_in, C_out, H in CASES:
            layer, A, dLdZ = make_inputs(N, C_in, C_out, H, rng)
            ms_mytorch, ms_torch = (1e3 * s for s in time_side_by_side(
                mytorch_and_torch_steps(layer, A, dLdZ), args.warmup, args.repeats))
            ratio = ms_mytorch / ms_torch
            passed = ratio <= TARGET_RATIO
            print(f"{name:<22} {ms_mytorch:7.2f} ms {ms_torch:7.2f} ms {ratio:6.2f}  "
                  f"{'PASS' if passed else 'MISS'}")
            result = dict(case=name, N=N, C_in=C_in, C_out=C_out, H=H, W=H, kernel_size=3,
                          padding=1, mytorch_ms=ms_mytorch, torch_ms=ms_torch, ratio=ratio,
                          passed=passed)
            if args.phases or not passed:
                result["mytorch_phases_ms"] = print_phases(
                    layer, A, dLdZ, args.warmup, args.repeats)
            results.append(result)
        threads = dict(torch=torch.get_num_threads(), numpy_blas=blas_threads())
    run = dict(target_ratio=TARGET_RATIO, dtype="float32", repeats=args.repeats,
               warmup=args.warmup, threads=threads, numpy_blas_kernels=blas_kernels(), machine=machine(),
               load_average=os.getloadavg()[0], python=platform.python_version(),
               numpy=np.__version__, torch=torch.__version__, cases=results)
    files.write_json(args.out, {**run, "other_machines": other_machines(args.out, run["machine"])})
    print(f"wrote {args.out}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    cli.run(lambda: sys.exit(main()), out_flag="--out")
