"""Shared fixtures: small fake datasets the tests make, and the real shared data when present."""
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the flat modules (data.py, training.py, ...) live at the root
sys.path.insert(1, str(ROOT / "report"))  # report/words.py, which the draft modules import

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_npz(path: Path, shape, classes, n_train=256, n_test=128, seed=0):
    """A learnable fake dataset in the keras mnist.npz layout: class c is brightest in band c."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, len(classes), n).astype(np.uint8)
        x = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
        h = shape[0]
        for c in range(len(classes)):
            rows = slice(c * h // len(classes), (c + 1) * h // len(classes))
            x[y == c, rows] += 150
        return x, y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        classes=np.array(classes))
    return path


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A folder with fake fashion_mnist.npz and cifar10.npz: 256 train / 128 test images each."""
    folder = tmp_path_factory.mktemp("tiny_data")
    make_npz(folder / "fashion_mnist.npz", (28, 28), FASHION_CLASSES)
    make_npz(folder / "cifar10.npz", (32, 32, 3), CIFAR_CLASSES)
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real datasets: $CONVLENS_DATA_DIR, else ../shared/data beside the checkout."""
    folder = Path(os.environ.get("CONVLENS_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (folder / "fashion_mnist.npz").exists():
        pytest.skip(f"real data not found in {folder} (set CONVLENS_DATA_DIR)")
    return folder


def reference(module: str):
    """Import a reference library from requirements-dev.txt (captum, torchcam, grad-cam).

    Without it the comparison is skipped with the install command, except in CI (CI=true), where
    a missing reference is a failure: those checks must never silently stop running there."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{module} not installed: pip install -r requirements-dev.txt")
