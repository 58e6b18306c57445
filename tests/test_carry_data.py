"""benchmarks/carry_data.py: parts rebuild the very arrays, and an incomplete or mixed set says so."""
import numpy as np
import pytest

from benchmarks import carry_data
from cli import UserError
from data import load_dataset, write_npz


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 40, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 12, dtype=np.uint8),
              "classes": np.array([f"class {i}" for i in range(10)])}
    path = tmp_path / "cifar10.npz"
    write_npz(path, arrays)
    return path, arrays


def test_parts_rebuild_the_source_byte_for_byte(source, tmp_path):
    path, arrays = source
    parts = carry_data.pack(path, tmp_path / "carry", max_mb=0.06)  # 52 noise images: about 160 kB
    assert len(parts) == 3 and [p.parent.name for p in parts] == ["1", "2", "3"]
    assert max(p.stat().st_size for p in parts) < 0.06e6 * 1.2
    rebuilt = carry_data.unpack(tmp_path / "carry", tmp_path / "data")
    with np.load(rebuilt) as d:
        assert all(np.array_equal(d[k], v) for k, v in arrays.items())
    assert len(load_dataset("cifar10", tmp_path / "data").x_train) == 40  # the loader takes it


def test_a_missing_part_is_named(source, tmp_path):
    parts = carry_data.pack(source[0], tmp_path / "carry", max_mb=0.06)
    parts[1].unlink()
    with pytest.raises(UserError, match="part 2 of 3 of cifar10 is missing"):
        carry_data.unpack(tmp_path / "carry", tmp_path / "data")
    assert not (tmp_path / "data" / "cifar10.npz").exists()


def test_repacking_replaces_the_earlier_parts(source, tmp_path):
    carry_data.pack(source[0], tmp_path / "carry", max_mb=0.06)
    assert len(carry_data.pack(source[0], tmp_path / "carry", max_mb=1)) == 1
    assert len(list((tmp_path / "carry").rglob("*.npz"))) == 1


def test_parts_of_two_packs_are_refused(source, tmp_path):
    path, arrays = source
    carry_data.pack(path, tmp_path / "a", max_mb=0.06)
    write_npz(path, {**arrays, "x_test": 255 - arrays["x_test"]})  # another source, same size
    carry_data.pack(path, tmp_path / "b", max_mb=0.06)
    (tmp_path / "b" / "2" / "cifar10-part2of3.npz").replace(tmp_path / "a" / "2" / "cifar10-part2of3.npz")
    with pytest.raises(UserError, match="different packs"):
        carry_data.unpack(tmp_path / "a", tmp_path / "data")


def test_pack_refuses_a_folder_with_another_packs_parts(source, tmp_path):
    path, arrays = source
    carry_data.pack(path, tmp_path / "carry", max_mb=0.06)
    other = tmp_path / "fashion.npz"
    write_npz(other, arrays)
    with pytest.raises(UserError, match="holds parts of another pack .*cifar10-part1of3.npz"):
        carry_data.pack(other, tmp_path / "carry", max_mb=0.06)
    assert carry_data.unpack(tmp_path / "carry", tmp_path / "data").name == "cifar10.npz"  # still whole


def test_split_parts_covers_every_file_once():
    files = [b"x" * n for n in (5, 1, 9, 3, 3, 7, 2)]
    bounds = carry_data.split_parts(files, max_bytes=12)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(files)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert len(bounds) == 3


def test_a_truncated_part_is_named(source, tmp_path):
    parts = carry_data.pack(source[0], tmp_path / "carry", max_mb=0.06)
    parts[2].write_bytes(parts[2].read_bytes()[:1000])
    with pytest.raises(UserError, match=r"cifar10-part3of3.npz is not a readable .npz file .*carry part 3 again"):
        carry_data.unpack(tmp_path / "carry", tmp_path / "data")


def test_pack_refuses_grayscale_or_foreign_files(tmp_path, tiny_data_dir):
    with pytest.raises(UserError, match=r"x_train has shape \(256, 28, 28\).*RGB uint8"):
        carry_data.pack(tiny_data_dir / "fashion_mnist.npz", tmp_path / "carry", max_mb=1)
    (tmp_path / "notes.npz").write_text("not a zip")
    with pytest.raises(UserError, match="notes.npz is not a readable .npz file .*keras mnist.npz layout"):
        carry_data.pack(tmp_path / "notes.npz", tmp_path / "carry", max_mb=1)
    assert not (tmp_path / "carry").exists()
