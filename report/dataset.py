"""Class balance of Fashion-MNIST and CIFAR-10, and the test images that also sit in the training
set: exact copies and near duplicates (the report's dataset section, assignment 2 problem 6).

    python report/dataset.py                    # -> runs/dataset/
    python report/dataset.py --limit 2000       # the first 2,000 images of each split (a quick look)
    python report/dataset.py --checkpoints runs/cifar10-dense/model.pt runs/cifar10-gap/model.pt \
        runs/fashionmnist-cnn/model.pt          # + each network's accuracy on the near copies vs the rest

Exact duplicates: a test image byte-identical to a training image (SHA-1 of the pixels).
Near duplicates, in two stages so that 10,000 x 60,000 pairs stay cheap:
  1. search: a 64-bit difference hash (dHash: the gray image shrunk to 8x9 by area averaging,
     one bit per horizontally adjacent pair, "is the right one brighter") of every image; for
     each test image the CANDIDATES training images with the nearest hashes (Hamming distance);
  2. check: the mean absolute pixel difference (MAD, 0-255) of the test image and each candidate;
     its nearest counts as a near duplicate when the MAD is at most the dataset's threshold.
The hash alone is not enough: many different Fashion-MNIST trousers share one hash (plain
silhouettes on a black background), so dataset.json reports both counts.

--checkpoints: each trained network predicts its dataset's test images (the same --limit), and
dataset.json's "models" gets its accuracy on the test images that are exact or near copies of a
training image against its accuracy on the rest (do the copies flatter the test accuracy?).

Writes to runs/dataset/ (or --out-dir): dataset.json (class counts, duplicate counts, the pairs,
"models" with --checkpoints),
class_balance.png and near_duplicates.png (a few pairs per dataset, from closest to the threshold).
"""
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the convlens modules live at the repo root
import cli  # noqa: E402
import files  # noqa: E402
import plots  # noqa: E402
from data import DATASETS, load_dataset  # noqa: E402
from kernel_vis import DATASET_TITLES as TITLES, wrap  # noqa: E402

# Plain names of the checkpoints' networks (the model class is internal), per (dataset, class).
NETWORK_TITLES = {("fashion_mnist", "FFN"): "Fashion-MNIST feed-forward network",
                  ("fashion_mnist", "CNN"): "Fashion-MNIST CNN",
                  ("cifar10", "CNN"): "CIFAR-10 VGG-style network (dense head)",
                  ("cifar10", "GAPNet"): "CIFAR-10 ResNet-style network (global average pooling)"}
CANDIDATES = 8  # training images per test image that the pixel check compares
# MAD thresholds (0-255 scale), chosen by looking at pairs of the shared copies: below them the
# pairs are the same picture (Fashion-MNIST: same product photo; CIFAR-10: same photo, re-encoded
# or slightly shifted); above, different objects start to appear (a bird next to a plane at 17).
NEAR_MAD = {"fashion_mnist": 6.0, "cifar10": 15.0}
SWEEP = (2, 4, 6, 8, 10, 15, 20)  # also counted, to show how much the threshold matters


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--data-dir", default=cli.DEFAULT_DATA_DIR,
                   help="folder holding fashion_mnist.npz and cifar10.npz ($CONVLENS_DATA_DIR or ./data)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/dataset"), help="where results and figures go")
    p.add_argument("--limit", type=cli.positive_int, help="use the first N images of each split only")
    p.add_argument("--pairs", type=cli.positive_int, default=8, help="near-duplicate pairs shown per dataset")
    p.add_argument("--checkpoints", type=Path, nargs="+", default=[],
                   help="trained networks (model.pt) to score on the near copies against the rest of the test set")
    args = p.parse_args(argv)
    for ckpt in args.checkpoints:
        if not ckpt.is_file():
            raise cli.UserError(f"--checkpoints: {ckpt} is not a file; train it first (python report/run_all.py)")
    return args


# ---- compute ------------------------------------------------------------------------------------

def class_counts(y: torch.Tensor, n_classes: int) -> list:
    return np.bincount(y.numpy(), minlength=n_classes).tolist()


def dhash(x: torch.Tensor) -> np.ndarray:
    """64-bit difference hash of uint8 images (N, C, H, W) -> (N,) uint64."""
    gray = x.float().mean(1, keepdim=True)                       # (N, 1, H, W)
    small = F.adaptive_avg_pool2d(gray, (8, 9))[:, 0]            # (N, 8, 9)
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(x), 64).numpy()
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def exact_duplicates(x_train: torch.Tensor, x_test: torch.Tensor) -> list:
    """[(test index, train index)] of byte-identical images."""
    digest = lambda img: hashlib.sha1(img.numpy().tobytes()).digest()
    train = {}
    for j, img in enumerate(x_train):
        train.setdefault(digest(img), j)
    return [(i, train[d]) for i, img in enumerate(x_test) if (d := digest(img)) in train]


def nearest_train_images(x_train, x_test, k=CANDIDATES, chunk=200) -> dict:
    """For every test image: the Hamming distance to the nearest training hash, and among the k
    training images with the nearest hashes the one with the smallest MAD (index, MAD, its hash
    distance). Chunked over test images: a chunk x train distance matrix at a time."""
    h_train, h_test = dhash(x_train), dhash(x_test)
    flat_train = x_train.reshape(len(x_train), -1).numpy()
    flat_test = x_test.reshape(len(x_test), -1).numpy().astype(np.int16)
    k = min(k, len(x_train))
    out = {key: [] for key in ("min_hash_distance", "train_index", "mad", "hash_distance")}
    for start in range(0, len(x_test), chunk):
        dist = np.bitwise_count(h_test[start:start + chunk, None] ^ h_train[None])   # (chunk, N_train)
        cand = np.argpartition(dist, k - 1, axis=1)[:, :k]                             # (chunk, k)
        mad = np.abs(flat_train[cand].astype(np.int16) - flat_test[start:start + chunk, None]).mean(2)
        best = mad.argmin(1)
        rows = np.arange(len(cand))
        out["min_hash_distance"].append(dist.min(1))
        out["train_index"].append(cand[rows, best])
        out["mad"].append(mad[rows, best])
        out["hash_distance"].append(dist[rows, cand[rows, best]])
    return {key: np.concatenate(v) for key, v in out.items()}


def analyze(ds, n_pairs: int) -> dict:
    """Everything dataset.json holds for one dataset."""
    n = len(ds.classes)
    exact = exact_duplicates(ds.x_train, ds.x_test)
    near = nearest_train_images(ds.x_train, ds.x_test)
    threshold = NEAR_MAD.get(ds.name, 10.0)
    is_exact = np.zeros(len(ds.x_test), bool)
    is_exact[[i for i, _ in exact]] = True
    is_near = (near["mad"] <= threshold) & ~is_exact   # near but not identical
    near_idx = np.flatnonzero(is_near)
    label_differs = (ds.y_test[near_idx] != ds.y_train[near["train_index"][near_idx]]).numpy()
    pairs = [{"test": int(i), "train": int(near["train_index"][i]), "mad": round(float(near["mad"][i]), 2),
              "hash_distance": int(near["hash_distance"][i]), "test_label": ds.classes[ds.y_test[i]],
              "train_label": ds.classes[ds.y_train[near["train_index"][i]]]}
             for i in near_idx[np.argsort(near["mad"][near_idx], kind="stable")]]
    return {
        "name": ds.name, "title": TITLES.get(ds.name, ds.name), "classes": ds.classes,
        "train_images": len(ds.x_train), "test_images": len(ds.x_test),
        "train_counts": class_counts(ds.y_train, n), "test_counts": class_counts(ds.y_test, n),
        "exact_duplicates": len(exact), "exact_pairs": [list(p) for p in exact[:100]],
        "hash_identical": int((near["min_hash_distance"] == 0).sum()),
        "near_threshold_mad": threshold, "near_duplicates": int(is_near.sum()),
        "near_label_differs": int(label_differs.sum()),
        "near_by_threshold": {str(t): int(((near["mad"] <= t) & ~is_exact).sum()) for t in SWEEP},
        "near_pairs": pairs[:200],
        "copy_indices": sorted(np.flatnonzero(is_near | is_exact).tolist()),  # exact or near copies
        "shown_pairs": spread(pairs, n_pairs),
    }


def copy_accuracy(pred: torch.Tensor, y: torch.Tensor, copies: list) -> dict:
    """Accuracy of predictions `pred` (N,) on the test images listed in `copies` and on the rest."""
    is_copy = torch.zeros(len(y), dtype=torch.bool)
    is_copy[copies] = True
    right = pred == y
    acc = lambda mask: right[mask].sum().item() / mask.sum().item() if mask.any() else None  # noqa: E731
    return {"near_images": int(is_copy.sum()), "rest_images": int((~is_copy).sum()),
            "accuracy_near": acc(is_copy), "accuracy_rest": acc(~is_copy)}


def score_checkpoint(path: Path, datasets: dict, results: dict) -> dict:
    """A trained network's accuracy on its dataset's near copies against the rest."""
    from training import load_checkpoint, predict_flip

    model, ckpt = load_checkpoint(path)
    ds = datasets.get(ckpt.get("dataset"))
    if ds is None:
        raise cli.UserError(f"{path} was trained on {ckpt.get('dataset')!r}, not one of {', '.join(datasets)}")
    tta = bool((ckpt.get("metrics") or {}).get("tta"))  # the prediction rule its run reports
    plain, flipped = predict_flip(model, ds.x_test, ckpt["mean"], ckpt["std"], torch.device("cpu"))  # (N, classes)
    pred = (flipped if tta else plain).argmax(1)  # float32 on the CPU: no autocast there
    name = ckpt["model"]["name"]
    return {"checkpoint": str(path), "dataset": ds.name, "tta": tta,
            "network": NETWORK_TITLES.get((ds.name, name), f"{TITLES.get(ds.name, ds.name)} network"),
            **copy_accuracy(pred, ds.y_test, results[ds.name]["copy_indices"])}


def spread(pairs: list, n: int) -> list:
    """n pairs evenly spaced in MAD order (the closest, ..., the ones nearest the threshold)."""
    if len(pairs) <= n:
        return pairs
    return [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, n).round()]


# ---- figures --------------------------------------------------------------------------------------

def plot_class_balance(results: list):
    fig, axes = plots.plt.subplots(1, len(results), figsize=(3.25 * len(results), 2.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        x = np.arange(len(r["classes"]))
        for offset, split, color in ((-0.2, "train", "tab:blue"), (0.2, "test", "tab:orange")):
            counts = np.array(r[f"{split}_counts"])
            ax.bar(x + offset, 100 * counts / max(counts.sum(), 1), width=0.4, color=color,
                   label=f"{split} ({counts.sum():,} images)")
        ax.axhline(100 / len(x), color="gray", lw=0.8, ls="--", label="perfect balance")
        ax.set_xticks(x, r["classes"], rotation=45, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("share of the split (%)", fontsize=8)
        ax.set_title(f"{r['title']}: class balance", fontsize=9)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.6)  # room for the legend above the bars
        ax.legend(fontsize=7, loc="upper center", ncol=1)
    fig.tight_layout()
    return fig


PAIR_COLUMN_IN = 0.72  # one pair's column: a 7 pt class name of 11 characters ('T-shirt/top') fits it
PAIRS_SHOWN = 4        # per dataset, spread from the closest pair to the threshold


def plot_pairs(datasets: list, results: list):
    """The datasets side by side, each a block of PAIRS_SHOWN columns: the test image above, its
    nearest training image below; each image titled with its index and its full class name
    (wrapped to its column, never cut)."""
    n_cols = PAIRS_SHOWN * len(results)
    width = min(PAIR_COLUMN_IN * n_cols + 0.4, plots.PRINT_WIDTH_IN)  # prints at its own size
    name = lambda label: wrap(label, (width - 0.4) / n_cols, plots.MIN_FONT_PT)  # noqa: E731
    fig, axes = plots.plt.subplots(2, n_cols, squeeze=False, figsize=(width, 3.0))
    for ax in axes.flat:
        ax.axis("off")
    for d, (ds, r) in enumerate(zip(datasets, results)):
        top, bottom = axes[0][d * PAIRS_SHOWN:(d + 1) * PAIRS_SHOWN], axes[1][d * PAIRS_SHOWN:(d + 1) * PAIRS_SHOWN]
        for col, pair in enumerate(spread(r["shown_pairs"], PAIRS_SHOWN)):
            plots.show_image(top[col], ds.x_test[pair["test"]].numpy(),
                             f"#{pair['test']}\n{name(pair['test_label'])}\nMAD {pair['mad']:.1f}",
                             title_size=plots.MIN_FONT_PT)
            plots.show_image(bottom[col], ds.x_train[pair["train"]].numpy(),
                             f"#{pair['train']}\n{name(pair['train_label'])}", title_size=plots.MIN_FONT_PT)
            for ax in (top[col], bottom[col]):
                ax.axis("on")
        if not r["shown_pairs"]:
            top[0].text(0, 0.5, f"{r['title']}: no near duplicates", fontsize=8)
        top[0].set_ylabel("test", fontsize=7)  # short: a long rotated label would squeeze the rows
        bottom[0].set_ylabel("train", fontsize=7)
    sides = [f" ({side})" for side in ("left", "right")] if len(results) == 2 else [""] * len(results)
    fig.suptitle(" and ".join(r["title"] + side for r, side in zip(results, sides)) + ": test images (upper row) "
                 "and their nearest training "
                 "images (lower row)\n(MAD: mean absolute pixel difference, 0-255)", fontsize=8)
    fig.tight_layout()
    return fig


def limited(ds, n):
    """The first n images of each split (all of them when n is None)."""
    if n is None:
        return ds
    return type(ds)(ds.name, ds.x_train[:n], ds.y_train[:n], ds.x_test[:n], ds.y_test[:n], ds.classes)


def main(argv=None):
    args = parse_args(argv)
    datasets = [limited(load_dataset(name, args.data_dir), args.limit) for name in DATASETS]
    results = [analyze(ds, args.pairs) for ds in datasets]
    models = [score_checkpoint(p, {ds.name: ds for ds in datasets}, {r["name"]: r for r in results})
              for p in args.checkpoints]
    files.write_json(args.out_dir / "dataset.json", {"limit": args.limit, "candidates": CANDIDATES,
                                                   "datasets": results, "models": models})
    plots.save(plot_class_balance(results), args.out_dir / "class_balance.png")
    plots.save(plot_pairs(datasets, results), args.out_dir / "near_duplicates.png")
    for r in results:
        print(f"{r['title']}: {r['exact_duplicates']} exact and {r['near_duplicates']} near duplicates "
              f"(MAD <= {r['near_threshold_mad']:g}) of {r['test_images']:,} test images in the training set; "
              f"{r['hash_identical']} share a hash with a training image")
    for m in models:
        near = "n/a" if m["accuracy_near"] is None else f"{100 * m['accuracy_near']:.2f}%"
        print(f"{m['network']}: {near} correct on {m['near_images']} copies, "
              f"{100 * (m['accuracy_rest'] or 0):.2f}% on the other {m['rest_images']:,} test images")
    print(f"-> {args.out_dir}")


if __name__ == "__main__":
    cli.run(main)
