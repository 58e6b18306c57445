"""Run the mytorch Conv2D check (mytorch/check.py) and keep its result as JSON for the report.

    python report/mytorch_check.py                 # -> runs/mytorch/check.json, tester_output.txt
    python report/mytorch_check.py --repeats 1     # faster: one timing per case

mytorch/check.py prints its table for a person; this runs the same cases (its CASES and
run_case: float64 errors of Z, dL/dA, dL/dW, dL/db against torch, PASS within its TOLERANCE,
float32 timings) and writes them to check.json, and the same results as the Conv2D tester shows
them (each case, each quantity, PASS or FAIL; what mytorch/Conv2DTester.ipynb prints for the same
seed) to tester_output.txt. The exit status is 1 if any case fails.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the convlens modules live at the repo root
import cli  # noqa: E402
import files  # noqa: E402
from mytorch import check  # noqa: E402


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--seed", type=cli.seed, default=0, help="seed of inputs and weights")
    p.add_argument("--repeats", type=cli.positive_int, default=5, help="timing repeats per case")
    p.add_argument("--out-dir", type=Path, default=Path("runs/mytorch"), help="where check.json and tester_output.txt go")
    return p.parse_args(argv)


def run_cases(seed: int, repeats: int) -> tuple[list, str]:
    """(check.json's rows, the tester's text) from one run of every case."""
    rng = np.random.default_rng(seed)
    rows, results = [], []
    for case in check.CASES:
        shapes, errors, passed, (ms_mytorch, ms_torch) = check.run_case(case, rng, repeats)
        results.append((case, shapes, errors))
        rows.append({"case": case.name, **dict(zip(("A", "W", "Z"), map(check.fmt_shape, shapes))),
                     **dict(zip(("err_Z", "err_dLdA", "err_dLdW", "err_dLdb"), errors)),
                     "passed": passed, "mytorch_ms": round(ms_mytorch, 3), "torch_ms": round(ms_torch, 3)})
    return rows, check.tester_text(results)


def main(argv=None):
    args = parse_args(argv)
    rows, tester = run_cases(args.seed, args.repeats)
    files.write_text(args.out_dir / "tester_output.txt", tester + "\n")
    passed = sum(r["passed"] for r in rows)
    files.write_json(args.out_dir / "check.json", {
        "tolerance": check.TOLERANCE, "seed": args.seed, "repeats": args.repeats, "torch": str(torch.__version__),
        "passed": passed, "total": len(rows), "cases": rows})
    print(f"mytorch Conv2D vs torch: {passed}/{len(rows)} cases pass (max abs error <= {check.TOLERANCE:g}) "
          f"-> {args.out_dir / 'check.json'}, {args.out_dir / 'tester_output.txt'}")
    if passed < len(rows):
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
