"""What the benchmarks share: run one script in a fresh process, time it, read its metrics.json."""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, argv: list, data_dir, out_dir=None) -> dict:
    """Run `python <script> <argv>` (data loading and the final test evaluation count) into
    out_dir (default: a temporary folder); its metrics.json plus wall time and load averages.
    The load average shows whether other programs shared the CPU (then wall time is pessimistic)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir or tmp)
        cmd = [sys.executable, str(ROOT / script), *argv, "--data-dir", str(Path(data_dir).resolve()),
               "--out-dir", str(out)]
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
    return {"command": f"python {script} " + " ".join(argv), "metrics": metrics, "wall_seconds": round(wall, 1),
            "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
