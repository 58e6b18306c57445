"""Gather what is in runs/ into the write-up of both assignments, in their own numbering, typeset with Typst.

    python report/run_all.py --preset quick                   # makes every input, then calls this
    $EDITOR report/answers.md                                 # optional: name, declarations, your own words
    python report/build.py                                    # runs/ -> report/report.typ and report/report.pdf
    python report/build.py --runs-dir /tmp/runs --out /tmp/report.pdf --author "Ada Lovelace"

Part I answers the Fashion-MNIST assignment (questions 1-9), Part II Homework 2 (problems 1-6, every
lettered item under its own heading, e.g. "2(a)(c) Impact of batch normalization"); the contents
page maps each item to its page; appendices hold the full layer tables, all-channel grids, the
run's settings and hardware, and any missing inputs with the command that makes them.

Text per item: the student's own words from answers.md (next to the PDF unless --answers; created
with guidance when missing, never overwritten), else a draft generated from the run's numbers by the
draft modules (report/draft_*.py) or this file; the PDF says which, item by item. Reads only the
files the scripts wrote (json, png, txt, csv); it never trains. A missing or unusable input makes
its item say so (and which command makes it) instead of failing. Writes <out>.typ (readable Typst
source, figures referenced by relative path) and compiles it to <out> atomically.
"""
import argparse
import csv
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the convlens modules live at the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))
import answers as answers_md  # noqa: E402
import cli  # noqa: E402
import files  # noqa: E402
import run_all  # noqa: E402  (the commands that make each input)
import typst_doc  # noqa: E402
import words  # noqa: E402  (report/words.py)
from cifar10 import DEFAULTS as CIFAR_DEFAULTS, NAMES as ARCH_NAMES  # noqa: E402
from typst_doc import Doc, escape, ref  # noqa: E402

REPORT_DIR = Path(__file__).resolve().parent
# Published accuracies run 2-3 points higher on lossless CIFAR-10 (shared/data/README.md).
JPEG_COPY_BYTES = 170_969_215  # size of the JPEG-degraded offline cifar10.npz
NETWORKS = {"ffn": "feed-forward network", "cnn": "convolutional network (CNN)"}
PART_I, PART_II = "Part I: Fashion-MNIST", "Part II: Homework 2 (CIFAR-10, MyTorch, CAM, guided backpropagation)"


def item_list() -> list:
    """(key, heading, level, guidance) of every assignment item in the assignments' order; level 2 is
    a question or problem, 3 a part of problem 2 or 3, 4 a lettered item of problem 2."""
    items = [("Q1", "Question 1. A correctly and a wrongly classified test image", 2, "For each network."),
             ("Q2", "Question 2. Training loss", 2, "For each network."),
             ("Q3", "Question 3. Number of parameters", 2, "For each network."),
             ("Q4", "Question 4. Confusion matrices", 2, "For each network, on the test data."),
             ("Q5", "Question 5. Kernels of the first convolutional layer", 2, "After training."),
             ("Q6", "Question 6. Features extracted by the first-layer kernels", 2, "The sample image."),
             ("Q7", "Question 7. Feature maps through the layers", 2, "The sample image through every layer."),
             ("Q8", "Question 8. Why does the CNN perform better?", 2, "Conceptual question."),
             ("Q9", "Question 9. How do the features evolve through the layers?", 2, "Conceptual question."),
             ("P1", "Problem 1. Conv2D layer for MyTorch", 2, "The output of Conv2DTester.ipynb is shown.")]
    for part, arch in (("a", "dense"), ("b", "gap")):
        for letter, title in (("a", "Final network architecture"), ("b", "How the architecture was chosen"),
                              ("c", "Impact of batch normalization"), ("d", "Impact of dropout"),
                              ("e", "Training and validation loss"), ("f", "Final validation accuracy")):
            items.append((f"2({part})({letter})", title, 4, f"Problem 2({part}), the {ARCH_NAMES[arch]}."))
    items += [("3(a)", "Feature maps", 3, "Problem 3(a), both networks."),
              ("3(b)", "Learned filters, and whether they resemble Gabor filters", 3, "Problem 3(b), both networks."),
              ("P4", "Problem 4. Class activation maps", 2, "Interpret the maps of both networks."),
              ("P5", "Problem 5. Guided backpropagation", 2, "Interpret the maps of both networks."),
              ("P6", "Problem 6. Reflection on datasets", 2,
               "Your own (1) technical lesson, (2) harm and how to overcome it, (3) question.")]
    return items


ITEMS = item_list()
ITEM_KEYS = [k for k, *_ in ITEMS]


def heading_text(key: str, title: str) -> str:
    """The printed heading: 'Question 1. ...' as is, lettered items prefixed with their key."""
    return title if key[0] in "QP" else f"{key} {title}"


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the folder run_all.py (or the scripts) wrote")
    p.add_argument("--out", type=Path, default=Path("report/report.pdf"),
                   help="the PDF to write; its Typst source goes next to it (.typ)")
    p.add_argument("--answers", type=Path, help="your own words and title-page fields (default: answers.md next to --out)")
    p.add_argument("--author", help="your name on the title page (overrides the name in answers.md)")
    args = p.parse_args(argv)
    if not args.runs_dir.is_dir():
        raise cli.UserError(f"--runs-dir {args.runs_dir} is not a folder; make the runs with "
                            "python report/run_all.py --preset quick, or pass the folder that holds them")
    if args.out.suffix.lower() != ".pdf" or args.out.is_dir():
        raise cli.UserError(f"--out {args.out} must be a .pdf file name")
    args.answers = args.answers or args.out.parent / "answers.md"
    if args.answers.is_dir():
        raise cli.UserError(f"--answers {args.answers} is a folder; pass a .md file name")
    return args


# ---- collecting the inputs -------------------------------------------------------------------------

class Inputs:
    """Reads files under the runs folder and remembers each one that is missing, with the command
    that makes it (taken from run_all.py's plan, so the two never disagree)."""

    def __init__(self, runs: Path):
        self.runs, self.missing = runs, {}
        plan_args = argparse.Namespace(preset="full", limit=None, runs_dir=runs, data_dir=cli.DEFAULT_DATA_DIR,
                                       report=Path("report/report.pdf"), seed=0, author=None)
        self.makers = {out: step for step in run_all.plan(plan_args) for out in step.outputs}

    def path(self, rel) -> Path | None:
        p = self.runs / rel
        if not p.exists():
            self.missing.setdefault(str(p), self.command(p))
            return None
        if p.suffix == ".png" and typst_doc.png_info(p) is None:
            return self.unreadable(p, "not a PNG image")
        return p

    def json(self, rel) -> dict | None:
        p = self.path(rel)
        if p is None:
            return None
        try:
            value = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            return self.unreadable(p, str(err))
        # every file the report reads holds a JSON object; anything else is from another program
        return value if isinstance(value, dict) and value else self.unreadable(p, "not a JSON object with fields")

    def optional_json(self, rel) -> dict | None:
        """A file the report uses when present (no entry on the missing page)."""
        value = files.read_json_or_none(self.runs / rel, warn=False)
        return value if isinstance(value, dict) and value else None

    def unreadable(self, p: Path, why: str):
        self.missing[str(p)] = f"unreadable ({why}); rerun: {self.command(p)}"
        return None

    def text(self, rel) -> str | None:
        p = self.path(rel)
        if p is None:
            return None
        try:
            return p.read_text()
        except (OSError, UnicodeDecodeError) as err:
            return self.unreadable(p, f"not readable text: {type(err).__name__}")

    def csv_rows(self, rel) -> list | None:
        """history.csv as [{column: float or text}], or None."""
        p = self.runs / rel
        if not p.exists():
            return None
        try:
            with open(p, newline="") as f:
                return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, csv.Error):
            return None

    def command(self, p: Path) -> str:
        step = self.makers.get(Path(p))
        if step is None:
            return "python report/run_all.py --preset quick"
        shown, skip = [], False
        for arg in step.argv:  # relative script paths, and no --data-dir (the default finds the data)
            if skip or arg == "--data-dir":
                skip = not skip
                continue
            shown.append(os.path.relpath(arg, run_all.ROOT) if arg.startswith(str(run_all.ROOT)) else arg)
        return "python " + " ".join(shown)

    def why_missing(self, rel) -> str:
        return f"needs {self.runs / rel}, made by: {self.command(self.runs / rel)}"


def number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def collect(runs: Path) -> tuple[dict, Inputs]:
    """(every number and figure path the report uses, the Inputs with what is missing)."""
    inp = Inputs(runs)
    d = {"summary": inp.optional_json("run_all.json"), "env": environment()}
    d["fashion"] = {m: {"metrics": inp.json(f"fashionmnist-{m}/metrics.json"),
                        "layers": parameter_rows(inp, f"fashionmnist-{m}/model.pt"),
                        **{f: inp.path(f"fashionmnist-{m}/{f}.png") for f in ("examples", "loss", "confusion_matrix")}}
                    for m in ("ffn", "cnn")}
    folder = "fashionmnist-cnn/kernels"
    d["fashion_kernels"] = {"gabor": inp.json(f"{folder}/gabor.json"),
                            "feature_stats": inp.json(f"{folder}/feature_stats.json"),
                            **{f: inp.path(f"{folder}/{f}.png") for f in ("kernels", "filtered", "feature_maps")}}
    d["mytorch"] = {"check": inp.json("mytorch/check.json"),
                    "tester": inp.text("mytorch/tester_output.txt")}
    d["cifar"] = {a: cifar_run(inp, a) for a in ("dense", "gap")}
    d["dataset"] = {"json": inp.json("dataset/dataset.json"), "balance": inp.path("dataset/class_balance.png"),
                    "pairs": inp.path("dataset/near_duplicates.png")}
    return d, inp


def parameter_rows(inp, rel) -> list | None:
    """[(layer, what its parameters are, count)] of every layer that has parameters, in forward
    order, for the network a checkpoint saved: the model is rebuilt from the checkpoint's recorded
    architecture on torch's meta device (shapes only), so every parameter is counted, batch norm's
    scales and shifts included; None if there is none (the count alone is then given: the training
    run's metrics.json holds it), or if it is unreadable (said on the missing page)."""
    path = inp.runs / rel
    if not path.is_file():
        return None
    import torch
    import training
    try:
        ckpt = training.read_checkpoint(path)
        with torch.device("meta"):
            model = training.MODELS[ckpt["model"]["name"]](**ckpt["model"]["args"])
    except (cli.UserError, TypeError, ValueError) as err:
        return inp.unreadable(path, str(err).split(";")[0][:120])
    rows = []
    for name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        if params:
            rows.append((name.rpartition(".")[2], layer_holds(module, params), sum(p.numel() for p in params.values())))
    return rows


def layer_holds(module, params: dict) -> str:
    """What a layer's parameters are, in plain words with their shapes."""
    import torch.nn as nn

    bias = f" + {params['bias'].numel()} biases" if "bias" in params else ", no bias"
    if isinstance(module, nn.Linear):
        return f"fully connected {module.in_features} → {module.out_features}: weights{bias}"
    if isinstance(module, nn.Conv2d):
        k = "x".join(map(str, module.kernel_size))
        return f"conv {module.in_channels} → {module.out_channels} channels, {k}: weights{bias}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        unit = "units" if isinstance(module, nn.BatchNorm1d) else "channels"
        return f"batch norm of {module.num_features} {unit}: a scale and a shift each"
    return ", ".join(f"{k} {'x'.join(map(str, p.shape))}" for k, p in params.items())


def cifar_run(inp, arch) -> dict:
    folder, method = f"cifar10-{arch}", ("cam" if arch == "gap" else "gradcam")
    return {"metrics": inp.json(f"{folder}/metrics.json"),
            "architecture": inp.text(f"{folder}/architecture.txt"),
            "history": inp.csv_rows(f"{folder}/history.csv"),
            "loss": inp.path(f"{folder}/loss.png"),
            "ablation": inp.json(f"{folder}-ablation/ablation.json"),
            "ablation_png": inp.path(f"{folder}-ablation/ablation.png"),
            "kernels": kernel_grids(inp, f"{folder}/kernels"),
            "method": method, "cam": inp.json(f"{folder}/{method}.json"), "cam_png": inp.path(f"{folder}/{method}.png"),
            "gbp": inp.json(f"{folder}/guided_backprop.json"), "gbp_png": inp.path(f"{folder}/guided_backprop.png"),
            "sanity": inp.json(f"{folder}/sanity.json"), "sanity_png": inp.path(f"{folder}/sanity.png"),
            "stats": inp.json(f"{folder}/saliency_stats.json")}


def kernel_grids(inp, folder) -> dict:
    """gabor.json and, per conv layer it lists (first, middle, last), the feature-map and filter
    grids: the body shows <kind>_<layer>.png (kernel_vis draws at most 32 channels there), the
    appendix <kind>_<layer>_all.png (every channel), which kernel_vis writes for wider layers."""
    gabor = inp.json(f"{folder}/gabor.json")
    out = {"gabor": gabor, "gabor_png": inp.path(f"{folder}/gabor.png"), "layers": []}
    for layer in (gabor or {}).get("layers", []):
        row = {"layer": layer}
        for kind in ("feature_maps", "filters"):
            stem = f"{kind}_{layer.replace('.', '-')}"
            row[kind] = inp.path(f"{folder}/{stem}.png")
            full = inp.runs / folder / f"{stem}_all.png"
            row[kind + "_appendix"] = [full] if full.is_file() else []
        out["layers"].append(row)
    return out


def environment() -> dict:
    """The machine building the report and the installed versions."""
    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return {"cpu": files.cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb(), "gpu": gpu_names(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "torchvision", "numpy", "matplotlib", "scipy", "seaborn",
                                             "typst")}}


def memory_gb() -> float | None:
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        return round(kb / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def gpu_names() -> str:
    if not shutil.which("nvidia-smi"):
        return "none found"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi did not answer"
    return ", ".join(out.splitlines()) or "none found"


# ---- numbers to words -------------------------------------------------------------------------------

def fmt_time(seconds: float) -> str:
    return run_all.fmt_time(seconds) + (" (h:mm:ss)" if seconds >= 3600 else " (m:ss)")


NOTICEABLE = 0.5      # accuracy difference (points) below which one seed cannot tell two runs apart


def compare(a: float, b: float, margin: float = NOTICEABLE / 100) -> str:
    """'higher', 'lower' or 'level' for a against b, within `margin`."""
    return "level" if abs(a - b) < margin else ("higher" if a > b else "lower")


def tiny_run(d) -> int | None:
    """--limit of a tiny test run (its numbers mean nothing), or None."""
    if d["summary"] and d["summary"].get("limit"):
        return d["summary"]["limit"]
    m = d["fashion"]["cnn"]["metrics"] or d["fashion"]["ffn"]["metrics"] or {}
    return m.get("config", {}).get("limit")


def tta_note(met: dict) -> str:
    """The words for a run that predicts from each image and its mirror image (fashionmnist.py --tta)."""
    if not met.get("tta"):
        return ""
    return (f" (each prediction the mean of the network's outputs for the image and its mirror image; "
            f"{words.pct(met['test_accuracy_plain'])} from the image alone)")


def training_conditions(done: dict) -> str:
    """How the training batches differ from the test images, from each run's settings."""
    said = []
    for m, met in done.items():
        c = met["config"]
        images = ([f"shifted by up to {words.plural(c['crop'], 'pixel')}"] if c.get("crop") else []) + \
                 (["mirrored at random"] if c.get("flip") else [])
        rest = (["with dropout on"] if c.get("dropout") else []) + (["with label smoothing"] if c.get("label_smoothing") else [])
        parts = ([f"on images {' and '.join(images)}"] if images else []) + rest
        said.append(f"the {NETWORKS[m]} " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1
                                              else parts[0] if parts else "on the plain images"))
    return "; ".join(said) or "on augmented images, with dropout and label smoothing"


def answer_cnn_vs_ffn(ffn: dict, cnn: dict) -> list:
    """Question 8, from the two runs' accuracies, parameter counts and per-class accuracies."""
    a_f, a_c, p_f, p_c = ffn["test_accuracy"], cnn["test_accuracy"], ffn["parameters"], cnn["parameters"]
    verdict = compare(a_c, a_f)
    size = (f"{p_f / p_c:.1f} times fewer parameters ({p_c:,} against {p_f:,})" if p_c < p_f
            else f"{p_c / p_f:.1f} times as many parameters ({p_c:,} against {p_f:,})")
    opening = {"higher": f"In this run the CNN beats the feed-forward network: {words.pct(a_c)} against {words.pct(a_f)} test "
                         f"accuracy ({words.points(a_c - a_f)}), with {size}.",
               "level": f"In this run the two networks are level: CNN {words.pct(a_c)}, feed-forward network {words.pct(a_f)} "
                        f"({words.points(a_c - a_f)}), the CNN with {size}.",
               "lower": f"In this run the CNN does NOT beat the feed-forward network: {words.pct(a_c)} against {words.pct(a_f)} "
                        f"({words.points(a_c - a_f)}), with {size}."}[verdict]
    gains = {c: cnn["per_class_accuracy"][c] - ffn["per_class_accuracy"].get(c, 0) for c in cnn["per_class_accuracy"]}
    best, hardest = max(gains, key=gains.get), min(cnn["per_class_accuracy"], key=cnn["per_class_accuracy"].get)
    detail = (f"The largest per-class difference is on {best} ({words.points(cnn['per_class_accuracy'][best] - ffn['per_class_accuracy'][best])}); "
              f"the CNN's hardest class is {hardest} ({words.pct(cnn['per_class_accuracy'][hardest])} correct).")
    why = ("Why a CNN suits images: a convolutional layer slides the same small kernel over every position "
           "(weight sharing), so a local pattern such as an edge, a texture or a collar is learned once and found "
           "anywhere, with few parameters; pooling makes the result tolerant to small shifts; stacked layers see "
           "ever larger patches, so later layers combine parts into shapes, and the fully-connected layers at the "
           "end classify those features instead of raw pixels. A fully-connected network treats the 784 pixels as "
           "an unordered list: it must learn each pattern separately at each position and has no notion of "
           "neighbouring pixels.")
    if verdict == "higher":
        why += (" These are the usual explanations of the advantage measured here"
                + (", and of why the CNN gets it with fewer parameters" if p_c < p_f else
                   f" (the CNN also has {p_c / p_f:.1f} times the parameters)")
                + "; this run does not test them one by one.")
    else:
        why += (" Here that advantage did not show in the test accuracy; with "
                f"{cnn['train_images']:,} training images and {words.plural(cnn['config']['epochs'], 'epoch')} the "
                "training budget, not the architecture, probably decides (see the loss curves of question 2).")
    return [opening + " " + detail, why]


def dataset_answer(d: dict) -> list:
    """Problem 6 draft: (1) a technical lesson from this run's dataset measurements set against
    published findings, (2) a harm and its mitigation, (3) a question. Every number is measured
    (dataset.json) or cited."""
    rows = {r["name"]: r for r in d["datasets"]}
    facts = []
    for r in d["datasets"]:
        near = r["exact_duplicates"] + r["near_duplicates"]
        counts = r["train_counts"]
        balance = ("every class has exactly the same number of training images" if max(counts) == min(counts) else
                   f"class shares of the training set range from {100 * min(counts) / sum(counts):.1f}% to "
                   f"{100 * max(counts) / sum(counts):.1f}%")
        facts.append(f"{r['title']}: {near:,} of the {r['test_images']:,} test images ({100 * near / max(r['test_images'], 1):.1f}%) "
                     f"are exact or near copies of a training image ({r['exact_duplicates']} exact; near: a mean "
                     f"absolute pixel difference of at most {r['near_threshold_mad']:g} of 255), and {balance}.")
    models = []
    for m in d.get("models", []):
        if m.get("near_images") and m.get("rest_images"):
            gap = m["accuracy_near"] - m["accuracy_rest"]
            rule = " (flip-averaged, as its test accuracy)" if m.get("tta") else ""
            models.append(f"the {m['network']} classifies {words.pct(m['accuracy_near'])} of the {m['near_images']:,} "
                          f"near-copy test images correctly{rule} against {words.pct(m['accuracy_rest'])} of the other "
                          f"{m['rest_images']:,} ({words.points(m['accuracy_near'] - m['accuracy_rest'])}"
                          + (", so the copies flatter the test accuracy" if gap > 0.02 else
                             ", so the copies do not flatter the test accuracy noticeably" if gap > -0.02 else
                             ", so here the copies are not the easy cases") + ")")
    if not models and any(m.get("near_images") == 0 for m in d.get("models", [])):
        models.append(f"none of the {d['models'][0]['rest_images']:,} test images scored is a copy, so there is "
                      "nothing to compare")
    lesson = ("(1) A technical lesson: a test set measures generalization only if it is new to the model, and a "
              "benchmark's test set stops being new once a field has tuned its models on it for years (Hardt and "
              "Recht 2022, ch. 8, on datasets as benchmarks). "
              "In this project's data, " + " ".join(facts)
              + (" Measured on the trained networks: " + "; ".join(models) + "." if models else
                 " (The trained networks' accuracy on these copies against the rest is not in this run's dataset.json; "
                 "run report/dataset.py with --checkpoints to add it.)")
              + " Barz and Denzler (2020) found near copies for 3.3% of the CIFAR-10 test images. The larger risk is "
              "reuse: on a new CIFAR-10 test set collected the same way, Recht et al. (2018) saw published models lose "
              "4 to 10 points, because years of design choices had been tuned on the one public test set.")
    cifar = rows.get("cifar10")
    if cifar and d.get("jpeg_copy"):
        lesson += (" The CIFAR-10 copy used here was re-encoded as JPEG (lossy), which costs about 2-3 points against "
                   "published results: numbers compare only on the same copy of the data.")
    harm = ("(2) A harm and how to overcome it: CIFAR-10 was drawn from the 80 Million Tiny Images collection, "
            "gathered automatically from web searches; its authors withdrew it in 2020, after Birhane and Prabhu "
            "(preprint 2020, published 2021) showed offensive labels and images of people taken without their "
            "consent, a harm of data collection that Hardt and Recht (2022, ch. 8) discuss. A remedy is "
            "documentation before use: a datasheet (Gebru et al. 2021) records why and how a dataset was collected, "
            "from whom, with what consent, and what it must not be used for.")
    question = ("(3) A question: after more than a decade of reuse of CIFAR-10's test set (published in 2009), how "
                "much of a reported improvement is real progress, and how often should a field collect a fresh test "
                "set to find out?")
    return [lesson, harm, question]


# ---- draft modules (report/draft_*.py, owned by the workers who compute their numbers) -------------------

_DRAFTS = {}


def draft_module(name: str):
    """report/<name>.py as a module, or None if it is not there (or fails to import)."""
    if name not in _DRAFTS:
        path = REPORT_DIR / f"{name}.py"
        module = None
        if path.exists():
            try:
                spec = importlib.util.spec_from_file_location(f"report_{name}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except Exception as err:  # noqa: BLE001 (any import error: the item says so, the report is built)
                print(f"warning: report/{name}.py does not import ({type(err).__name__}: {err})", file=sys.stderr)
                module = None
        _DRAFTS[name] = module
    return _DRAFTS[name]


class Draft:
    """Generated text of one item, or why there is none."""

    def __init__(self, paragraphs=None, why=None):
        self.paragraphs, self.why = paragraphs or [], why


def call_draft(module: str, func: str, *args, needs: dict | None = None, inp=None, **kwargs) -> Draft:
    """module.func(*args) -> paragraphs; if an input in `needs` ({relative path: value}) is None,
    or the module is absent, or it fails on these inputs, a Draft saying why."""
    for rel, value in (needs or {}).items():
        if value is None:
            return Draft(why=inp.why_missing(rel) if inp else f"needs {rel}")
    mod = draft_module(module)
    if mod is None or not hasattr(mod, func):
        return Draft(why=f"the text generator report/{module}.py ({func}) is not installed")
    try:
        out = getattr(mod, func)(*args, **kwargs)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, ZeroDivisionError, StopIteration) as err:
        return Draft(why=f"report/{module}.py could not use these inputs ({type(err).__name__}: {err}); "
                         "they may come from an older run: python report/run_all.py --force")
    return Draft([str(p) for p in out or []])


def own_draft(build, *args, needs: dict | None = None, inp=None) -> Draft:
    """A draft written by this file, with the same missing-input handling."""
    for rel, value in (needs or {}).items():
        if value is None:
            return Draft(why=inp.why_missing(rel) if inp else f"needs {rel}")
    try:
        return Draft(build(*args))
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, ZeroDivisionError) as err:
        return Draft(why=f"its inputs are unusable ({type(err).__name__}: {err}); files from an older or foreign "
                         "run: python report/run_all.py --force")


# ---- the document -----------------------------------------------------------------------------------

class Report:
    """Writes the items in order into a Doc; knows the student's answers and who wrote what."""

    def __init__(self, doc: Doc, d: dict, inp: Inputs, own: dict, answers: str = "report/answers.md"):
        self.doc, self.d, self.inp, self.own = doc, d, inp, own
        self.answers = answers      # the answers file as the student would type it
        self.titles = {k: (t, lvl) for k, t, lvl, _ in ITEMS}
        self.provenance = {}       # item key -> "student" | "draft" | "none"
        self.appendix_figures = []  # (path, caption, label)
        self.appendix_trials = {}   # arch -> paragraphs of design trials, too long for the body

    def item(self, key: str, draft: Draft):
        """The item's heading and its text: the student's, else the draft, else why there is none."""
        title, level = self.titles[key]
        self.doc.heading(level, heading_text(key, title), label=label(key))
        if key in self.own:
            self.provenance[key] = "student"
            self.doc.note(f"Written by the student ({self.answers}).")
            self.doc.para(*answers_md.paragraphs(self.own[key]))
        elif draft.paragraphs:
            self.provenance[key] = "draft"
            self.doc.note(f"Draft generated from this run's numbers; to replace it with your own words, write under "
                          f"'## {key}' in {self.answers}.")
            self.doc.para(*draft.paragraphs)
        else:
            self.provenance[key] = "none"
            self.doc.note(f"No generated text: {draft.why}. Write your own under '## {key}' in {self.answers}.")

    def figure(self, path, caption, lbl):
        if path is not None:
            self.doc.figure(path, caption, lbl)

    def figures_row(self, figures: list, floating: bool = True):
        """[(path, caption, label)] side by side where they fit (Doc.figures_row); None paths skipped."""
        figures = [f for f in figures if f[0] is not None]
        if figures:
            self.doc.figures_row(figures, floating=floating)

    def missing_figure(self, what: str, rel: str):
        self.doc.note(f"Figure missing ({what}): {self.inp.why_missing(rel)}.")


def label(key: str) -> str:
    """A Typst label for an item key: 2(a)(c) -> item-2a-c."""
    return "item-" + key.replace(")(", "-").replace("(", "").replace(")", "")


def title_page(doc: Doc, d: dict, fields: dict, author: str | None, answers: str = "answers.md"):
    name = author or fields.get("name")
    doc.raw("#align(center)[#v(1.2in)#text(size: 22pt, weight: \"bold\")[Image classification with neural "
            "networks]#v(6pt)#text(size: 13pt)[Fashion-MNIST classification and kernels; Homework 2: CNNs on "
            "CIFAR-10, MyTorch Conv2D, class activation maps, guided backpropagation]]")
    rows = [("Name", name or f"(not given: run build.py --author \"Your Name\" or fill in {answers})"),
            ("Course", fields.get("course") or f"(not given: fill in {answers})"),
            ("Collaborators", fields.get("collaborators") or f"(not declared: fill in {answers})"),
            ("Generative AI use", fields.get("generative-ai") or f"(not declared: fill in {answers})"),
            ("Built", time.strftime("%Y-%m-%d %H:%M") + f" from the runs in {d.get('runs_dir', 'runs/')}")]
    doc.raw("#v(0.4in)#align(center)[#table(columns: (1.6in, 4in), align: left, stroke: none, inset: 5pt, "
            + ", ".join(f"[*{escape(k)}*], [{escape(v)}]" for k, v in rows) + ")]")
    limit = tiny_run(d)
    if limit:
        doc.raw("#v(0.2in)#align(center)[#block(width: 5.5in, stroke: 1pt + red, inset: 8pt)[" + escape(
            f"TINY TEST RUN (--limit {limit}): {limit} images, one epoch, very small networks. Its numbers say "
            "nothing about the methods; run python report/run_all.py --preset quick (or full) for real ones.") + "]]")
    doc.raw("#v(0.3in)#text(size: 9pt)[" + escape(
        "How to read this report: each question and lettered item of the two assignments has its own heading, "
        "numbered as in the assignment; the contents on the next page give its page. Under each heading a gray "
        "line says whether the text was written by the student or is a draft generated from this run's measured "
        "numbers. Long material (full layer tables, every channel of each layer, the run's settings and "
        "hardware) is in the appendices.") + "]")
    doc.raw("#pagebreak()\n#outline(title: [Contents], depth: 4, indent: 1.2em)")


def train_seconds(met: dict) -> float | None:
    """A Fashion-MNIST run's training seconds (runs written by earlier versions of fashionmnist.py
    kept them under wall_seconds, which is now the whole process)."""
    return met.get("train_seconds", met.get("wall_seconds"))


def part_one(r: Report):
    d, doc, inp = r.d, r.doc, r.inp
    doc.heading(1, PART_I, label="part-1")
    f = d["fashion"]
    ffn, cnn = f["ffn"]["metrics"], f["cnn"]["metrics"]
    needed = {"parameters", "test_accuracy", "config", "train_images"}
    done = {m: f[m]["metrics"] for m in ("ffn", "cnn")  # usable runs
            if needed <= set(f[m]["metrics"] or {}) and train_seconds(f[m]["metrics"]) is not None}

    def per_network(key_fig, caption, floating=True):
        doc.figures_row([(f[m][key_fig], caption(m, done.get(m)), f"fig-{key_fig}-{m}")
                         for m in ("ffn", "cnn") if f[m][key_fig] is not None], floating=floating)
        for m in ("ffn", "cnn"):
            if f[m][key_fig] is None:
                r.missing_figure(f"{NETWORKS[m]}", f"fashionmnist-{m}/{key_fig}.png")

    r.item("Q1", own_draft(lambda: [
        f"For each network, one test image it classifies correctly and one it gets wrong, with the predicted and "
        f"the true class ({fig_refs('examples')}). The images were drawn at random (with the run's seed) "
        "from the correct and the wrong predictions."]))
    per_network("examples", lambda m, met: f"The {NETWORKS[m]}: a correctly and a wrongly classified test image, "
                "with the predicted class (and the network's confidence) and the true class.",
                floating=False)  # the part's first figures: in place, never above the part's heading
    r.item("Q2", own_draft(lambda: [
        "Training loss (cross-entropy) per training step, raw and smoothed, and after each epoch the training "
        "loss measured like the test loss (evaluation mode, plain images, on a fixed subset of training images) "
        f"beside the test loss ({fig_refs('loss')}). The per-step loss lies above the others because it is "
        f"measured while training: {training_conditions(done)}, which keeps the loss of even a perfect "
        "answer above zero."
        + "".join(f" The {NETWORKS[m]} trained {words.plural(met['config']['epochs'], 'epoch')} with "
                  f"{optimizer_words(met['config'].get('optimizer'))}"
                  + (" and SGD for the other parameters" if met['config'].get('optimizer') == "muon" else "") + " on "
                  f"{met['train_images']:,} images in {train_seconds(met):.0f} s." for m, met in done.items())]))
    per_network("loss", lambda m, met: f"The {NETWORKS[m]}: training loss per step (light: raw; dark: smoothed), "
                "and per epoch the training loss in evaluation mode and the test loss.")
    r.item("Q3", own_draft(lambda: [" ".join(parameter_sentence(NETWORKS[m], met, f[m]["layers"])
                                              for m, met in done.items())],
                           needs={"fashionmnist-ffn/metrics.json": ffn or cnn}, inp=inp))
    tables = [parameter_table(NETWORKS[m], f[m]["layers"]) for m in done if f[m]["layers"]]
    if tables:
        doc.tables_row(tables, size_pt=7.5)
    r.item("Q4", own_draft(lambda: [
        f"Confusion matrices on the {test_images(done)} test images ({fig_refs('confusion_matrix')}): each "
        "row is the true class, each column the predicted one; the diagonal holds the correct predictions."
        + "".join(f" The {NETWORKS[m]}'s test accuracy is {words.pct(met['test_accuracy'])}{tta_note(met)}; its most "
                  f"confused pair is {most_confused(met)}." for m, met in done.items() if "confusion_matrix" in met)]))
    per_network("confusion_matrix", lambda m, met: f"The {NETWORKS[m]}: confusion matrix on the test set (rows: true "
                "class, columns: predicted class)" + (f"; test accuracy {words.pct(met['test_accuracy'])}." if met else "."))

    k = d["fashion_kernels"]
    g = k["gabor"]
    r.item("Q5", own_draft(lambda: [
        f"The kernels of the CNN's first convolutional layer after training ({ref('fig-kernels')}), each scaled to "
        "[0, 1] on its own: dark is the kernel's most negative weight, light its most positive"
        + (f"; {len(g['trained']['r2'])} kernels of {g['kernel_size']}x{g['kernel_size']} weights." if g else ".")]))
    r.figure(k["kernels"], "The first convolutional layer's kernels after training, each min-max scaled to [0, 1].",
             "fig-kernels") if k["kernels"] else r.missing_figure("kernels", "fashionmnist-cnn/kernels/kernels.png")
    r.item("Q6", own_draft(lambda: [
        "The sample test image convolved with each first-layer kernel; each output is scaled to [0, 1] on its own. "
        "Kernels that act as edge detectors light up the garment's outline in one direction."]))
    r.figure(k["filtered"], "The sample image filtered by each first-layer kernel (outputs scaled to [0, 1]).",
             "fig-filtered") if k["filtered"] else r.missing_figure("filtered image", "fashionmnist-cnn/kernels/filtered.png")
    r.item("Q7", own_draft(lambda: [
        "The sample image through every stage of the CNN: the first channel of the output of each convolution "
        "with its activation and of each pooling layer, labelled with the layer that produced it."
        + (" Where the network pools straight after a convolution (before its batch norm and ReLU: on a quarter of "
           "the pixels, and the same result as pooling after them in every channel whose batch-norm scale is positive, "
           "since max pooling commutes with an increasing function), that panel shows the convolution's output before activation, "
           "and the next panel, batch norm + ReLU, names the convolution it follows."
           if pooled_before_activation(k["feature_stats"]) else "")]))
    r.figure(k["feature_maps"], "The sample image and the first channel after each convolution + activation and each "
             "pooling stage of the CNN.", "fig-feature-path") if k["feature_maps"] else \
        r.missing_figure("feature maps", "fashionmnist-cnn/kernels/feature_maps.png")
    r.item("Q8", own_draft(answer_cnn_vs_ffn, ffn, cnn,
                           needs={"fashionmnist-ffn/metrics.json": ffn, "fashionmnist-cnn/metrics.json": cnn}, inp=inp))
    stats = k["feature_stats"]
    r.item("Q9", call_draft("draft_kernels", "feature_path_answer", stats,
                            needs={"fashionmnist-cnn/kernels/feature_stats.json": stats}, inp=inp))


def parameter_sentence(network: str, met: dict, layers: list | None) -> str:
    """Question 3 for one network: its count, and where its parameters sit (from the checkpoint's
    layers, whose sum must be the count the run measured)."""
    total = met["parameters"]
    text = f"The {network} has {total:,} parameters (everything training adjusts)."
    if not layers:
        return text + " (Its layer-by-layer count needs its checkpoint model.pt.)"
    norm = sum(n for _, holds, n in layers if holds.startswith("batch norm"))
    counted = sum(n for *_, n in layers)
    text += (f" Layer by layer (table below): {counted - norm:,} weights and biases of its "
             f"{'convolutional and ' if any(h.startswith('conv') for _, h, _ in layers) else ''}fully-connected layers"
             + (f" and {norm:,} batch-norm parameters (a learned scale and shift per unit or channel)" if norm else "")
             + ".")
    if counted != total:
        text += (f" These layers sum to {counted:,}, not {total:,}: the checkpoint and metrics.json come from "
                 "different runs; rerun fashionmnist.py.")
    return text


def parameter_table(network: str, layers: list) -> tuple:
    """(header, rows, align) of one network's parameters per layer, with their total."""
    rows = [[name, holds, f"{n:,}"] for name, holds, n in layers]
    return ([f"{network[0].upper()}{network[1:]}: layer", "parameters", "count"],
            rows + [["total", "", f"{sum(n for *_, n in layers):,}"]], "(left, left, right)")


def pooled_before_activation(stats: dict | None) -> bool:
    """Whether a stage of the feature path pools a convolution's output before its activation
    (kernel_vis labels it 'conv N + max pool M', without ReLU)."""
    labels = [st.get("label", "") for st in (stats or {}).get("stages", [])]
    return any("conv" in lb and "pool" in lb and "ReLU" not in lb for lb in labels)


def fig_refs(kind: str) -> str:
    return f"{ref(f'fig-{kind}-ffn')} and {ref(f'fig-{kind}-cnn')}"


def test_images(done: dict) -> str:
    counts = {sum(map(sum, met["confusion_matrix"])) for met in done.values() if "confusion_matrix" in met}
    return f"{counts.pop():,}" if len(counts) == 1 else "10,000"


def most_confused(met: dict) -> str:
    cm, names = met["confusion_matrix"], list(met["per_class_accuracy"])
    i, j = max(((i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j), key=lambda ij: cm[ij[0]][ij[1]])
    return f"{names[i]} taken for {names[j]} ({cm[i][j]} images)"


def part_two(r: Report):
    d, doc, inp = r.d, r.doc, r.inp
    doc.heading(1, PART_II, label="part-2", new_page=False)  # Part I's last page has room to spare
    m = d["mytorch"]
    r.item("P1", own_draft(mytorch_text, m["check"], needs={"mytorch/check.json": m["check"]}, inp=inp))
    if m["tester"]:
        doc.note("Output of the Conv2D tester (the checks of Conv2DTester.ipynb), every case with its errors:")
        doc.mono(m["tester"].rstrip(), size_pt=8, columns=2)  # a long line wraps within its column

    doc.heading(2, "Problem 2. CNNs on CIFAR-10", label="problem-2")
    doc.para("Two networks were trained on CIFAR-10 (50,000 training images of 32x32 pixels in 10 classes; part of "
             "the training set is held out as the validation set that guided every choice; the 10,000 test "
             "images only measure trained networks, and no choice was made on them): (a) a VGG-style network whose convolutional layers end in "
             "fully-connected (dense) layers, and (b) a ResNet-style network that ends in global average pooling "
             "(each channel's map averaged to one number) followed by a single linear layer.")
    for part, arch in (("a", "dense"), ("b", "gap")):
        c = d["cifar"][arch]
        name = ARCH_NAMES[arch]
        doc.heading(3, f"2({part}) The {name}", label=f"problem-2{part}")
        met, ab = c["metrics"], c["ablation"]
        folder = f"cifar10-{arch}"
        r.item(f"2({part})(a)", call_draft("draft_cifar", "architecture_answer", arch, met, c["architecture"],
                                           needs={f"{folder}/metrics.json": met,
                                                  f"{folder}/architecture.txt": c["architecture"]}, inp=inp))
        if c["architecture"]:
            doc.note(f"The full layer table is in {ref(f'appendix-layers-{arch}')}.")
        r.item(f"2({part})(b)", design_draft(r, arch))
        r.item(f"2({part})(c)", call_draft("draft_cifar", "batchnorm_answer", arch, ab, final=met,
                                           needs={f"{folder}-ablation/ablation.json": ab}, inp=inp))
        if ab:
            ablation_table(doc, ab)
        if c["ablation_png"]:
            r.figure(c["ablation_png"], f"The {name}, ablation: for each batch-normalization setting (columns), dropout "
                     "on against off: validation accuracy per epoch (top; plain" + (", while the table and the text give each run's "
                     "final accuracy from the mean logits of each image and its mirror image" if (ab or {}).get("setting", {})
                     .get("tta") else "") + "), and validation loss beside the evaluation-mode "
                     "training loss (bottom) per epoch" + ("; mean over seeds, the band spans the lowest to the highest "
                     "seed." if len((ab or {}).get("setting", {}).get("seeds", [])) > 1 else " (one seed)."),
                     f"fig-ablation-{arch}")
        r.item(f"2({part})(d)", call_draft("draft_cifar", "dropout_answer", arch, ab, final=met,
                                           needs={f"{folder}-ablation/ablation.json": ab}, inp=inp))
        if c["ablation_png"]:
            doc.para(f"The four variants' curves are in {ref(f'fig-ablation-{arch}')}, under item 2({part})(c).")
        r.item(f"2({part})(e)", call_draft("draft_cifar", "loss_answer", arch, met, c["history"],
                                           needs={f"{folder}/metrics.json": met, f"{folder}/history.csv": c["history"]},
                                           inp=inp))
        if c["loss"]:
            on = "augmented batches, dropout and label smoothing on" if (met or {}).get("dropout") else \
                "augmented batches, label smoothing on; this network has no dropout"
            r.figure(c["loss"], f"The {name}: training loss per step as training sees it ({on}) and, per epoch, "
                     "the training loss measured like the validation loss (plain images, evaluation mode, plain "
                     "cross-entropy on a fixed subset of training images) beside the validation loss; the gap "
                     "between those two is the overfitting gap.",
                     f"fig-loss-{arch}")
        else:
            r.missing_figure("loss curve", f"{folder}/loss.png")
        r.item(f"2({part})(f)", call_draft("draft_cifar", "validation_answer", arch, met,
                                           needs={f"{folder}/metrics.json": met}, inp=inp))
        if met:
            flip = " (flip-averaged)" if met.get("tta") else ""
            doc.table([f"Validation accuracy{flip}", "Validation images", f"Test accuracy{flip}", "Test images",
                       "Parameters"],
                      [[words.pct(met["val_accuracy"]), f"{met['val_images']:,}", words.pct(met["test_accuracy"]),
                        f"{met['test_images']:,}", f"{met['parameters']:,}"]])

    doc.heading(2, "Problem 3. Feature maps and filters", label="problem-3")
    r.item("3(a)", own_draft(lambda: [
        "For each network, the feature maps (outputs after the activation) of three convolutional layers - the "
        "first, one in the middle and the last - for one test image, one panel per output channel, numbered; the "
        "two networks' layers of the same depth follow each other. Where a layer has more than "
        "32 channels the body shows the first 32 and Appendix B shows every channel."]))
    grids(r, "feature_maps", "feature maps of")
    r.item("3(b)", gabor_drafts(r))
    grids(r, "filters", "learned filters of")
    for arch in ("dense", "gap"):
        k = d["cifar"][arch]["kernels"]
        if k["gabor_png"]:
            r.figure(k["gabor_png"], f"The {ARCH_NAMES[arch]}: the first-layer kernels most like a 2-D Gabor function "
                     "(an oriented stripe pattern under a Gaussian window), above the fitted Gabor functions.",
                     f"fig-gabor-{arch}")

    for key, func, kind in (("P4", "cam_answer", "cam"), ("P5", "guided_answer", "gbp")):
        texts, why = [], []
        for arch in ("dense", "gap"):
            c = d["cifar"][arch]
            rel = f"cifar10-{arch}/saliency_stats.json"
            dr = call_draft("draft_saliency", func, f"the {ARCH_NAMES[arch]}", c["stats"], needs={rel: c["stats"]},
                            inp=inp, define=not texts)
            texts += dr.paragraphs
            why += [dr.why] if dr.why else []
        r.item(key, Draft(texts, "; ".join(why)))
        if why and texts:
            doc.note("Partly missing: " + "; ".join(why) + ".")
        for arch in ("dense", "gap"):
            c = d["cifar"][arch]
            if kind == "cam":
                name = "class activation maps (CAM)" if c["method"] == "cam" else \
                    "Grad-CAM maps (CAM needs global average pooling, which this network lacks)"
                r.figure(c["cam_png"], f"The {ARCH_NAMES[arch]}: {name} of correctly (green title) and wrongly (red "
                         "title) classified test images, overlaid on each image; red marks the strongest evidence for "
                         "the predicted class.", f"fig-cam-{arch}")
            else:
                same = (" Beside them, Grad-CAM of the last features, which on this network is its class activation "
                        "map (CAM) where that is positive, scaled by 1/(h w), and guided Grad-CAM." if arch == "gap" else
                        " Beside them, Grad-CAM of the last convolutional layer and guided Grad-CAM.")
                r.figure(c["gbp_png"], f"The {ARCH_NAMES[arch]}: guided backpropagation saliency maps of correctly and "
                         f"wrongly classified test images.{same}", f"fig-gbp-{arch}")
        if kind == "gbp":
            r.figures_row([(d["cifar"][arch]["sanity_png"], f"The {ARCH_NAMES[arch]}: randomization sanity check "
                            "(Adebayo et al. 2018): how much each method's maps still resemble the trained "
                            "network's (rank correlation) as the layers are re-initialized from the output down; "
                            "maps that depend on what the network learned fall towards 0.", f"fig-sanity-{arch}")
                           for arch in ("dense", "gap")])

    ds = d["dataset"]["json"]
    if ds is not None:
        ds = {**ds, "jpeg_copy": jpeg_copy_used(d)}
    r.item("P6", own_draft(dataset_answer, ds, needs={"dataset/dataset.json": ds}, inp=inp))
    if r.provenance.get("P6") == "draft":
        doc.note("This is a draft assembled from the run's measurements and published sources, for the student to "
                 "rewrite in their own words (the assignment asks what you learned).")
    r.figure(d["dataset"]["balance"], "Share of each class in the training and the test split of both datasets.",
             "fig-balance")
    r.figure(d["dataset"]["pairs"], "Test images (upper rows) and their nearest training images (lower rows), from "
             "the closest pair to pairs near the near-copy threshold.", "fig-pairs")
    references(doc)


REFERENCES = [
    "Adebayo, J. et al. (2018). Sanity checks for saliency maps. NeurIPS 2018.",
    "Barz, B. and Denzler, J. (2020). Do we train on test data? Purging CIFAR of near-duplicates. Journal of "
    "Imaging 6(6), 41.",
    "Birhane, A. and Prabhu, V. U. (2021). Large image datasets: A pyrrhic win for computer vision? WACV 2021 "
    "(preprint arXiv:2006.16923, 2020).",
    "Gebru, T. et al. (2021). Datasheets for datasets. Communications of the ACM 64(12), 86-92.",
    "Hardt, M. and Recht, B. (2022). Patterns, Predictions, and Actions. Princeton University Press; chapter 8, "
    "Datasets.",
    "He, K., Zhang, X., Ren, S. and Sun, J. (2016). Deep residual learning for image recognition. CVPR 2016.",
    "Jordan, K. et al. (2024). Muon: An optimizer for hidden layers in neural networks. Blog post, "
    "https://kellerjordan.github.io/posts/muon/ (the optimizer of the airbench94_muon CIFAR-10 speed runs).",
    "Krizhevsky, A. (2009). Learning multiple layers of features from tiny images. Technical report, University "
    "of Toronto.",
    "Lin, M., Chen, Q. and Yan, S. (2014). Network in network. ICLR 2014.",
    "Petsiuk, V., Das, A. and Saenko, K. (2018). RISE: Randomized input sampling for explanation of black-box "
    "models. BMVC 2018.",
    "Recht, B., Roelofs, R., Schmidt, L. and Shankar, V. (2018). Do CIFAR-10 classifiers generalize to "
    "CIFAR-10? arXiv:1806.00451.",
    "Selvaraju, R. R. et al. (2017). Grad-CAM: Visual explanations from deep networks via gradient-based "
    "localization. ICCV 2017.",
    "Simonyan, K. and Zisserman, A. (2015). Very deep convolutional networks for large-scale image recognition. "
    "ICLR 2015.",
    "Springenberg, J. T., Dosovitskiy, A., Brox, T. and Riedmiller, M. (2015). Striving for simplicity: The all "
    "convolutional net. ICLR 2015 workshop (arXiv:1412.6806, 2014).",
    "Xiao, H., Rasul, K. and Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for benchmarking machine "
    "learning algorithms. arXiv:1708.07747.",
    "Zhou, B., Khosla, A., Lapedriza, A., Oliva, A. and Torralba, A. (2016). Learning deep features for "
    "discriminative localization. CVPR 2016.",
]


def references(doc):
    """Every work the report cites, at the end of the body, before the appendices."""
    doc.heading(1, "References", label="references", new_page=False)
    # One unbreakable block: the list moves to the next page whole rather than leave one entry there.
    doc.raw("#block(breakable: false)[" + "\n\n".join(escape(r) for r in REFERENCES) + "]")


def load_trials():
    mod = draft_module("draft_design")
    if mod is None or not hasattr(mod, "load_trials"):
        return None
    try:
        return mod.load_trials()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def design_draft(r: Report, arch: str) -> Draft:
    """2(x)(b): the starting design and the budget in the body; the trial-by-trial record (a page and
    more per network) in Appendix C, referred to from the body."""
    dr = call_draft("draft_design", "design_answer", arch, load_trials())
    if len(dr.paragraphs) > 3:
        r.appendix_trials[arch] = dr.paragraphs[2:]
        note = getattr(draft_module("draft_design"), "SEED_NOTE", None)  # the closing remark: not a group
        groups = sum(not (note and p.startswith(note)) for p in dr.paragraphs[2:])
        dr.paragraphs = dr.paragraphs[:2] + [
            f"{groups} groups of trials, each with its measured validation accuracy and time and "
            f"why the change was kept or dropped, are in {ref(f'appendix-trials-{arch}')}."]
    met = r.d["cifar"][arch]["metrics"]
    if dr.paragraphs and met and met.get("preset") not in (None, "default"):
        dr.paragraphs.append(setting_note(arch, met))
    return dr


def setting_note(arch: str, met: dict) -> str:
    """Why this run's network differs from the one the trials chose: it ran at a shorter setting."""
    chosen, ran = CIFAR_DEFAULTS[(arch, "default")], met["config"]
    return (f"The trials chose {'-'.join(map(str, chosen['channels']))} channels, {chosen['epochs']} epochs, dropout "
            f"{chosen['dropout']:g} and {optimizer_words(chosen.get('optimizer'))} (python cifar10.py --arch {arch}); "
            f"this report's run used the shorter '{met['preset']}' setting ({'-'.join(map(str, ran['channels']))} "
            f"channels, {ran['epochs']} epochs, dropout {met.get('dropout') or 0:g}, "
            f"{optimizer_words(ran.get('optimizer'))}): the same design, narrower and shorter, "
            "so not every decision of the trials shows in the network above.")



def gabor_drafts(r: Report) -> Draft:
    texts, why = [], []
    for arch in ("dense", "gap"):
        g = r.d["cifar"][arch]["kernels"]["gabor"]
        dr = call_draft("draft_kernels", "gabor_answer", f"the {ARCH_NAMES[arch]}", g, define=not texts,
                        needs={f"cifar10-{arch}/kernels/gabor.json": g}, inp=r.inp)
        texts += dr.paragraphs
        why += [dr.why] if dr.why else []
    return Draft(texts, "; ".join(why))


def grids(r: Report, kind: str, what: str):
    """Per depth (first, middle, last conv layer) one row: the two networks' grids side by side
    where they fit (filters are drawn half the text width, feature maps the whole: then one under
    the other); every channel of a wider layer goes to Appendix B."""
    layers = {arch: r.d["cifar"][arch]["kernels"]["layers"] for arch in ("dense", "gap")}
    for arch, rows in layers.items():
        if not rows:
            r.missing_figure(f"{what} the {ARCH_NAMES[arch]}", f"cifar10-{arch}/kernels/gabor.json")
    for depth in range(max(map(len, layers.values()))):
        row_figures = []
        for arch, rows in layers.items():
            if depth >= len(rows):
                continue
            row = rows[depth]
            layer, tag = plain_layer(row["layer"]), f"{kind}-{arch}-{safe(row['layer'])}"
            if row[kind] is not None:
                more = " All channels: Appendix B." if row[kind + "_appendix"] else ""
                which = (", after its activation (its title names each step)" if kind == "feature_maps" else
                         ", the weights from its first input channel" if depth else "")
                row_figures.append((row[kind], f"The {ARCH_NAMES[arch]}: {what} {layer}{which}.{more}", f"fig-{tag}"))
            for i, extra in enumerate(row[kind + "_appendix"]):
                r.appendix_figures.append((extra, f"The {ARCH_NAMES[arch]}: {what} {layer}, every channel.",
                                           f"fig-{tag}-all{i}"))
        r.figures_row(row_figures, floating=False)  # in order, under their item: never above its heading


def plain_layer(layer: str) -> str:
    """'features.conv2_1' -> 'convolutional layer conv2_1', 'features.res2_1.conv2' -> 'convolutional
    layer res2_1.conv2' (the second convolution of stage 2's residual block, not the stage's conv2)."""
    return "convolutional layer " + layer.removeprefix("features.")


def safe(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


def mytorch_text(check: dict) -> list:
    worst = max(max_error(c) for c in check["cases"])
    verdict = ("every case passes" if check["passed"] == check["total"] else
               "FAILING: " + ", ".join(c["case"] for c in check["cases"] if not c["passed"]))
    return [f"The NumPy Conv2D layer (mytorch/conv.py: forward pass and the gradients with respect to the input, "
            f"the weights and the bias) was compared with PyTorch's conv2d and its automatic differentiation in "
            f"double precision on {check['total']} cases: {check['passed']} of {check['total']} pass, meaning every "
            f"output and gradient is within {check['tolerance']:g} of PyTorch's (largest error {worst:.1e}); "
            f"{verdict}."] + [bias_sentence(check["cases"])]


def bias_sentence(cases: list) -> str:
    """The assignment's Conv2D has no bias ('for simplicity, we will ignore the bias term'); ours
    takes an optional one: say so, and how many cases checked it (dL/db is None without a bias)."""
    with_bias = sum(c["err_dLdb"] is not None for c in cases)
    tested = (f"all {len(cases)} cases check it with the bias" if with_bias == len(cases) else
              "no case checks the bias" if not with_bias else
              f"{with_bias} of the {len(cases)} cases check it with the bias and {len(cases) - with_bias} without")
    return ("The assignment's layer ignores the bias term; ours adds an optional per-channel bias, off by default "
            f"(so by default it is the assignment's layer), and {tested}.")


def max_error(case: dict) -> float:
    """Largest of a mytorch case's errors (dL/db is None for a layer without bias)."""
    return max(case[k] for k in ("err_Z", "err_dLdA", "err_dLdW", "err_dLdb") if case[k] is not None)


def ablation_table(doc: Doc, table: dict):
    nan = lambda x, f: "diverged" if x != x else f.format(x)  # noqa: E731
    tta = table.get("setting", {}).get("tta")
    flip = " (flip-averaged)" if tta else ""

    def val(r):  # with tta, the plain accuracy beside it: the figure's curves are plain
        plain = f" ({nan(100 * r['val_accuracy_plain'], '{:.2f}%')})" if tta and "val_accuracy_plain" in r else ""
        return nan(100 * r["val_accuracy"], "{:.2f}%") + plain
    val_head = "Validation accuracy, flip-averaged (plain, as plotted)" if tta else "Validation accuracy"
    doc.table(["Variant", val_head, f"Test accuracy{flip}", "Validation minus training loss"],
              [[r["label"], val(r), nan(100 * r["test_accuracy"], "{:.2f}%"),
                nan(r["loss_gap"], "{:.3f}")] for r in table["variants"]])


def jpeg_copy_used(d) -> bool:
    dirs = {m["config"].get("data_dir") for m in all_metrics(d) if m.get("config", {}).get("data_dir")}
    return any((Path(x) / "cifar10.npz").exists() and (Path(x) / "cifar10.npz").stat().st_size == JPEG_COPY_BYTES
               for x in dirs)


def all_metrics(d) -> list:
    runs = [d["fashion"][m]["metrics"] for m in ("ffn", "cnn")] + [d["cifar"][a]["metrics"] for a in ("dense", "gap")]
    return [m for m in runs if m]


def appendices(r: Report, missing: dict):
    d, doc = r.d, r.doc
    doc.raw("#counter(heading).update(0)\n#set heading(numbering: (..n) => if n.pos().len() == 1 "
            "{ \"Appendix \" + numbering(\"A.\", ..n) } else { numbering(\"A.1\", ..n) })")
    doc.heading(1, "Layer tables", label="appendix-layers")
    for arch in ("dense", "gap"):
        text = d["cifar"][arch]["architecture"]
        doc.heading(2, f"The {ARCH_NAMES[arch]}", label=f"appendix-layers-{arch}")
        if text:
            architecture_table(doc, text)
        else:
            doc.note(f"Missing: {r.inp.why_missing(f'cifar10-{arch}/architecture.txt')}.")
    doc.heading(1, "All channels of each layer", label="appendix-grids")
    if not r.appendix_figures:
        doc.para("Every layer's channels fit in the figures of Problem 3; nothing more to show.")
    for path, caption, lbl in r.appendix_figures:
        doc.figure(path, caption, lbl, floating=False)
    doc.heading(1, "How the architectures were reached: the design trials", label="appendix-trials")
    for arch in ("dense", "gap"):
        doc.heading(2, f"The {ARCH_NAMES[arch]}", label=f"appendix-trials-{arch}")
        doc.para(*(r.appendix_trials.get(arch) or ["No trials recorded (benchmarks/results/design_trials.json)."]))
    doc.heading(1, "The run's settings and hardware", label="appendix-run")
    settings(doc, d)
    if missing:
        doc.heading(1, "Missing inputs", label="appendix-missing")
        doc.para(f"{len(missing)} input(s) this report reads were not found or not usable; the items above say what "
                 "each lacks. Each command below makes the files listed under it (or run everything: python "
                 "report/run_all.py --preset quick).")
        by_command = {}
        for path, command in missing.items():
            by_command.setdefault(command, []).append(path)
        doc.mono("\n".join(f"$ {cmd}\n" + "\n".join(f"    {p}" for p in paths) for cmd, paths in by_command.items()))


def architecture_table(doc: Doc, text: str):
    """architecture.txt: a constructor line, a markdown table, notes -> a Typst table and paragraphs."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---") and not set(line) <= set("|-: ")]
    notes = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("|")]
    if notes:
        doc.para(notes[0])
    if len(rows) > 1 and all(len(r) == len(rows[0]) for r in rows):
        doc.table(rows[0], rows[1:], align="(" + ", ".join(["left"] * (len(rows[0]) - 1) + ["right"]) + ")", size_pt=7.5)
    elif rows:
        doc.mono("\n".join(" | ".join(r) for r in rows))
    doc.para(*notes[1:])


def settings(doc: Doc, d: dict):
    e, s = d["env"], d["summary"]
    devices = sorted({m["device"] for m in all_metrics(d) if m.get("device")})
    doc.para(f"Hardware of the machine that built this report: {e['cpu']}, {e['cores']} cores"
             + (f", {e['memory_gb']} GB memory" if e["memory_gb"] else "") + f"; GPU: {e['gpu']}; {e['os']}. "
             f"The networks trained on: {', '.join(devices) or 'unknown'}.",
             f"Software: Python {e['python']}, torch {e['torch']}, torchvision {e['torchvision']}, numpy {e['numpy']}, "
             f"matplotlib {e['matplotlib']}, scipy {e['scipy']}, seaborn {e['seaborn']}, typst {e['typst']}.")
    dirs = sorted({m["config"].get("data_dir") for m in all_metrics(d) if m.get("config", {}).get("data_dir")})
    doc.para("Data: Fashion-MNIST (Xiao et al. 2017, Zalando; 60,000 training and 10,000 test images) and CIFAR-10 "
             "(Krizhevsky 2009; 50,000 and 10,000), read from " + (", ".join(dirs) or "the data folder") + ".",
             ("The CIFAR-10 copy used was decoded from JPEG (quality 75), so expect accuracies about 2-3 points "
              "below published ones on the original pixels." if jpeg_copy_used(d) else
              "If the offline JPEG-decoded CIFAR-10 copy was used, expect accuracies about 2-3 points below "
              "published ones on the original pixels."))
    doc.para("Total compute: " + total_time(d))
    if s:
        doc.table(["Step", "Status", "Seconds", "Result"],
                  [step_row(r) for r in s["steps"]],
                  align="(left, left, right, left)", size_pt=7.5)
    for a in ("dense", "gap"):
        m = d["cifar"][a]["metrics"]
        if m and m.get("config"):
            c = m["config"]
            muon = (f"; the convolution filters Muon at peak {c.get('muon_lr')}" if c.get("optimizer") == "muon"
                    else "")
            known = [(f"batch size {c['batch_size']}", "batch_size"), (f"peak learning rate {c.get('lr')} (SGD with "
                     f"Nesterov momentum, one-cycle schedule{muon})", "lr"), (f"label smoothing {c.get('label_smoothing')}",
                     "label_smoothing"), (f"random flips and shifts of up to {c.get('crop')} pixels", "crop")]
            doc.para(f"Training settings of the {ARCH_NAMES[a]}: "
                     + ", ".join([text for text, key in known if c.get(key) is not None]
                                 + [f"{words.plural(m['epochs'], 'epoch')} on {m['train_images']:,} images, "
                                    f"{m['train_seconds']:.0f} s on {m['device']}"]) + ".")


def optimizer_words(name) -> str:
    """A run's --optimizer in words; Muon with its citation (the References list it)."""
    return words.OPTIMIZERS.get(name, str(name)) + (" (Jordan et al., 2024)" if name == "muon" else "")


MADE_EARLIER = "made earlier"  # the steps table's status for a step run_all.py skipped as up to date


def step_row(r: dict) -> list:
    """[step, status, seconds, result] of one run_all.py step; the report step is still pending
    while run_all.py builds this PDF, and a pending step has no time yet. A skipped step was up to
    date: its seconds are those of the earlier run that made its outputs."""
    if r["status"] == "pending":
        return [r["step"], "this PDF" if r["step"] == "report" else "not run", "-", ""]
    status = MADE_EARLIER if r["status"] == "skipped" else r["status"]
    return [r["step"], status, f"{r.get('made_seconds', r.get('seconds', 0)) or 0:.1f}",
            (r.get("key") or r.get("reason") or "")[:70]]


def total_time(d) -> str:
    s = d["summary"]
    if s and "total_seconds" in s and "steps" in s:
        return (f"{fmt_time(s['total_seconds'])} for the results in this report: the sum of the wall times of the "
                f"{sum(r.get('status') in ('ran', 'skipped') for r in s['steps'])} run_all.py steps that made them"
                + (f" (--limit {s['limit']})" if s.get("limit") else "")
                + (f"; a step '{MADE_EARLIER}' was up to date, its time that of the earlier run_all.py call that ran it."
                   if any(r.get("status") == "skipped" for r in s["steps"]) else "."))
    seconds = sum(m.get("wall_seconds", m.get("train_seconds", 0)) for m in all_metrics(d))
    if not seconds:
        return "unknown: neither run_all.json nor any training run's metrics.json was found."
    return f"{fmt_time(seconds)}: the training runs' own wall times (no run_all.json, so the other steps are not included)."


def provenance_summary(r: Report) -> str:
    counts = {k: sum(v == k for v in r.provenance.values()) for k in ("student", "draft", "none")}
    return (f"Of the {len(r.provenance)} items, {counts['student']} are written by the student, {counts['draft']} are "
            f"drafts generated from the run's numbers, and {counts['none']} have no text yet.")


def shown_path(path: Path) -> str:
    """path relative to the working folder where it lies below it (report/answers.md), else absolute."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def document(d: dict, inp: Inputs, fields: dict, own: dict, author: str | None, typ_dir: Path,
             answers: str = "report/answers.md") -> tuple[Doc, Report]:
    doc = Doc(typ_dir)
    r = Report(doc, d, inp, own, answers)
    title_page(doc, d, fields, author, answers)
    for build in (part_one, part_two):
        try:
            build(r)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, ZeroDivisionError) as err:
            name = "Part I" if build is part_one else "Part II"
            inp.missing[f"the inputs of {name}"] = (f"unusable ({type(err).__name__}: {err}): files from an older or "
                                                    "foreign run; python report/run_all.py --force")
            doc.note(f"The rest of {name} could not be built: its inputs are unusable ({type(err).__name__}); see "
                     "the missing inputs appendix.")
    for key, title, level, _ in ITEMS:  # an item a failed part did not reach still gets its heading
        if key not in r.provenance:
            r.item(key, Draft(why="its part could not be built (see the missing inputs appendix)"))
    appendices(r, inp.missing)
    return doc, r


def compile_pdf(typ: Path, out: Path, root: Path):
    import typst

    with files.atomic_path(out) as tmp:
        try:
            typst.compile(str(typ), output=str(tmp), root=str(root))
        except Exception as err:  # noqa: BLE001 (typst raises its own error type; say what failed, keep the source)
            raise cli.UserError(f"Typst could not compile {typ}: {str(err).splitlines()[0] if str(err) else err}; "
                                "the source is kept for inspection") from None


def read_answers(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise cli.UserError(f"{path} is not UTF-8 text; open it in a text editor and save it as UTF-8") from None
    except OSError as err:
        raise cli.UserError(f"cannot read {path}: {err.strerror or err}; check the file (--answers)") from None


def main(argv=None):
    args = parse_args(argv)
    if answers_md.ensure(args.answers, [(k, t, g) for k, t, _, g in ITEMS]):
        print(f"wrote {args.answers}: your name, declarations and own words go there (never overwritten)")
    fields, own = answers_md.parse(read_answers(args.answers), ITEM_KEYS)
    d, inp = collect(args.runs_dir)
    d["runs_dir"] = str(args.runs_dir)
    out = args.out.resolve()
    typ = out.with_suffix(".typ")
    try:
        doc, r = document(d, inp, fields, own, args.author, typ.parent, shown_path(args.answers))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        # each item's draft already survives a bad field (it is left without text); this is a field
        # the whole report reads (a run's config, the title page's settings) holding something else
        raise cli.UserError(f"a results file under {args.runs_dir} does not hold what this version writes "
                            f"({type(err).__name__}: {err}); remake them: python report/run_all.py "
                            f"--runs-dir {args.runs_dir} --force") from None
    root = Path(os.path.commonpath([typ.parent, *[p.resolve() for p in doc.figures]]))
    author = args.author or fields.get("name") or ""
    header = typst_doc.PREAMBLE.format(root=root, name=typ.name, answers=shown_path(args.answers),
                                       title="Image classification with neural networks",
                                       author=author.replace("\\", "").replace('"', "'"))
    files.make_dirs(out.parent)
    files.write_text(typ, header + "\n" + doc.source())
    compile_pdf(typ, out, root)
    print(f"{len(doc.figures)} figures; {provenance_summary(r)}"
          + (f" {len(inp.missing)} missing inputs listed in the last appendix." if inp.missing else "")
          + f" -> {args.out} (source {typ})")


if __name__ == "__main__":
    cli.run(main, out_flag="--out")
