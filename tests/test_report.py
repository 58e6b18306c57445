"""report/build.py, report/dataset.py and report/run_all.py.

build.py on a crafted runs folder (fast): the PDF has every item heading of both assignments in
order, the contents page and every figure; answers.md replaces an item's draft and survives a
rebuild; --author reaches the title page; the Typst source compiles on its own; missing inputs are
named with the command that makes them. One tiny run_all.py (--limit 128) checks the whole pipeline;
the step runner is tested on made-up steps."""
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pypdf
import pytest
import torch

import cli
import plots

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    """report/<name>.py as a module (report/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"report_{name}", ROOT / "report" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "tests"))
from test_draft_saliency import stats as draft_stats  # noqa: E402  (saliency_stats.json with known numbers)

run_all = load("run_all")
build = load("build")
dataset = load("dataset")
typst_doc = load("typst_doc")
HEADINGS = [build.heading_text(k, t) for k, t, _, _ in build.ITEMS]


def pdf_pages(path) -> list:
    """Each page's text with whitespace runs collapsed (wrapped lines become one text)."""
    return [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(path).pages]


def body_start(pages) -> int:
    """Index of the page that opens Part I (after the contents, which list every heading too; a
    figure floated to the top of that page may come before its heading)."""
    return next(i for i, p in enumerate(pages) if "Part I: Fashion-MNIST" in p and not p.startswith("Contents"))


def body_text(pages) -> str:
    """The pages after the contents."""
    return " ".join(pages[body_start(pages):])


def body_pages(pages) -> int:
    """Pages of the main body: from Part I up to the page that opens Appendix A."""
    start = body_start(pages)
    return next(i for i in range(start + 1, len(pages)) if "Appendix A. Layer tables" in pages[i]) - start


# ---- a crafted runs folder: known numbers, small real PNGs -------------------------------------------

# (width, height) in inches of the figures the scripts draw, as printed: the crafted report's pages
# then fill as a real run's do (a name not listed: a small 3 x 2 in plot)
FIGURE_IN = {"examples": (3.1, 2.3), "loss": (3.05, 3.6), "confusion_matrix": (3.2, 3.4), "kernels": (6.4, 1.6),
             "filtered": (6.4, 2.8), "feature_maps": (6.5, 4.6), "ablation": (6.4, 5.3), "gabor": (6.5, 2.8),
             "gradcam": (5.8, 2.6), "cam": (5.8, 2.6), "guided_backprop": (5.3, 4.1), "sanity": (3.2, 3.1),
             "class_balance": (6.4, 2.6), "near_duplicates": (6.2, 3.3),
             "feature_maps_features": (6.4, 2.8), "filters_features": (3.2, 2.7)}


def png(path, width_in=None):
    stem = path.stem.removesuffix("_all")
    key = next((k for k in sorted(FIGURE_IN, key=len, reverse=True) if stem.startswith(k)), None)
    w, h = FIGURE_IN.get(key, (3.0, 2.0))
    if path.stem.endswith("_all"):  # every channel of a wide layer: the appendix grid
        w, h = 6.5, 6.0
    fig, ax = plots.plt.subplots(figsize=(width_in or w, h))
    ax.plot([0, 1], [1, 0])
    ax.set_title(path.stem, fontsize=8)
    plots.save(fig, path)


def write(runs, rel, obj):
    path = runs / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, str):
        path.write_text(obj)
    elif obj is None:
        png(path)
    else:
        path.write_text(json.dumps(obj))


CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def fashion_metrics(acc, params, shirt):
    cm = (np.eye(10) * 90 + 1).astype(int).tolist()
    cm[6][0] = 40  # Shirt taken for T-shirt/top: the most confused pair
    return {"test_accuracy": acc, "parameters": params, "train_images": 60000, "wall_seconds": 12.0,
            "config": {"epochs": 12, "hidden": [64], "channels": [8, 16], "kernel_size": 3},
            "per_class_accuracy": {c: (shirt if c == "Shirt" else 0.97) for c in CLASSES}, "confusion_matrix": cm,
            "device": "cpu"}


def gabor(layers):
    side = {"r2": [0.9, 0.5], "share_above_threshold": 0.5, "median_r2": 0.7}
    return {"layers": layers, "kernel_size": 3, "threshold": 0.7, "trained": side, "untrained": side, "meaningful": False}


def crafted_runs(runs: Path) -> list:
    """Every input build.py reads, with known numbers; returns the figure files in report order."""
    figures = []
    for m, acc, params in (("ffn", 0.9012, 2_000_000), ("cnn", 0.9345, 400_000)):
        write(runs, f"fashionmnist-{m}/metrics.json", fashion_metrics(acc, params, 0.6 if m == "ffn" else 0.75))
        for f in ("examples", "loss", "confusion_matrix"):
            write(runs, f"fashionmnist-{m}/{f}.png", None)
    figures += [f"fashionmnist-{m}/{f}.png" for f in ("examples", "loss", "confusion_matrix") for m in ("ffn", "cnn")]
    write(runs, "fashionmnist-cnn/kernels/gabor.json", gabor(["conv1"]))
    stage = lambda label, shape, m: {"name": label, "label": label, "shape": shape, "sample": m, "test_mean": m}
    write(runs, "fashionmnist-cnn/kernels/feature_stats.json", {
        "sample": "test image #0 (Ankle boot)", "input_shape": [1, 28, 28], "test_images": 256, "stages": [
            stage("conv 1 + ReLU", [8, 28, 28], {"active_fraction": 0.6, "edge_correlation": 0.6, "shape_correlation": 0.3}),
            stage("max pool 1", [8, 14, 14], {"active_fraction": 0.3, "edge_correlation": 0.2, "shape_correlation": 0.7})]})
    for f in ("kernels", "filtered", "feature_maps"):
        write(runs, f"fashionmnist-cnn/kernels/{f}.png", None)
        figures.append(f"fashionmnist-cnn/kernels/{f}.png")
    write(runs, "mytorch/check.json", {"tolerance": 1e-8, "passed": 2, "total": 2, "cases": [
        {"case": c, "A": "2x3x8x8", "W": "4x3x3x3", "err_Z": 1e-15, "err_dLdA": 2e-15, "err_dLdW": 3e-15,
         "err_dLdb": None, "passed": True} for c in ("stride 1", "stride 2")]})
    write(runs, "mytorch/tester_output.txt", "Conv2D forward: PASSED\nConv2D backward: PASSED\n")
    variants = [{"variant": v, "label": v, "val_accuracy": 0.8, "test_accuracy": 0.79, "loss_gap": 0.1}
                for v in ("bn-drop", "bn-nodrop", "nobn-drop", "nobn-nodrop")]
    for arch in ("dense", "gap"):
        folder = f"cifar10-{arch}"
        write(runs, f"{folder}/metrics.json", {"val_accuracy": 0.8123, "test_accuracy": 0.8056, "val_images": 5000,
                                               "test_images": 10000, "parameters": 123456, "epochs": 10,
                                               "train_images": 45000, "train_seconds": 60, "device": "cpu",
                                               "config": {"lr": 0.4, "batch_size": 512}})
        write(runs, f"{folder}/architecture.txt", "CNN(channels=[8, 16])\n| layer | output | parameters |\n"
                                                  "|---|---|---|\n| conv1 | 8x32x32 | 224 |\n| fc | 10 | 170 |\nnotes\n")
        write(runs, f"{folder}/history.csv", "epoch,val_loss\n1,1.5\n2,1.2\n")
        write(runs, f"{folder}-ablation/ablation.json", {"seeds": 1, "variants": variants})
        for f in ("loss.png", "-ablation/ablation.png"):
            write(runs, folder + ("/" if not f.startswith("-") else "") + f, None)
        write(runs, f"{folder}/kernels/gabor.json", gabor(["features.conv1", "features.conv3"]))
        for kind in ("feature_maps", "filters"):
            for layer in ("conv1", "conv3"):
                write(runs, f"{folder}/kernels/{kind}_features-{layer}.png", None)
        write(runs, f"{folder}/kernels/feature_maps_features-conv3_all.png", None)  # every channel: appendix
        write(runs, f"{folder}/kernels/gabor.png", None)
        method = "cam" if arch == "gap" else "gradcam"
        write(runs, f"{folder}/saliency_stats.json", draft_stats(method="CAM" if arch == "gap" else "Grad-CAM"))
        for f in (method, "guided_backprop", "sanity"):
            write(runs, f"{folder}/{f}.json", {"examples": [], "model": "m", "methods": [], "steps": []})
            write(runs, f"{folder}/{f}.png", None)
    for arch in ("dense", "gap"):
        figures += [f"cifar10-{arch}-ablation/ablation.png", f"cifar10-{arch}/loss.png"]
    for kind in ("feature_maps", "filters"):  # per layer depth the two networks, one after the other
        figures += [f"cifar10-{arch}/kernels/{kind}_features-{layer}.png" for layer in ("conv1", "conv3")
                    for arch in ("dense", "gap")]
    figures += [f"cifar10-{arch}/kernels/gabor.png" for arch in ("dense", "gap")]
    figures += ["cifar10-dense/gradcam.png", "cifar10-gap/cam.png"]
    figures += [f"cifar10-{arch}/{f}.png" for f in ("guided_backprop", "sanity") for arch in ("dense", "gap")]
    write(runs, "dataset/dataset.json", {"limit": None, "datasets": [
        {"name": "cifar10", "title": "CIFAR-10", "train_images": 50000, "test_images": 10000,
         "train_counts": [5000] * 10, "exact_duplicates": 3, "near_duplicates": 97, "near_threshold_mad": 15.0}],
        "models": [{"network": "CIFAR-10 VGG-style network (dense head)", "near_images": 100, "rest_images": 9900,
                    "accuracy_near": 0.97, "accuracy_rest": 0.85}]})
    for f in ("class_balance", "near_duplicates"):
        write(runs, f"dataset/{f}.png", None)
        figures.append(f"dataset/{f}.png")
    figures += [f"cifar10-{arch}/kernels/feature_maps_features-conv3_all.png" for arch in ("dense", "gap")]  # appendix
    return figures


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    figures = crafted_runs(folder / "runs")
    out = folder / "out" / "report.pdf"
    build.main(["--runs-dir", str(folder / "runs"), "--out", str(out), "--author", "Ada Lovelace"])
    return folder / "runs", out, figures


def test_every_item_heading_in_order_with_contents_and_every_figure(crafted):
    runs, out, figures = crafted
    pages = pdf_pages(out)
    assert pages[1].startswith("Contents") and all(h in pages[1] + pages[2] for h in HEADINGS[:12])
    body = body_text(pages)
    starts = [body.find(h) for h in HEADINGS]
    assert -1 not in starts and starts == sorted(starts), [h for h, s in zip(HEADINGS, starts) if s == -1]
    assert "2(b)(c) Impact of batch normalization" in body and "3(b) Learned filters" in body
    source = out.with_suffix(".typ").read_text()
    shown = [os.path.normpath(out.parent / p) for p in __import__("re").findall(r'image\("([^"]+)"', source)]
    assert shown == [str(runs / f) for f in figures]  # each figure once, body subset before the appendix grid
    assert "Appendix A" in body and "Appendix B" in body


BODY_PAGE_BUDGET = 25  # the main body (Part I to the appendices), with figures of a real run's sizes


def test_the_body_fits_its_page_budget_with_each_figure_at_its_own_size(crafted):
    runs, out, figures = crafted
    pages = pdf_pages(out)
    assert body_pages(pages) <= BODY_PAGE_BUDGET, f"{body_pages(pages)} body pages"
    source = out.with_suffix(".typ").read_text()
    for f in figures:  # each at its own size (pixels / dpi), never scaled down to make it fit
        rel = os.path.relpath(runs / f, out.parent)
        printed = float(re.search(r'image\("' + re.escape(rel) + r'", width: ([\d.]+)in', source)[1])
        w, h, dpi = typst_doc.png_info(runs / f)
        assert printed == round(w / dpi, 2) <= typst_doc.TEXT_WIDTH_IN
    # a layer's filter grids print side by side: both networks' grids of one depth share a row, in
    # place under Problem 3's items (a floating row could rise above their heading); the feature
    # maps, each the text width, follow each other
    assert source.count("\n#grid(columns: (") >= 2


def test_measured_numbers_and_plain_words(crafted):
    _, out, _ = crafted
    text = " ".join(pdf_pages(out))
    assert "Ada Lovelace" in pdf_pages(out)[0]
    assert "true class (Figure 1 and Figure 2)" in text  # cross-references resolve to the figures' numbers
    assert "the CNN beats the feed-forward network: 93.45% against 90.12%" in text
    assert "2,000,000 parameters" in text and "Shirt taken for T-shirt/top (40 images)" in text
    assert "2 of 2 pass" in text and "Conv2D forward: PASSED" in text
    assert "97.00% of the 100 near-copy test images correctly against 85.00%" in text  # Problem 6 from dataset.json
    assert "Recht et al. (2018)" in text and "Gebru et al. 2021" in text
    for jargon in ("flip TTA", "preset", "features.conv", "GAPNet"):
        assert jargon not in text


def test_answers_replace_the_draft_and_survive_a_rebuild(crafted, tmp_path):
    runs, _, _ = crafted
    out = tmp_path / "report.pdf"
    build.main(["--runs-dir", str(runs), "--out", str(out)])
    answers = tmp_path / "answers.md"
    template = answers.read_text()
    assert "## 2(a)(c) Impact of batch normalization" in template and "## P6 " in template
    draft = body_text(pdf_pages(out))
    assert "the CNN beats the feed-forward network" in draft
    answers.write_text(template.replace("name:", "name: Grace Hopper").replace(
        "## Q8 Question 8. Why does the CNN perform better?",
        "## Q8 Question 8. Why does the CNN perform better?\nMy own answer: weight sharing, in *my* words [1] #x $y$ <z> @w.\n"))
    for _ in range(2):  # the second build must not overwrite answers.md
        build.main(["--runs-dir", str(runs), "--out", str(out)])
        pages = pdf_pages(out)
        body = body_text(pages)
        assert "My own answer: weight sharing, in *my* words [1] #x $y$ <z> @w." in body  # printed as written
        assert "the CNN beats the feed-forward network" not in body  # the draft of Q8 is replaced
        q8 = body[body.find(HEADINGS[7]):body.find(HEADINGS[8])]
        assert "Written by the student" in q8 and "Draft generated" not in q8
        notes = out.with_suffix(".typ").read_text().split("\n", 1)[1].replace("\\", "")  # Typst escapes undone
        assert "report/answers.md" not in notes and notes.count(str(answers.resolve())) >= 27  # the file it read
        assert "Grace Hopper" in pages[0]
    assert "Grace Hopper" in answers.read_text()


def test_the_typst_source_compiles_on_its_own(crafted, tmp_path):
    import typst

    runs, out, _ = crafted
    source = out.with_suffix(".typ")
    root = source.read_text().splitlines()[1].split("--root ")[1].split()[0]  # the command the header gives
    typst.compile(str(source), output=str(tmp_path / "again.pdf"), root=root)
    assert len(pdf_pages(tmp_path / "again.pdf")) == len(pdf_pages(out))


def test_escape_prints_text_exactly(tmp_path):
    import typst

    text = "1. a*b_c $x$ <l> @r [x] // #f -- back\\slash `code` ~ = + -"
    (tmp_path / "t.typ").write_text("#set smartquote(enabled: false)\n" + typst_doc.escape(text))
    typst.compile(str(tmp_path / "t.typ"), output=str(tmp_path / "t.pdf"))
    assert pdf_pages(tmp_path / "t.pdf")[0] == " ".join(text.split())


def test_empty_runs_name_what_is_missing_and_still_build(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    out = tmp_path / "out" / "report.pdf"
    build.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    pages = pdf_pages(out)
    body = body_text(pages)
    assert all(h in body for h in HEADINGS)
    assert "No generated text: needs" in body and "python fashionmnist.py --model cnn" in body
    missing = body[body.find("Missing inputs"):]
    assert "fashionmnist-cnn/metrics.json" in missing and "$ python cam.py --checkpoint" in missing
    assert sorted(p.name for p in out.parent.iterdir()) == ["answers.md", "report.pdf", "report.typ"]
    assert "missing inputs" in capsys.readouterr().out


def test_unusable_inputs_are_named_not_a_traceback(crafted, tmp_path):
    import shutil
    runs, _, _ = crafted
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    (copy / "fashionmnist-cnn" / "metrics.json").write_text('{"x": 1}')  # parses, lacks every field
    (copy / "cifar10-gap" / "sanity.json").write_text("[1]")
    png_bytes = (copy / "cifar10-gap" / "loss.png").read_bytes()
    (copy / "cifar10-gap" / "loss.png").write_bytes(png_bytes[:16] + bytes(8) + png_bytes[24:])  # width 0
    out = tmp_path / "report.pdf"
    build.main(["--runs-dir", str(copy), "--out", str(out)])
    body = body_text(pdf_pages(out))
    assert all(h in body for h in HEADINGS)
    missing = body[body.find("Missing inputs"):]
    assert "cifar10-gap/sanity.json" in missing and "cifar10-gap/loss.png" in missing
    q8 = body[body.find(HEADINGS[7]):body.find(HEADINGS[8])]
    assert "inputs are unusable (KeyError" in q8


def test_a_wrong_typed_field_the_whole_report_reads_is_one_line(crafted, tmp_path):
    import shutil
    runs, _, _ = crafted
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    metrics = json.loads((copy / "fashionmnist-cnn" / "metrics.json").read_text())
    (copy / "fashionmnist-cnn" / "metrics.json").write_text(json.dumps({**metrics, "config": "x"}))
    with pytest.raises(cli.UserError, match=r"a results file under .* does not hold what this version writes "
                                            r"\(AttributeError.*run_all.py --runs-dir .* --force$"):
        build.main(["--runs-dir", str(copy), "--out", str(tmp_path / "report.pdf")])


def test_written_answers_follow_the_measured_numbers():
    ffn, cnn = fashion_metrics(0.90, 2_000_000, 0.60), fashion_metrics(0.93, 400_000, 0.75)
    answer = " ".join(build.answer_cnn_vs_ffn(ffn, cnn))
    assert "the CNN beats the feed-forward network: 93.00% against 90.00%" in answer
    assert "+3.00 points" in answer and "5.0 times fewer parameters" in answer and "on Shirt (+15.00 points)" in answer
    answer = " ".join(build.answer_cnn_vs_ffn(cnn, ffn))  # the other way round
    assert "does NOT beat" in answer and "did not show" in answer and "beats" not in answer

    d = {"datasets": [{"name": "cifar10", "title": "CIFAR-10", "test_images": 1000, "train_counts": [90, 110],
                       "exact_duplicates": 0, "near_duplicates": 10, "near_threshold_mad": 15.0}],
         "models": [{"network": "net", "near_images": 10, "rest_images": 990, "accuracy_near": 0.5,
                     "accuracy_rest": 0.8}]}
    text = " ".join(build.dataset_answer(d))
    assert "10 of the 1,000 test images (1.0%)" in text and "from 45.0% to 55.0%" in text
    assert "50.00% of the 10 near-copy test images correctly against 80.00%" in text
    assert "not the easy cases" in text and "flatter the test accuracy," not in text


def test_copy_accuracy_splits_planted_predictions():
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    pred = torch.tensor([0, 1, 9, 9, 9, 5])  # right on 0, 1, 5
    acc = dataset.copy_accuracy(pred, y, [0, 1, 2])
    assert acc == {"near_images": 3, "rest_images": 3, "accuracy_near": 2 / 3, "accuracy_rest": 1 / 3}
    assert dataset.copy_accuracy(pred, y, [])["accuracy_near"] is None


def test_report_figures_are_legible_at_print_size():
    cm = np.arange(100).reshape(10, 10)
    figs = [plots.plot_confusion(cm, CLASSES, "CNN (3,616 parameters)\ntest confusion matrix"),
            plots.plot_examples([np.zeros((1, 28, 28))] * 2, ["correct: test image #1241\npredicted: Shirt (12%)\n"
                                                              "true: T-shirt/top"] * 2, "Feed-forward network")]
    for fig in figs:
        assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN and min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    texts = [t.get_text() for t in figs[0].findobj(plots.matplotlib.text.Text)]
    assert "Predicted class" in texts and "True class" in texts and "Ankle boot" in texts
    for fig in figs:
        plots.plt.close(fig)


def test_image_width_follows_the_png_dpi(tmp_path):
    fig, _ = plots.plt.subplots(figsize=(3.0, 2.0))
    plots.save(fig, tmp_path / "small.png")  # bbox_inches="tight" trims a little
    assert 2.0 < typst_doc.print_width_in(tmp_path / "small.png") <= 3.0
    fig, _ = plots.plt.subplots(figsize=(12.0, 2.0))
    plots.save(fig, tmp_path / "wide.png")
    assert typst_doc.print_width_in(tmp_path / "wide.png") == typst_doc.TEXT_WIDTH_IN


# ---- what the items say: every parameter counted, the bias, one function per job -------------------------

def save_tiny_checkpoint(path, name="FFN", args=None):
    """A convlens checkpoint of a small model; returns the model."""
    import training
    args = args or {"in_shape": [1, 28, 28], "num_classes": 10, "hidden": [16], "dropout": 0.0, "batchnorm": True}
    model = training.build_model(name, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    training.save_checkpoint(path, {"model": {"name": name, "args": args}, "state_dict": model.state_dict()})
    return model


def test_question_3_counts_every_parameter_layer_by_layer(tmp_path):
    import training
    model = save_tiny_checkpoint(tmp_path / "fashionmnist-ffn" / "model.pt")
    inp = build.Inputs(tmp_path)
    rows = build.parameter_rows(inp, "fashionmnist-ffn/model.pt")
    assert [(name, n) for name, _, n in rows] == [("fc1", 784 * 16), ("bn1", 2 * 16), ("out", 16 * 10 + 10)]
    assert "no bias" in rows[0][1] and rows[1][1].startswith("batch norm of 16 units")
    total = training.count_parameters(model)
    text = build.parameter_sentence("feed-forward network", {"parameters": total}, rows)
    assert f"has {total:,} parameters" in text and "32 batch-norm parameters" in text
    assert f"{784 * 16 + 170:,} weights and biases" in text and "sum to" not in text
    assert "sum to 12,746, not 99" in build.parameter_sentence("x", {"parameters": 99}, rows)  # planted mismatch
    header, table, _ = build.parameter_table("feed-forward network", rows)
    assert header[0].startswith("Feed-forward network") and table[-1] == ["total", "", f"{total:,}"]
    cnn = save_tiny_checkpoint(tmp_path / "fashionmnist-cnn" / "model.pt", "CNN", {
        "in_channels": 1, "num_classes": 10, "image_size": 28, "channels": [4], "hidden": [8], "batchnorm": True})
    rows = build.parameter_rows(inp, "fashionmnist-cnn/model.pt")
    assert sum(n for *_, n in rows) == training.count_parameters(cnn) and rows[0][:2] == (
        "conv1_1", "conv 1 → 4 channels, 3x3: weights, no bias")
    assert build.parameter_rows(inp, "fashionmnist-xyz/model.pt") is None and not inp.missing  # the count alone
    (tmp_path / "fashionmnist-xyz").mkdir()
    (tmp_path / "fashionmnist-xyz" / "model.pt").write_text("not a checkpoint")
    assert build.parameter_rows(inp, "fashionmnist-xyz/model.pt") is None and "model.pt" in " ".join(inp.missing)


def test_problem_1_says_whether_the_bias_was_checked():
    case = {"err_Z": 1e-16, "err_dLdA": 1e-16, "err_dLdW": 1e-16, "passed": True, "case": "c"}
    cases = [{**case, "err_dLdb": 1e-16}, {**case, "err_dLdb": 1e-16}, {**case, "err_dLdb": None}]
    text = " ".join(build.mytorch_text({"cases": cases, "passed": 3, "total": 3, "tolerance": 1e-10}))
    assert "assignment's layer ignores the bias term" in text and "optional per-channel bias, off by default" in text
    assert "2 of the 3 cases check it with the bias and 1 without" in text
    assert "no case checks the bias" in build.bias_sentence(cases[2:])
    assert "all 2 cases check it with the bias" in build.bias_sentence(cases[:2])


def test_numbers_in_words_have_one_function_each(tmp_path):
    import words
    for twin in ("pct", "points", "plural", "read_text_or_none"):
        assert not hasattr(build, twin), twin  # report/words.py and Inputs.text are the only ones
    assert words.points(0.9 - 0.95) == "−5.00 points" and words.plural(3.0, "epoch") == "three epochs"
    (tmp_path / "mytorch").mkdir()
    (tmp_path / "mytorch" / "tester_output.txt").write_bytes(b"\xff\xfe not text")
    inp = build.Inputs(tmp_path)
    assert inp.text("mytorch/tester_output.txt") is None and "unreadable" in " ".join(inp.missing.values())


def test_question_7_explains_a_conv_pooled_before_its_activation():
    stage = lambda label: {"label": label}  # noqa: E731
    assert build.pooled_before_activation({"stages": [stage("conv 1 + max pool 1"), stage("batch norm + ReLU")]})
    assert not build.pooled_before_activation({"stages": [stage("conv 1 + batch norm + ReLU"), stage("max pool 1")]})
    assert not build.pooled_before_activation(None)


def test_feature_path_panels_name_the_conv_and_say_before_activation():
    import kernel_vis as kv
    from cnn import CNN
    torch.manual_seed(0)
    model = CNN(in_channels=1, num_classes=10, image_size=28, channels=[4, 8], hidden=[16], early_pool=True).eval()
    path = kv.feature_path(model, kv.trace(model, torch.randn(1, 1, 28, 28))[0])
    assert kv.stage_notes(path) == ["before activation", "after conv 1", "before activation", "after conv 2"]
    fig = kv.plot_feature_path(np.random.default_rng(0).random((1, 28, 28)), "test image #0", path, "net")
    titles = [ax.get_title().replace("\N{NO-BREAK SPACE}", " ") for ax in fig.axes if ax.get_images()]
    assert "conv 1 +\nmax pool 1\nbefore activation" in titles[1] or "before activation" in titles[1].split("\n")
    assert "after conv 1" in titles[2] and "after conv" not in titles[1]
    assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN and min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    plain = CNN(in_channels=1, num_classes=10, image_size=28, channels=[4], hidden=[16]).eval()
    assert kv.stage_notes(kv.feature_path(plain, kv.trace(plain, torch.randn(1, 1, 28, 28))[0])) == ["", ""]
    plots.plt.close(fig)


def test_pair_titles_keep_the_full_class_name_without_overlap():
    from types import SimpleNamespace
    names = ["T-shirt/top", "Ankle boot", "Pullover", "Sneaker", "automobile", "airplane", "truck", "horse"]
    pairs = [{"test": i, "train": i, "mad": 1.0 + i, "test_label": n, "train_label": n} for i, n in enumerate(names)]
    ds = SimpleNamespace(x_test=torch.zeros(8, 1, 28, 28, dtype=torch.uint8), x_train=torch.zeros(8, 1, 28, 28, dtype=torch.uint8))
    fig = dataset.plot_pairs([ds, ds], [{"title": "Fashion-MNIST", "shown_pairs": pairs[:4]},
                                        {"title": "CIFAR-10", "shown_pairs": pairs[4:]}])
    assert fig.get_size_inches()[0] <= plots.PRINT_WIDTH_IN and min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
    titled = [ax for ax in fig.axes if ax.get_title()]
    for name in names:  # each name whole (a line break may split it at a space, never a cut)
        assert sum(name in ax.get_title().replace("\n", " ") for ax in titled) == 2, name
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in titled[:8]]  # the test row, left to right
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    plots.plt.close(fig)


def test_loss_and_confusion_plots_print_in_half_the_text_width(tmp_path):
    history = {"step_loss": list(np.linspace(2.3, 0.4, 40)), "train_eval_images": 500,
               "epochs": [{"epoch": e, "train_eval_loss": 0.5 / e, "test_loss": 0.6 / e} for e in (1, 2)]}
    figs = {"loss": plots.plot_loss(history, "Fashion-MNIST Feed-forward network (1,865,738 parameters): loss"),
            "cm": plots.plot_confusion(np.full((10, 10), 999), CLASSES,
                                       "Feed-forward network (1,865,738 parameters)\ntest confusion matrix, "
                                       "accuracy 87.86% on 10,000 images")}
    for name, fig in figs.items():
        assert min(plots.font_sizes(fig)) >= plots.MIN_FONT_PT
        plots.save(fig, tmp_path / f"{name}.png")
        assert typst_doc.print_width_in(tmp_path / f"{name}.png") <= plots.HALF_WIDTH_IN, name  # two fit a row


# ---- one tiny end-to-end run of run_all.py ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_data_dir, tmp_path_factory):
    """run_all.py --limit 128 on the fake datasets (256 training, 128 test images each)."""
    folder = tmp_path_factory.mktemp("report")
    argv = ["--limit", "128", "--runs-dir", str(folder / "runs"), "--report", str(folder / "report.pdf"),
            "--data-dir", str(tiny_data_dir)]
    proc = subprocess.run([sys.executable, str(ROOT / "report/run_all.py"), *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return argv, folder / "runs", folder / "report.pdf", proc.stdout


def read(runs, rel):
    return json.loads((runs / rel).read_text())


def test_run_all_builds_the_report_with_every_item_and_the_runs_numbers(tiny):
    _, runs, report, stdout = tiny
    summary = read(runs, "run_all.json")
    assert summary["failures"] == [] and "report" in stdout
    pages = pdf_pages(report)
    body = body_text(pages)
    starts = [body.find(h) for h in HEADINGS]
    assert -1 not in starts and starts == sorted(starts)
    assert "TINY TEST RUN (--limit 128" in pages[0]
    for model in ("ffn", "cnn"):
        m = read(runs, f"fashionmnist-{model}/metrics.json")
        assert f"{m['parameters']:,} parameters" in body
    check = read(runs, "mytorch/check.json")
    assert f"{check['passed']} of {check['total']} pass" in body
    assert "Layer by layer" in body and "sum to" not in body  # Q3's per-layer counts add up to each total
    assert f"torch {importlib.metadata.version('torch')}" in body
    # the steps table: the report step, still running while its PDF is built, reads as this PDF
    assert "this PDF" in " ".join(pages) and "pending" not in " ".join(pages)
    # every draft module applies to what the real scripts wrote: no item says it lacks its text
    assert "No generated text" not in body and "could not use these inputs" not in body


def test_second_run_skips_every_step_and_keeps_the_pdf(tiny):
    argv, runs, report, _ = tiny
    before = report.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, str(ROOT / "report/run_all.py"), *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = read(runs, "run_all.json")
    assert {r["status"] for r in summary["steps"]} == {"skipped"}
    assert summary["total_seconds"] > 0 and summary["this_run_seconds"] == 0
    assert report.stat().st_mtime_ns == before


def test_a_checkpoint_written_after_its_run_reruns_it_and_what_reads_it(tiny):
    """E.g. `python fashionmnist.py --epochs 3` into the report's folder: its numbers are not the run's."""
    argv, runs, _, _ = tiny
    ckpt = runs / "fashionmnist-cnn" / "model.pt"
    stat = ckpt.stat()
    try:
        os.utime(ckpt, (time.time() + 60, time.time() + 60))  # newer than everything made from it
        args = run_all.parse_args(argv)
        rows = run_all.execute(run_all.plan(args), args.runs_dir, dry_run=True)
    finally:
        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = {r["step"]: r["reason"] for r in rows if r["status"] == "would run"}
    assert {"fashionmnist-cnn", "kernels-fashionmnist-cnn", "report"} <= set(again)
    assert again["fashionmnist-cnn"] == "model.pt was rewritten after this step ran"
    assert again["kernels-fashionmnist-cnn"] == "fashionmnist-cnn reruns"


def test_a_run_made_by_hand_in_a_steps_folder_is_moved_aside_not_overwritten(tmp_path):
    """E.g. the README's `python fashionmnist.py --model cnn` and then run_all.py into the same runs/."""
    runs = tmp_path / "runs"
    steps = {s.name: s for s in run_all.plan(run_all.parse_args(["--limit", "128", "--runs-dir", str(runs)]))}
    by_hand = runs / "fashionmnist-cnn"
    by_hand.mkdir(parents=True)
    (by_hand / "model.pt").write_text("a run of its own")
    (runs / "fashionmnist-ffn").mkdir()  # made by run_all: stamped, finished after its outputs
    for out in steps["fashionmnist-ffn"].outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
    stamp = run_all.stamp_path(runs, steps["fashionmnist-ffn"])
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"argv": steps["fashionmnist-ffn"].argv, "state": "done",
                                 "finished_at": time.time() + 1}))
    moved = run_all.keep_runs_made_by_hand(list(steps.values()), runs)
    assert moved == [(by_hand, runs / "fashionmnist-cnn.by-hand")]
    assert (runs / "fashionmnist-cnn.by-hand" / "model.pt").read_text() == "a run of its own"
    assert (runs / "fashionmnist-ffn").exists()
    by_hand.mkdir()
    (by_hand / "metrics.json").write_text("{}")  # a second one keeps the first
    assert run_all.keep_runs_made_by_hand(list(steps.values()), runs)[0][1].name == "fashionmnist-cnn.by-hand-2"


# ---- the step runner on made-up steps (each a short python -c) ------------------------------------------

COPY = "import sys, pathlib; pathlib.Path(sys.argv[2]).write_text(pathlib.Path(sys.argv[1]).read_text() + '+')"


def copy_step(name, src, dst, needs=()):
    return run_all.Step(name, ["-c", COPY, str(src), str(dst)], [dst], [src], list(needs))


def statuses(rows) -> dict:
    return {r["step"]: r["status"] for r in rows}


def test_skips_up_to_date_steps_and_reruns_touched_ones_and_their_dependents(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    steps = [copy_step("a", tmp_path / "in.txt", tmp_path / "a.txt"),
             copy_step("b", tmp_path / "a.txt", tmp_path / "b.txt", needs=["a"]),
             copy_step("c", tmp_path / "in.txt", tmp_path / "c.txt")]
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "ran", "b": "ran", "c": "ran"}
    assert (tmp_path / "b.txt").read_text() == "x++"
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    earlier = (tmp_path / "a.txt").stat().st_mtime - 10
    os.utime(tmp_path / "b.txt", (earlier, earlier))  # as if a.txt were edited after b ran: only b reads it
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "ran", "c": "skipped"}
    later = time.time() + 60
    os.utime(tmp_path / "c.txt", (later, later))  # another command wrote c's output after c ran
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "skipped", "c": "ran"}
    steps[2].argv.append("--changed")  # another command for the same outputs: not up to date
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "skipped", "c": "ran"}
    assert statuses(run_all.execute(steps, tmp_path, force=True)) == {"a": "ran", "b": "ran", "c": "ran"}


def test_a_failing_step_blocks_only_its_dependents_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    (tmp_path / "in.txt").write_text("x")
    steps = [run_all.Step("broken", ["-c", "import sys; print('boom'); print('error: no data here; put it there', "
                                           "file=sys.stderr); sys.exit(3)"], [tmp_path / "never.txt"]),
             copy_step("reads-broken", tmp_path / "never.txt", tmp_path / "d.txt", needs=["broken"]),
             copy_step("independent", tmp_path / "in.txt", tmp_path / "e.txt"),
             run_all.Step("report", ["-c", COPY, str(tmp_path / "in.txt"), str(tmp_path / "r.txt")],
                          [tmp_path / "r.txt"], after_all=True)]
    monkeypatch.setattr(run_all, "plan", lambda args: steps)
    monkeypatch.setattr(run_all, "check_data", lambda data_dir: None)  # these made-up steps read none
    with pytest.raises(SystemExit) as exit_:
        run_all.main(["--runs-dir", str(tmp_path / "runs")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "broken, reads-broken" in err and "exit status 3: no data here; put it there" in err  # its own error line
    assert len(err.strip().splitlines()) == 1
    summary = json.loads((tmp_path / "runs" / "run_all.json").read_text())
    assert statuses(summary["steps"]) == {"broken": "failed", "reads-broken": "blocked", "independent": "ran",
                                          "report": "ran"}
    assert (tmp_path / "e.txt").exists() and (tmp_path / "r.txt").exists() and not (tmp_path / "d.txt").exists()
    assert "boom" in (tmp_path / "runs" / "logs" / "broken.log").read_text()
    stamp = json.loads((tmp_path / "runs" / "logs" / "broken.json").read_text())
    assert stamp["state"] == "failed"  # so the next run tries it again


def test_an_interrupted_step_resumes_and_a_changed_one_starts_over():
    step = run_all.Step("train", ["fashionmnist.py", "--epochs", "3"], [], resumable=True)
    assert run_all.command(step, {"argv": step.argv, "code": run_all.step_code(step), "state": "running"})[-1] == "--resume"
    assert "--resume" not in run_all.command(step, {"argv": ["fashionmnist.py", "--epochs", "12"], "state": "running"})
    assert "--resume" not in run_all.command(step, {"argv": step.argv, "state": "failed"})
    assert run_all.why_run(step, {"argv": step.argv, "code": run_all.step_code(step), "state": "running"},
                           set(), [], False) == "last attempt running"


# ---- bad arguments ------------------------------------------------------------------------------------

@pytest.mark.parametrize("script, argv, message", [
    ("build", ["--runs-dir", "no/such/folder"], "--runs-dir no/such/folder is not a folder"),
    ("build", ["--runs-dir", ".", "--out", "report.txt"], "must be a .pdf file name"),
    ("run_all", ["--limit", "0"], "expected a number >= 1"),
    ("run_all", ["--report", "report.txt"], "must be a .pdf file name"),
    ("run_all", ["--data-dir", "BROKEN", "--runs-dir", "RUNS", "--limit", "8"], "the data is not ready: "),
])
def test_bad_arguments_are_one_line_errors(script, argv, message, capsys, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "fashion_mnist.npz").write_text("not a zip")  # found, so no download is tried
    argv = [{"BROKEN": str(tmp_path / "broken"), "RUNS": str(tmp_path / "runs")}.get(a, a) for a in argv]
    module = {"build": build, "run_all": run_all}[script]
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: module.main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0] and err[0].count("error") == 1


def test_a_float_with_nothing_after_it_in_its_item_is_set_in_place(tmp_path):
    """A floating figure issued just before a heading could land below that heading on the next
    page: the heading sets such trailing floats in place; one with text after it keeps floating."""
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(2, 1))
    plots.save(fig, tmp_path / "f.png")
    doc = typst_doc.Doc(tmp_path)
    doc.heading(2, "Problem 4")
    doc.para("text")
    doc.figure(tmp_path / "f.png", "kept floating", "fig-a")
    doc.para("more text after it")
    doc.figure(tmp_path / "f.png", "trailing", "fig-b")
    doc.figures_row([(tmp_path / "f.png", "row 1", "fig-c"), (tmp_path / "f.png", "row 2", "fig-d")])
    doc.heading(2, "Problem 5")
    source = doc.source()
    a, b = source.split("<fig-a>")[0].rsplit("#figure(", 1)[1], source.split("<fig-b>")[0].rsplit("#figure(", 1)[1]
    assert "placement: auto" in a and "placement: auto" not in b
    assert "#place(auto, float: true" not in source and "\n#grid(columns: (" in source
    assert source.index("<fig-d>") < source.index("Problem 5")


def test_answers_not_in_utf8_are_a_one_line_error(crafted, tmp_path):
    runs, _, _ = crafted
    answers = tmp_path / "answers.md"
    answers.write_bytes("name: José\n".encode("latin-1"))  # an editor's Latin-1 save
    with pytest.raises(cli.UserError, match="is not UTF-8 text; .* save it as UTF-8"):
        build.main(["--runs-dir", str(runs), "--out", str(tmp_path / "report.pdf"), "--answers", str(answers)])


def test_problem_6_scores_copies_by_the_rule_the_run_reports(tmp_path):
    """The near-copy accuracy of a network whose run reports flip-averaged predictions is
    flip-averaged too, so Problem 6's numbers read against the run's test accuracy."""
    import types
    from training import build_model, predict_flip, save_checkpoint
    report_dataset = load("dataset")
    torch.manual_seed(0)
    spec = {"name": "CNN", "args": dict(in_channels=1, num_classes=10, image_size=28, channels=[4], hidden=[8])}
    model = build_model(spec["name"], spec["args"])
    x, y = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (40,))
    ds = types.SimpleNamespace(name="fashion_mnist", x_test=x, y_test=y)
    results = {"fashion_mnist": {"copy_indices": list(range(10))}}
    for tta in (False, True):
        path = tmp_path / f"tta{tta}.pt"
        save_checkpoint(path, {"model": spec, "state_dict": model.state_dict(), "dataset": "fashion_mnist",
                               "classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.3],
                               "metrics": {"tta": tta}})
        scored = report_dataset.score_checkpoint(path, {"fashion_mnist": ds}, results)
        plain, flipped = predict_flip(model.eval(), x, [0.3], [0.3], torch.device("cpu"))
        pred = (flipped if tta else plain).argmax(1)
        assert scored["tta"] == tta and not torch.equal(plain.argmax(1), flipped.argmax(1))  # the rules differ here
        assert scored["accuracy_rest"] == pytest.approx((pred[10:] == y[10:]).float().mean().item())
        assert scored["accuracy_near"] == pytest.approx((pred[:10] == y[:10]).float().mean().item())
