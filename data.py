"""Datasets as whole uint8 tensors, and per-batch normalization and augmentation.

Each dataset lives in `<data-dir>/<name>.npz` in the layout of keras' mnist.npz
(x_train, y_train, x_test, y_test as uint8, plus `classes`). If the file is missing it is
downloaded once through torchvision and converted to that cache. The whole split is held
in memory (Fashion-MNIST 47 MB, CIFAR-10 184 MB as uint8) and moved to the training device
once; batches are normalized and augmented there, so there is no per-sample PIL transform
and no DataLoader worker to starve on a 2-core machine (the airbench approach).
"""
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from cli import UserError
from files import atomic_path

DATASETS = {
    # name: (cache file, torchvision class, image shape as stored in the npz)
    "fashion_mnist": ("fashion_mnist.npz", "FashionMNIST", (28, 28)),
    "cifar10": ("cifar10.npz", "CIFAR10", (32, 32, 3)),
}
N_CLASSES = 10  # both datasets; the models' output layers are sized for it


def image_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of the dataset's images as the models take them."""
    shape = DATASETS[name][2]  # (H, W) or (H, W, C)
    return (shape[2] if len(shape) == 3 else 1, shape[0], shape[1])


KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor   # (M, C, H, W) uint8
    y_test: torch.Tensor   # (M,) int64
    classes: list

    @cached_property
    def mean(self) -> list:
        """Per-channel mean of the training images in [0, 1] (the normalization constant). Taken
        over all of x_train, validation images included, like the usual published constants: one
        number per channel, fixed before training, chosen by nothing."""
        return [m for m, _ in self._moments]

    @cached_property
    def std(self) -> list:
        """Per-channel standard deviation (N - 1 in the denominator) of the training images in [0, 1]."""
        return [s for _, s in self._moments]

    @cached_property
    def _moments(self) -> list:
        """(mean, std) per channel, exact in float64 from the histogram of the 256 pixel values
        (a pass over the uint8 pixels, no float copy of the whole set)."""
        values = torch.arange(256, dtype=torch.float64) / 255
        out = []
        for c in self.x_train.unbind(1):
            counts = torch.bincount(c.flatten(), minlength=256).double()  # (256,)
            n = counts.sum()
            mean = (counts * values).sum() / n
            var = (counts * (values - mean) ** 2).sum() / (n - 1)
            out.append((mean.item(), var.sqrt().item()))
        return out


def load_dataset(name: str, data_dir) -> Dataset:
    """Load `name` from `<data_dir>/<name>.npz`, downloading it through torchvision if missing."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    path = Path(data_dir) / DATASETS[name][0]
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir} is a file; pass the folder that holds {path.name} "
                        "(or where it should be downloaded)")
    if not path.exists():
        download(name, data_dir)
    return Dataset(name, *_read_npz(path, name))


def read_npz(path, keys, fix: str) -> dict:
    """The arrays `keys` of an .npz file (never unpickling), or a one-line UserError ending in `fix`."""
    if Path(path).is_dir():
        raise UserError(f"{path} is a folder, not an .npz file; move it out of the way and rerun")
    if not zipfile.is_zipfile(path):  # an .npz is a zip of .npy files
        raise UserError(f"{path} is not a readable .npz file (not a zip archive); {fix}")
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in keys if k not in d.files]
            if missing:
                raise UserError(f"{path} lacks array {missing[0]!r}; expected {', '.join(keys)}; {fix}")
            arrays = {k: d[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        why = "it holds pickled Python objects, which are never loaded" if "pickled" in str(err) else err
        raise UserError(f"{path} is not a readable .npz file ({why}); {fix}") from None
    for k, v in arrays.items():  # a member stored as raw bytes (not .npy) comes back as bytes
        if not isinstance(v, np.ndarray):
            raise UserError(f"{path}: {k!r} is not a NumPy array (.npy member); {fix}")
    return arrays


def _read_npz(path: Path, name: str):
    shape = DATASETS[name][2]
    fix = "delete it and rerun to download it again, or replace it with a good copy"
    arrays = read_npz(path, KEYS, fix)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != shape or y.shape != (len(x),):
            raise UserError(f"{path}: x_{split} has shape {x.shape} ({x.dtype}) and y_{split} {y.shape}; "
                            f"expected (N, {', '.join(map(str, shape))}) uint8 images and N labels; {fix}")
        if len(x) == 0:
            raise UserError(f"{path}: x_{split} holds no images; {fix}")
    if arrays["classes"].ndim != 1:
        raise UserError(f"{path}: 'classes' must be a list of {N_CLASSES} names, found an array of shape "
                        f"{arrays['classes'].shape}; {fix}")
    classes = [str(c) for c in arrays["classes"]]
    if len(classes) != N_CLASSES:
        raise UserError(f"{path}: 'classes' names {len(classes)} classes, expected {N_CLASSES}; {fix}")
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        if not np.issubdtype(y.dtype, np.integer):
            found = f"{y.dtype} values"
        elif len(y) and not 0 <= y.min() <= y.max() < N_CLASSES:
            found = f"values {y.min()} to {y.max()}"
        else:
            continue
        raise UserError(f"{path}: y_{split} must hold class indices 0-{N_CLASSES - 1}, found {found}; {fix}")
    return (_to_nchw(arrays["x_train"]), torch.from_numpy(arrays["y_train"].astype(np.int64)),
            _to_nchw(arrays["x_test"]), torch.from_numpy(arrays["y_test"].astype(np.int64)), classes)


def _to_nchw(x: np.ndarray) -> torch.Tensor:
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[:, None]
    else:            # (N, H, W, C) as keras and torchvision store CIFAR-10
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


def download(name: str, data_dir):
    """Fetch `name` through torchvision into `<data_dir>/torchvision/` and write the npz cache."""
    file, tv_name, _ = DATASETS[name]
    path, existed = Path(data_dir) / file, Path(data_dir).exists()
    try:
        arrays = _torchvision_arrays(tv_name, Path(data_dir) / "torchvision")
    except Exception as err:  # URLError, socket errors, HTTP errors, integrity failures
        # leave no empty folders from the failed attempt behind
        _remove_empty_folders(Path(data_dir) if not existed else Path(data_dir) / "torchvision")
        why = " ".join(str(err).split())[:300]  # torchvision's message spans lines: keep ours on one
        raise UserError(
            f"could not download {name} through torchvision ({type(err).__name__}: {why}). "
            f"Offline? Put {file} (keras mnist.npz layout: x_train, y_train, x_test, y_test, classes) "
            f"at {path}, or pass --data-dir pointing at the folder that holds it") from None
    write_npz(path, arrays)
    print(f"cached {name} at {path}")


def write_npz(path, arrays: dict, compress: bool = True):
    """np.savez(_compressed) of arrays to path, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object, so numpy does not append a second .npz
            (np.savez_compressed if compress else np.savez)(f, **arrays)


def _remove_empty_folders(root: Path):
    """root and the folders under it that hold no file, deepest first."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [root]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _torchvision_arrays(tv_name: str, root: Path) -> dict:
    import torchvision  # imported here: only the download path needs it

    cls = getattr(torchvision.datasets, tv_name)
    arrays = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(root), train=train, download=True)
        arrays[f"x_{split}"] = np.asarray(ds.data, dtype=np.uint8)
        arrays[f"y_{split}"] = np.asarray(ds.targets, dtype=np.uint8)
    arrays["classes"] = np.array(ds.classes)
    return arrays


# Pixels an --image may have: larger files (e.g. decompression bombs, 20000 x 20000 pixels that
# compress to a few kB) are refused before their pixels are decoded.
MAX_IMAGE_PIXELS = 64_000_000


def load_image(path, channels: int, size) -> torch.Tensor:
    """Any image file as uint8 (1, C, H, W): grayscale or RGB as `channels` says, center-cropped to
    size's aspect ratio and resized (bilinear) to size (H, W). 16-bit images are scaled by their
    bit depth (65535 -> 255), not clipped; images over MAX_IMAGE_PIXELS are refused."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    fix = "pass a PNG or JPEG file"
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise UserError(f"--image {path} has {img.width} x {img.height} pixels, more than the "
                                f"{MAX_IMAGE_PIXELS:,} convlens reads; pass a smaller image")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit) grayscale
                wide = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") or wide.max() <= 65535 else float(wide.max())
                img = Image.fromarray(np.round(wide / top * 255).clip(0, 255).astype(np.uint8), "L")
            img = img.convert("L" if channels == 1 else "RGB")  # convert() reads all pixels
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read --image {path} ({type(err).__name__}: {err}); {fix}") from None
    img = ImageOps.fit(img, (size[1], size[0]), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
    arr = np.asarray(img, dtype=np.uint8).reshape(size[0], size[1], channels)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]  # (1, C, H, W)


def train_val_split(n: int, n_val: int, seed: int):
    """Seeded disjoint split of range(n) into (train_idx, val_idx), e.g. 45k/5k for CIFAR-10."""
    if n == 0:
        raise UserError("the training set holds no images; check the data file (--data-dir)")
    if not 0 <= n_val < n:
        raise UserError(f"--val {n_val} must be between 0 and {n - 1} (the training set has {n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def limit_images(train_idx: torch.Tensor, limit, held_out: str) -> torch.Tensor:
    """The first --limit training indices; held_out names the validation option, for the message."""
    if limit and limit > len(train_idx):
        raise UserError(f"--limit {limit} is more than the {len(train_idx):,} training images left after "
                        f"holding out {held_out}; use --limit {len(train_idx)} or less")
    return train_idx[:limit]


# ---- per-batch preprocessing, on the training device ------------------------------------

def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W), standardized per channel. mean and std are
    sequences, or tensors already on x's device (no host-to-device copy: the training loop)."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


def draw_augmentation(n: int, generator: torch.Generator, flip: bool, crop: int) -> dict:
    """The random choices for n images, drawn on the CPU: "shift" (n, 2) row and column offsets
    in [0, 2 * crop] and "flip" (n,) booleans (each only when enabled, in that order)."""
    out = {}
    if crop:
        out["shift"] = torch.randint(0, 2 * crop + 1, (2, n), generator=generator).T
    if flip:
        out["flip"] = torch.rand(n, generator=generator) < 0.5
    return out


def augment(x: torch.Tensor, crop: int, shift=None, flip=None) -> torch.Tensor:
    """Apply drawn choices (see draw_augmentation, on x's device): shift each image by up to
    `crop` pixels (zero padding, then crop back), then mirror the flagged ones left-right."""
    n, c, h, w = x.shape
    if shift is not None:
        padded = torch.nn.functional.pad(x, (crop, crop, crop, crop))       # (N, C, H+2p, W+2p)
        dy, dx = shift.T[:, :, None]                                          # (N, 1) each
        rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]      # (N, 1, H, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]      # (N, 1, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x
