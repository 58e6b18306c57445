"""The data layer: npz cache, torchvision download path (network not touched), errors, split."""
import urllib.error

import numpy as np
import pytest
import torch

import data
from cli import UserError
from conftest import FASHION_CLASSES, make_npz


def test_npz_loads_as_nchw_uint8(tiny_data_dir):
    ds = data.load_dataset("cifar10", tiny_data_dir)
    raw = np.load(tiny_data_dir / "cifar10.npz")
    assert ds.x_train.shape == (256, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.y_test.dtype == torch.int64 and len(ds.y_test) == 128
    # NCHW view of the HWC arrays, same pixels
    assert torch.equal(ds.x_train.permute(0, 2, 3, 1), torch.from_numpy(raw["x_train"]))
    np.testing.assert_allclose(ds.mean, (raw["x_train"] / 255).mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(ds.std, (raw["x_train"] / 255).std(axis=(0, 1, 2), ddof=1), rtol=1e-6)
    assert ds.classes[0] == "airplane"


def write_idx(path, array):
    """An uncompressed IDX file, the format torchvision's FashionMNIST reads from raw/."""
    magic = {3: 0x0803, 1: 0x0801}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_download_path_converts_torchvision_files(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the test must not touch the network")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    raw = tmp_path / "torchvision" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    y_train, y_test = rng.integers(0, 10, 20), rng.integers(0, 10, 10)
    write_idx(raw / "train-images-idx3-ubyte", x_train)
    write_idx(raw / "train-labels-idx1-ubyte", y_train)
    write_idx(raw / "t10k-images-idx3-ubyte", x_test)
    write_idx(raw / "t10k-labels-idx1-ubyte", y_test)

    ds = data.load_dataset("fashion_mnist", tmp_path)
    assert (tmp_path / "fashion_mnist.npz").exists()  # the cache was written
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(x_train.astype(np.uint8)))
    assert torch.equal(ds.y_test, torch.from_numpy(y_test))
    assert ds.classes == FASHION_CLASSES
    cached = np.load(tmp_path / "fashion_mnist.npz")
    assert set(cached.files) == {"x_train", "y_train", "x_test", "y_test", "classes"}


def test_offline_without_cache_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")
    import torchvision
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
    with pytest.raises(UserError, match=r"could not download fashion_mnist.*Offline\? Put fashion_mnist.npz") as err:
        data.load_dataset("fashion_mnist", tmp_path)
    assert str(tmp_path / "fashion_mnist.npz") in str(err.value)
    assert not (tmp_path / "fashion_mnist.npz").exists()


def test_corrupt_npz(tmp_path):
    (tmp_path / "fashion_mnist.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(UserError, match="not a readable .npz"):
        data.load_dataset("fashion_mnist", tmp_path)


def test_a_folder_named_like_the_data_file(tmp_path):
    (tmp_path / "fashion_mnist.npz").mkdir()
    with pytest.raises(UserError, match="fashion_mnist.npz is a folder, not an .npz file; move it"):
        data.load_dataset("fashion_mnist", tmp_path)


def test_npz_missing_array(tmp_path):
    np.savez(tmp_path / "fashion_mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match="lacks array 'y_train'"):
        data.load_dataset("fashion_mnist", tmp_path)


def test_npz_wrong_shape(tmp_path):
    make_npz(tmp_path / "fashion_mnist.npz", (32, 32, 3), FASHION_CLASSES, 8, 8)  # CIFAR-shaped
    with pytest.raises(UserError, match=r"expected \(N, 28, 28\) uint8"):
        data.load_dataset("fashion_mnist", tmp_path)


@pytest.mark.parametrize("change, match", [
    (lambda a: a["y_train"].__setitem__(0, 10), r"y_train must hold class indices 0-9, found values 0 to 10"),
    (lambda a: a.update(y_test=a["y_test"].astype(np.float32)), r"y_test must hold class indices 0-9, found float32 values"),
    (lambda a: a.update(classes=a["classes"][:3]), r"'classes' names 3 classes, expected 10"),
])
def test_npz_bad_labels_or_classes(tmp_path, change, match):
    make_npz(tmp_path / "good.npz", (28, 28), FASHION_CLASSES, 8, 8)
    arrays = dict(np.load(tmp_path / "good.npz"))
    change(arrays)
    np.savez(tmp_path / "fashion_mnist.npz", **arrays)
    with pytest.raises(UserError, match=match):
        data.load_dataset("fashion_mnist", tmp_path)


def test_unknown_dataset(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        data.load_dataset("mnist", tmp_path)


def test_train_val_split_is_disjoint_seeded_and_sized():
    train, val = data.train_val_split(50_000, 5_000, seed=3)
    assert len(train) == 45_000 and len(val) == 5_000
    assert len(set(train.tolist()) | set(val.tolist())) == 50_000
    again, _ = data.train_val_split(50_000, 5_000, seed=3)
    other, _ = data.train_val_split(50_000, 5_000, seed=4)
    assert torch.equal(train, again) and not torch.equal(train, other)
    with pytest.raises(UserError, match="--val"):
        data.train_val_split(100, 100, 0)


def test_augment_shifts_whole_images():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    assert torch.equal(data.augment(x, 0), x)
    drawn = data.draw_augmentation(2, g, flip=False, crop=2)
    assert set(drawn) == {"shift"} and drawn["shift"].shape == (2, 2)
    out = data.augment(x, 2, **drawn)
    for i in range(2):  # output i is the window at the drawn offset of the zero-padded input
        dy, dx = drawn["shift"][i].tolist()
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert torch.equal(out[i], padded[:, dy:dy + 6, dx:dx + 6])


def test_augment_mirrors_about_half():
    x = torch.rand(1000, 1, 2, 3)
    drawn = data.draw_augmentation(1000, torch.Generator().manual_seed(0), flip=True, crop=0)
    assert set(drawn) == {"flip"}
    out = data.augment(x, 0, **drawn)
    assert torch.equal(out[drawn["flip"]], x[drawn["flip"]].flip(3))
    assert torch.equal(out[~drawn["flip"]], x[~drawn["flip"]]) and 400 < drawn["flip"].sum() < 600


def test_normalize():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    out = data.normalize(x, [0.5], [0.5])
    assert torch.allclose(out, torch.tensor([[[[-1.0, 1.0]]]]))
    assert torch.equal(data.normalize(x, torch.tensor([0.5]), torch.tensor([0.5])), out)
