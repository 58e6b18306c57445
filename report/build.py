"""Gather what is in runs/ into one PDF, the write-up of both assignments in their question order.

    python report/build.py                                    # runs/ -> report/report.pdf
    python report/build.py --runs-dir /tmp/runs --out /tmp/report.pdf
    python report/run_all.py --preset quick                   # makes every input, then calls this

Reads only the files the scripts wrote (json, png, txt); it never trains and never imports torch.
Every number in the text is read from those files, and the short written answers (why the CNN
beats the FFN, how features evolve, Gabor filters, what CAMs and saliency maps show, the ablation)
are generated from them with conditional wording, so they cannot contradict the figures. A
missing input is listed on a "Missing inputs" page with the command that makes it, and the
report is built from the rest. Every figure gets a caption; the title page gives the hardware,
the software versions, the data source and the total compute time (runs/run_all.json, else the
runs' own wall times). The PDF is written atomically.
"""
import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the convlens modules live at the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cli  # noqa: E402
import files  # noqa: E402
import plots  # noqa: E402  (sets the Agg backend)
import run_all  # noqa: E402  (the commands that make each input)

plt = plots.plt
plt.rcParams["pdf.fonttype"] = 42  # embed TrueType: selectable, searchable text

# Published accuracies run 2-3 points higher on lossless CIFAR-10 (shared/data/README.md).
JPEG_COPY_BYTES = 170_969_215  # size of the JPEG-degraded offline cifar10.npz
SANITY_PASS = 0.3     # |Spearman rho| after randomizing every layer below which a map "depends on the weights"
NOTICEABLE = 0.5      # accuracy difference (points) below which one seed cannot tell two runs apart
ARCH_NAMES = {"dense": "VGG-style CNN with a dense head", "gap": "ResNet-style CNN with global average pooling"}


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the folder run_all.py (or the scripts) wrote")
    p.add_argument("--out", type=Path, default=Path("report/report.pdf"), help="the PDF to write")
    args = p.parse_args(argv)
    if not args.runs_dir.is_dir():
        raise cli.UserError(f"--runs-dir {args.runs_dir} is not a folder; make the runs with "
                            "python report/run_all.py --preset quick, or pass the folder that holds them")
    if args.out.suffix.lower() != ".pdf" or args.out.is_dir():
        raise cli.UserError(f"--out {args.out} must be a .pdf file name")
    return args


# ---- collecting the inputs -------------------------------------------------------------------------

class Inputs:
    """Reads files under the runs folder and remembers each one that is missing, with the command
    that makes it (taken from run_all.py's plan, so the two never disagree)."""

    def __init__(self, runs: Path):
        self.runs, self.missing = runs, {}
        plan_args = argparse.Namespace(preset="full", limit=None, runs_dir=runs, data_dir=cli.DEFAULT_DATA_DIR,
                                       report=Path("report/report.pdf"), seed=0)
        self.makers = {out: step for step in run_all.plan(plan_args) for out in step.outputs}

    def path(self, rel) -> Path | None:
        p = self.runs / rel
        if not p.exists():
            self.missing.setdefault(str(p), self.command(p))
            return None
        if p.suffix == ".png" and png_size(p) is None:
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

    def unreadable(self, p: Path, why: str):
        self.missing[str(p)] = f"unreadable ({why}); rerun: {self.command(p)}"
        return None

    def text(self, rel) -> str | None:
        p = self.path(rel)
        return p.read_text() if p else None

    def command(self, p: Path) -> str:
        step = self.makers.get(p)
        if step is None:
            return "python report/run_all.py --preset quick"
        shown, skip = [], False
        for arg in step.argv:  # relative script paths, and no --data-dir (the default finds the data)
            if skip or arg == "--data-dir":
                skip = not skip
                continue
            shown.append(os.path.relpath(arg, run_all.ROOT) if arg.startswith(str(run_all.ROOT)) else arg)
        return "python " + " ".join(shown)


def collect(runs: Path) -> tuple[dict, dict]:
    """(every number and figure path the report uses, {missing file: command that makes it})."""
    inp = Inputs(runs)
    d = {"summary": read_quietly(runs / "run_all.json"), "env": environment()}
    d["fashion"] = {m: fashion_run(inp, f"fashionmnist-{m}") for m in ("ffn", "cnn")}
    d["fashion_kernels"] = kernel_outputs(inp, "fashionmnist-cnn/kernels", per_layer=False)
    d["mytorch"] = inp.json("mytorch/check.json")
    d["cifar"] = {a: cifar_run(inp, a) for a in ("dense", "gap")}
    d["ablation"] = {a: {"table": inp.json(f"cifar10-{a}-ablation/ablation.json"),
                         "lr": (read_quietly(runs / f"cifar10-{a}-ablation/bn-drop/metrics.json") or {})
                         .get("config", {}).get("lr"),
                         "png": inp.path(f"cifar10-{a}-ablation/ablation.png")} for a in ("dense", "gap")}
    d["kernels"] = {a: kernel_outputs(inp, f"cifar10-{a}/kernels", per_layer=True) for a in ("dense", "gap")}
    d["saliency"] = {a: saliency_outputs(inp, a) for a in ("dense", "gap")}
    d["dataset"] = {"json": inp.json("dataset/dataset.json"), "balance": inp.path("dataset/class_balance.png"),
                    "pairs": inp.path("dataset/near_duplicates.png")}
    return d, inp.missing


def read_quietly(path) -> dict | None:
    """A json file that is optional (no entry on the missing page)."""
    value = files.read_json_or_none(path, warn=False)
    return value if isinstance(value, dict) and value else None


def fashion_run(inp, folder) -> dict:
    return {"metrics": inp.json(f"{folder}/metrics.json"),
            **{name: inp.path(f"{folder}/{name}.png") for name in ("examples", "loss", "confusion_matrix")}}


def cifar_run(inp, arch) -> dict:
    return {"metrics": inp.json(f"cifar10-{arch}/metrics.json"),
            "architecture": inp.text(f"cifar10-{arch}/architecture.txt"),
            "loss": inp.path(f"cifar10-{arch}/loss.png")}


def kernel_outputs(inp, folder, per_layer: bool) -> dict:
    out = {"gabor": inp.json(f"{folder}/gabor.json"), "gabor_png": inp.path(f"{folder}/gabor.png")}
    if not per_layer:
        out.update({name: inp.path(f"{folder}/{name}.png") for name in ("kernels", "filtered", "feature_maps")})
        return out
    layers = (out["gabor"] or {}).get("layers", [])  # kernel_vis.py's order: first, middle, last conv layer
    out["layers"] = [(layer, inp.path(f"{folder}/feature_maps_{layer.replace('.', '-')}.png"),
                      inp.path(f"{folder}/filters_{layer.replace('.', '-')}.png")) for layer in layers]
    return out


def saliency_outputs(inp, arch) -> dict:
    method = "cam" if arch == "gap" else "gradcam"
    folder = f"cifar10-{arch}"
    return {"method": method, "cam": inp.json(f"{folder}/{method}.json"), "cam_png": inp.path(f"{folder}/{method}.png"),
            "gbp": inp.json(f"{folder}/guided_backprop.json"), "gbp_png": inp.path(f"{folder}/guided_backprop.png"),
            "sanity": inp.json(f"{folder}/sanity.json"), "sanity_png": inp.path(f"{folder}/sanity.png")}


def environment() -> dict:
    """The machine building the report and the installed versions."""
    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return {"cpu": files.cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb(), "gpu": gpu_names(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "torchvision", "numpy", "matplotlib", "scipy", "scikit-learn")}}


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

def pct(x) -> str:
    return f"{100 * x:.2f}%"


def points(a, b) -> str:
    return f"{100 * (a - b):+.2f} points"


def fmt_time(seconds: float) -> str:
    return run_all.fmt_time(seconds) + (" (h:mm:ss)" if seconds >= 3600 else " (m:ss)")


def plural(n, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def compare(a: float, b: float, margin: float = NOTICEABLE / 100) -> str:
    """'higher', 'lower' or 'level' for a against b, within `margin`."""
    return "level" if abs(a - b) < margin else ("higher" if a > b else "lower")


def receptive_fields(config: dict, size: int = 28) -> list:
    """(block, channels, output size, receptive field in input pixels) of a cnn.CNN's blocks: a k x k
    conv widens the field by (k-1) x the stride so far, a 2x2 pool by 1 x it and doubles the stride.
    The pool comes after the block's convs, or after its first one with early_pool (cnn.CNN)."""
    rf, jump, rows = 1, 1, []
    k = config.get("kernel_size", 3)
    for b, channels in enumerate(config["channels"], 1):
        layers = ["conv"] * (config.get("convs_per_block") or 1)
        layers.insert(1 if config.get("early_pool") else len(layers), "pool")
        for layer in layers:
            rf += (k - 1) * jump if layer == "conv" else jump
            if layer == "pool":
                jump, size = jump * 2, size // 2
        rows.append((b, channels, size, rf))
    return rows


def tiny_run(d) -> int | None:
    """--limit of a tiny test run (its numbers mean nothing), or None."""
    if d["summary"] and d["summary"].get("limit"):
        return d["summary"]["limit"]
    m = d["fashion"]["cnn"]["metrics"] or d["fashion"]["ffn"]["metrics"] or {}
    return m.get("config", {}).get("limit")


def answer_cnn_vs_ffn(ffn: dict, cnn: dict) -> list:
    """Question 8, from the two runs' accuracies, parameter counts and per-class accuracies."""
    a_f, a_c, p_f, p_c = ffn["test_accuracy"], cnn["test_accuracy"], ffn["parameters"], cnn["parameters"]
    verdict = compare(a_c, a_f)
    size = (f"{p_f / p_c:.1f}x fewer parameters ({p_c:,} against {p_f:,})" if p_c < p_f
            else f"{p_c / p_f:.1f}x more parameters ({p_c:,} against {p_f:,})")
    opening = {"higher": f"In this run the CNN beats the feed-forward network: {pct(a_c)} against {pct(a_f)} test "
                         f"accuracy ({points(a_c, a_f)}), with {size}.",
               "level": f"In this run the two networks are level: CNN {pct(a_c)}, feed-forward network {pct(a_f)} "
                        f"({points(a_c, a_f)}), the CNN with {size}.",
               "lower": f"In this run the CNN does NOT beat the feed-forward network: {pct(a_c)} against {pct(a_f)} "
                        f"({points(a_c, a_f)}), with {size}."}[verdict]
    gains = {c: cnn["per_class_accuracy"][c] - ffn["per_class_accuracy"].get(c, 0) for c in cnn["per_class_accuracy"]}
    best, hardest = max(gains, key=gains.get), min(cnn["per_class_accuracy"], key=cnn["per_class_accuracy"].get)
    detail = (f"The largest per-class difference is on {best} ({points(cnn['per_class_accuracy'][best], ffn['per_class_accuracy'][best])}); "
              f"the CNN's hardest class is {hardest} ({pct(cnn['per_class_accuracy'][hardest])} correct).")
    why = ("Why a CNN is suited to images: a convolutional layer slides the same small kernel over every position "
           "(weight sharing), so a local pattern such as an edge, a texture or a collar is learned once and found "
           "anywhere, with few parameters; pooling makes the result tolerant to small shifts; stacked layers see "
           "ever larger patches, so later layers combine parts into shapes, and the dense head classifies those "
           "features instead of raw pixels. A fully-connected network treats the 784 pixels as an unordered vector: "
           "it must learn each pattern separately at each position and has no notion of neighbouring pixels.")
    if verdict == "higher":
        why += (" These are the reasons for the advantage measured here"
                + (", and why the CNN gets it with fewer parameters." if p_c < p_f else "."))
    else:
        why += (" Here that advantage did not show in the test accuracy; with "
                f"{cnn['train_images']:,} training images and {plural(cnn['config']['epochs'], 'epoch')} the "
                "training budget, not the architecture, probably decides (see the loss curves).")
    return [opening + " " + detail, why]


def answer_feature_path(cnn: dict, gabor: dict | None) -> list:
    """Question 9, from the CNN's architecture (resolution, channels, receptive field per block)."""
    rows = receptive_fields(cnn["config"])
    stages = "; ".join(f"block {b}: {c} maps of {s}x{s}, each unit seeing {min(rf, 28)}x{min(rf, 28)} input pixels"
                       for b, c, s, rf in rows)
    last = rows[-1]
    channels = [c for _, c, _, _ in rows]
    width = ("grows" if channels == sorted(channels) and channels[0] < channels[-1] else "goes") + \
        f" from {channels[0]} to {channels[-1]}"
    text = [f"The sample image (1x28x28) passes {len(rows)} conv blocks ({stages}). Each block halves the resolution, "
            f"the number of channels {width}, and each unit's receptive field widens from a "
            f"{rows[0][3]}x{rows[0][3]} patch to {min(last[3], 28)}x{min(last[3], 28)} pixels"
            + (" - the whole image." if last[3] >= 28 else ".")]
    text.append(f"So a first-block unit can only respond to a local pattern inside its {rows[0][3]}x{rows[0][3]} window "
                "- an edge, a spot, a contrast - and its maps keep the image's layout; each later block combines the "
                f"previous block's patterns over a wider area, and a last-block unit, seeing {min(last[3], 28)}x"
                f"{min(last[3], 28)} pixels, can respond to the shape of a whole garment part while its "
                f"{last[2]}x{last[2]} maps keep only coarse position. This hierarchy gives the dense head a compact, "
                f"shift-tolerant description ({last[1] * last[2] ** 2:,} numbers instead of 784 pixels) to classify; "
                "the feature-map figure of section 2 shows the first channel of each stage.")
    if gabor:
        text.append(gabor_sentence(gabor, "Fashion-MNIST CNN"))
    return text


def gabor_sentence(g: dict, network: str) -> str:
    """Whether the first-layer kernels look like Gabor filters, from gabor.json."""
    tr, un, k = g["trained"]["share_above_threshold"], g["untrained"]["share_above_threshold"], g["kernel_size"]
    n = len(g["trained"]["r2"])
    numbers = (f"{network}: a 2-D Gabor function fits {100 * tr:.0f}% of the {n} first-layer {k}x{k} kernels with "
               f"R² ≥ {g['threshold']} (median R² {g['trained']['median_r2']:.2f}), against {100 * un:.0f}% for the "
               f"same network untrained (median {g['untrained']['median_r2']:.2f}).")
    if not g["meaningful"]:
        verdict = (f" With {k * k} pixels for 9 Gabor parameters almost any {k}x{k} kernel fits, so the fit cannot "
                   "show Gabor filters here; only the comparison with the untrained network means something, and it "
                   + ("shows more Gabor-like kernels after training." if tr - un >= 0.15 else
                      "shows fewer Gabor-like kernels after training: no Gabor filters." if un - tr >= 0.15 else
                      "shows no real difference: we do not claim Gabor filters."))
    elif tr - un >= 0.15 and tr >= 0.3:
        verdict = " Yes: training made the kernels clearly more Gabor-like than at initialization."
    elif tr >= 0.3:
        verdict = " Many kernels fit, but about as many as untrained ones: no evidence that training made Gabor filters."
    else:
        verdict = " No: few kernels are Gabor-like."
    corr = g.get("weight_correlation_trained_untrained")
    if corr is not None and corr > 0.9:
        verdict += (f" The trained weights still correlate {corr:.2f} with their initialization: training moved the "
                    "first layer little.")
    return numbers + verdict


def answer_ablation(arch: str, table: dict, lr) -> list:
    """Problem 2 (c)-(d): the impact of batch norm and dropout, from ablation.json."""
    rows = {r["variant"]: r for r in table["variants"]}
    ok = {k: r for k, r in rows.items() if r["val_accuracy"] == r["val_accuracy"]}  # NaN: every seed diverged
    noise = max([r.get("val_accuracy_std", 0) for r in ok.values()] + [NOTICEABLE / 100])
    seeds = table.get("seeds", 1)
    text = [f"{ARCH_NAMES[arch]}: four variants, identical except for batch norm and dropout"
            + (f", all at peak learning rate {lr}" if lr else "")
            + f", {plural(max(r['epochs'] for r in ok.values()) if ok else 0, 'epoch')}, {plural(seeds, 'seed')} each."]
    diverged = [r["label"] for r in rows.values() if r["diverged"]]
    if diverged:
        text.append(f"Diverged (loss became NaN): {', '.join(diverged)}.")

    def effect(on, off, what):
        pairs = [(ok[a]["val_accuracy"], ok[b]["val_accuracy"]) for a, b in zip(on, off) if a in ok and b in ok]
        if not pairs:
            return f"The effect of {what} cannot be measured: its variants did not finish."
        delta = sum(a - b for a, b in pairs) / len(pairs)
        size = (f"{100 * delta:+.2f} points of validation accuracy on average over the {len(pairs)} paired variants")
        unclear = abs(delta) < (2 * noise if seeds > 1 else NOTICEABLE / 100)
        if unclear:
            return f"{what.capitalize()}: {size}, within the noise of {plural(seeds, 'seed')}: no clear effect at this budget."
        return f"{what.capitalize()} {'helps' if delta > 0 else 'hurts'}: {size}."
    text.append(effect(["bn-drop", "bn-nodrop"], ["nobn-drop", "nobn-nodrop"], "batch norm"))
    text.append(effect(["bn-drop", "nobn-drop"], ["bn-nodrop", "nobn-nodrop"], "dropout"))
    gaps = {k: r["loss_gap"] for k, r in ok.items()}
    if "bn-drop" in gaps and "bn-nodrop" in gaps:
        shrink = gaps["bn-nodrop"] - gaps["bn-drop"]
        if max(gaps["bn-drop"], gaps["bn-nodrop"]) <= 0:  # no overfitting to reduce
            verdict = ("neither overfits yet (the validation loss is below the training loss, which is "
                       "measured on augmented batches with dropout on), so dropout has nothing to regularize here.")
        else:
            verdict = "dropout " + ("narrows the gap." if shrink > 0.01 else "does not narrow it here.")
        text.append(f"Overfitting, as the final validation minus training loss: {gaps['bn-drop']:.3f} with dropout, "
                    f"{gaps['bn-nodrop']:.3f} without (batch norm on): " + verdict)
    best = max(ok.values(), key=lambda r: r["val_accuracy"]) if ok else None
    if best:
        text.append(f"Best variant: {best['label']}, {pct(best['val_accuracy'])} validation and "
                    f"{pct(best['test_accuracy'])} test accuracy.")
    return text


CAM_METHODS = ("CAM", "Grad-CAM")   # sanity.json's other methods are gradients: guided backprop's section


def sanity_verdicts(s: dict, cams: bool) -> list:
    """Per method (the CAM methods, or the gradient ones): mean rank correlation with the trained
    maps after re-initializing the top layer, and after all layers."""
    first, last = s["steps"][1] if len(s["steps"]) > 1 else s["steps"][0], s["steps"][-1]
    out = []
    for m in [m for m in s["methods"] if (m in CAM_METHODS) == cams]:
        rho = last[m]["mean"]
        if abs(rho) < SANITY_PASS:
            verdict = "passes: the maps depend on the learned weights"
        elif rho > 0:
            verdict = ("fails: much of the map survives random weights, so it reflects the image (its edges) more "
                       "than what the network learned")
        else:
            verdict = ("fails: random weights turn the map upside down but keep its structure, which therefore "
                       "comes from the image more than from what the network learned")
        out.append(f"{m}: rank correlation {first[m]['mean']:.2f} after re-initializing {first['layer']}, "
                   f"{rho:.2f} after all {last['randomized']} layers - {verdict}.")
    return out


def answer_saliency(arch: str, ex: dict, what: str) -> list:
    """What the CAM / guided backprop examples and the sanity check show, from their json files."""
    examples = ex["examples"]
    right = [e for e in examples if e["correct"]]
    wrong = [e for e in examples if not e["correct"]]
    conf = lambda es: f"{100 * sum(e['confidence'] for e in es) / len(es):.0f}%" if es else "n/a"
    text = [f"{ARCH_NAMES[arch]} ({ex['model']}), {what}: {len(right)} correctly classified test images (mean confidence "
            f"{conf(right)}) and {len(wrong)} wrongly classified ones (mean confidence {conf(wrong)}). Each map explains "
            "the predicted class, so for a wrong image it shows the evidence the network found for the wrong class"
            + (": " + ", ".join(f"#{e['index']} {e['true']} taken for {e['predicted']}" for e in wrong[:4]) if wrong else "")
            + "."]
    if ex.get("note"):
        text.append(ex["note"] + ".")
    return text


def dataset_text(d: dict) -> list:
    """Problem 6: class balance and train/test duplicates of each dataset, from dataset.json."""
    out = []
    if d.get("limit"):
        out.append(f"Computed on the first {d['limit']:,} images of each split only (--limit).")
    for r in d["datasets"]:
        shares = [c / max(sum(r["train_counts"]), 1) for c in r["train_counts"]]
        balance = ("perfectly balanced" if max(r["train_counts"]) == min(r["train_counts"]) else
                   f"class shares between {100 * min(shares):.1f}% and {100 * max(shares):.1f}%")
        out.append(f"{r['title']}: {r['train_images']:,} training and {r['test_images']:,} test images, training set "
                   f"{balance}. {r['exact_duplicates']} test images are exact copies of a training image; "
                   f"{r['near_duplicates']} more are near duplicates (mean absolute pixel difference ≤ "
                   f"{r['near_threshold_mad']:g} of 255 to a training image), {r['near_label_differs']} of them with a "
                   f"different label; {r['hash_identical']} share their 64-bit difference hash with a training image. "
                   "Near duplicates at other thresholds: "
                   + ", ".join(f"≤{t}: {n}" for t, n in r["near_by_threshold"].items()) + ".")
    total = sum(r["exact_duplicates"] + r["near_duplicates"] for r in d["datasets"])
    out.append("A test image that is (nearly) in the training set measures memory, not generalization; "
               + ("their number here is small next to the test sets, so the accuracies above are hardly affected."
                  if total < 0.01 * sum(r["test_images"] for r in d["datasets"]) else
                  f"here {total} such images are enough to inflate the test accuracies a little."))
    return out


# ---- the report's content: sections of text blocks and figures ---------------------------------------

@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)     # (style, text): p, h2, mono
    figures: list = field(default_factory=list)    # (png path, caption)

    def p(self, *texts):
        self.blocks += [("p", t) for t in texts]

    def h(self, text):
        self.blocks.append(("h2", text))

    def mono(self, text):
        self.blocks += [("mono", line) for line in text.splitlines()]

    def fig(self, path, caption):
        if path is not None:
            self.figures.append((path, caption))


def title_section(d, missing) -> Section:
    e, s = d["env"], d["summary"]
    sec = Section("convlens report: Fashion-MNIST, CIFAR-10, kernels and saliency")
    sec.p(f"Built {time.strftime('%Y-%m-%d %H:%M')} from {d.get('runs_dir', 'runs/')}.")
    limit = tiny_run(d)
    if limit:
        sec.p(f"TINY TEST RUN (--limit {limit}: {limit} images, one epoch, small networks). Its numbers say nothing "
              "about the methods; run python report/run_all.py --preset quick or --preset full for real ones.")
    sec.h("Hardware")
    devices = sorted({m["device"] for m in all_metrics(d) if m.get("device")})
    sec.p(f"CPU: {e['cpu']}, {e['cores']} cores" + (f", {e['memory_gb']} GB memory" if e["memory_gb"] else "")
          + f". GPU: {e['gpu']}. The runs trained on: {', '.join(devices) or 'unknown'} ({e['os']}).")
    sec.h("Software")
    sec.p(f"Python {e['python']}, torch {e['torch']}, torchvision {e['torchvision']}, numpy {e['numpy']}, "
          f"matplotlib {e['matplotlib']}, scipy {e['scipy']}, scikit-learn {e['scikit-learn']}.")
    sec.h("Data")
    sec.p(*data_source(d))
    sec.h("Total time")
    sec.p(total_time(d))
    if s:
        sec.mono(run_table(s))
    if missing:
        sec.p(f"{len(missing)} input file(s) are missing: see the last page.")
    return sec


def all_metrics(d) -> list:
    runs = [d["fashion"][m]["metrics"] for m in ("ffn", "cnn")] + [d["cifar"][a]["metrics"] for a in ("dense", "gap")]
    return [m for m in runs if m]


def data_source(d) -> list:
    dirs = sorted({m["config"].get("data_dir") for m in all_metrics(d) if m.get("config", {}).get("data_dir")})
    cifar = [Path(x) / "cifar10.npz" for x in dirs]
    jpeg = any(p.exists() and p.stat().st_size == JPEG_COPY_BYTES for p in cifar)
    text = [("Fashion-MNIST (Zalando SE, MIT License; 60,000 training and 10,000 test images) and CIFAR-10 "
             "(Krizhevsky 2009; 50,000 and 10,000), read from " + (", ".join(dirs) or "the data folder")
             + " as .npz files (downloaded through torchvision where missing).")]
    caveat = ("the offline CIFAR-10 copy in shared/data was decoded from JPEG (quality 75, PSNR about 30 dB), so "
              "expect accuracies about 2-3 points below published ones on the original pixels; compare CIFAR-10 "
              "numbers only with numbers measured on the same copy.")
    text.append(("CIFAR-10 caveat: these runs used the JPEG-degraded copy - " if jpeg else
                 "CIFAR-10 caveat, if the runs used it: ") + caveat)
    return text


def total_time(d) -> str:
    s = d["summary"]
    if s:
        return (f"{fmt_time(s['total_seconds'])} of compute for the results in this report: the sum of the wall times "
                f"of the {sum(r.get('status') in ('ran', 'skipped') for r in s['steps'])} run_all.py steps that made "
                f"them (preset {s['preset']}" + (f", --limit {s['limit']}" if s.get("limit") else "") + ").")
    seconds = sum(m.get("wall_seconds", 0) for m in all_metrics(d))
    if not seconds:
        return "Unknown: neither run_all.json nor any training run's metrics.json was found."
    return (f"{fmt_time(seconds)}: the training runs' own wall times (metrics.json); no run_all.json, so kernel "
            "visualization, saliency and the ablation are not included.")


def run_table(s) -> str:
    lines = [f"{'step':<30} {'status':<9} {'seconds':>8}  key figure"]
    lines += [f"{r['step']:<30} {r['status']:<9} {r.get('made_seconds', r.get('seconds', 0)) or 0:8.1f}  "
              f"{(r.get('key') or r.get('reason') or '')[:50]}" for r in s["steps"]]
    return "\n".join(lines)


def fashion_sections(d) -> list:
    f, k = d["fashion"], d["fashion_kernels"]
    names = {"ffn": "Feed-forward network", "cnn": "CNN"}
    sec = Section("1. Fashion-MNIST: the two networks (questions 1-4)")
    for m in ("ffn", "cnn"):
        r = f[m]["metrics"]
        if r:
            c = r["config"]
            arch = (f"hidden layers {c.get('hidden')}" if m == "ffn" else
                    f"conv channels {c.get('channels')}, {c.get('convs_per_block') or 1} conv(s) per block, "
                    f"{c.get('kernel_size')}x{c.get('kernel_size')} kernels, "
                    f"dense head {c.get('hidden')}")
            sec.p(f"{names[m]}: {r['parameters']:,} parameters ({arch}, dropout {c.get('dropout')}); trained "
                  f"{plural(c['epochs'], 'epoch')} on {r['train_images']:,} images ({c.get('optimizer')}, peak lr {c.get('lr')}) "
                  f"in {r['wall_seconds']:.0f} s; test accuracy {pct(r['test_accuracy'])} on the 10,000 test images "
                  f"(the goal is at least 80%: {'met' if r['test_accuracy'] >= 0.8 else 'NOT met'}).")
        sec.fig(f[m]["examples"], f"{names[m]}: one correctly and one wrongly classified test image, with the "
                                  "predicted and the true class (question 1).")
        sec.fig(f[m]["loss"], f"{names[m]}: training loss per step (raw and smoothed) and test loss per epoch (question 2)."
                + (f" Parameters: {r['parameters']:,} (question 3)." if r else ""))
        sec.fig(f[m]["confusion_matrix"], f"{names[m]}: confusion matrix on the test set, rows the true class, columns "
                                          "the predicted one (question 4)"
                + (f"; test accuracy {pct(r['test_accuracy'])}." if r else "."))
    kern = Section("2. Fashion-MNIST CNN: kernels, filtered images and feature maps (questions 5-7)")
    if k["gabor"]:
        kern.p(gabor_sentence(k["gabor"], "Fashion-MNIST CNN"))
    kern.fig(k["kernels"], "The kernels of the CNN's first convolutional layer after training, each min-max "
                           "normalized to [0, 1] on its own (question 5).")
    kern.fig(k["filtered"], "A test image convolved with each first-layer kernel, each output normalized to [0, 1] "
                            "(question 6).")
    kern.fig(k["feature_maps"], "The sample image through the CNN: the first channel after every convolution + "
                                "activation and every pooling stage, labelled with the layer that made it (question 7).")
    kern.fig(k["gabor_png"], "The first-layer kernels most like a 2-D Gabor function, above their fitted Gabor "
                             "functions; the title gives the share of trained and untrained kernels that fit.")
    qa = Section("3. Conceptual questions (questions 8-9)")
    if f["ffn"]["metrics"] and f["cnn"]["metrics"]:
        qa.h("8. Why does the CNN perform better?")
        qa.p(*answer_cnn_vs_ffn(f["ffn"]["metrics"], f["cnn"]["metrics"]))
    if f["cnn"]["metrics"]:
        qa.h("9. How do the features evolve through the layers?")
        qa.p(*answer_feature_path(f["cnn"]["metrics"], k["gabor"]))
    return [sec, kern, qa]


def mytorch_section(d) -> Section:
    sec = Section("4. MyTorch Conv2D (problem 1)")
    c = d["mytorch"]
    if c:
        worst = max(max_error(r) for r in c["cases"])
        sec.p(f"The NumPy Conv2D (mytorch/conv.py) against torch.nn.functional.conv2d and autograd in float64: "
              f"{c['passed']} of {c['total']} cases pass (every error of Z, dL/dA, dL/dW, dL/db within "
              f"{c['tolerance']:g}; largest error {worst:.1e})."
              + ("" if c["passed"] == c["total"] else " FAILING: "
                 + ", ".join(r["case"] for r in c["cases"] if not r["passed"]) + "."))
        lines = [f"{'case':<34} {'A':<12} {'W':<11} {'max error':>9}  {'pass':<4} {'mytorch ms':>10} {'torch ms':>8}"]
        lines += [f"{r['case'][:34]:<34} {r['A']:<12} {r['W']:<11} "
                  f"{max_error(r):9.1e}  "
                  f"{'yes' if r['passed'] else 'NO':<4} {r['mytorch_ms']:10.2f} {r['torch_ms']:8.2f}" for r in c["cases"]]
        sec.mono("\n".join(lines))
    return sec


def max_error(case: dict) -> float:
    """Largest of a mytorch case's errors (dL/db is None for a layer without bias)."""
    return max(case[k] for k in ("err_Z", "err_dLdA", "err_dLdW", "err_dLdb") if case[k] is not None)


def cifar_section(d) -> Section:
    sec = Section("5. CIFAR-10: the two networks (problem 2)")
    done = {a: d["cifar"][a]["metrics"] for a in ("dense", "gap") if d["cifar"][a]["metrics"]}
    for arch in ("dense", "gap"):
        m, text = d["cifar"][arch]["metrics"], d["cifar"][arch]["architecture"]
        sec.h(f"({'a' if arch == 'dense' else 'b'}) {ARCH_NAMES[arch]}")
        if m:
            c = m["config"]
            sec.p(f"Final accuracy: validation {pct(m['val_accuracy'])} (flip TTA {pct(m['val_accuracy_tta'])}) on "
                  f"{m['val_images']:,} held-out training images, test {pct(m['test_accuracy'])} (flip TTA "
                  f"{pct(m['test_accuracy_tta'])}) on {m['test_images']:,} test images; {m['parameters']:,} parameters; "
                  f"{plural(m['epochs'], 'epoch')} on {m['train_images']:,} images in {m['train_seconds']:.0f} s on {m['device']}.",
                  f"How it was reached: the architecture and training settings are cifar10.py's defaults for preset "
                  f"'{c.get('preset')}' (batch {c.get('batch_size')}, SGD with Nesterov momentum, one-cycle peak lr "
                  f"{c.get('lr')}, label smoothing {c.get('label_smoothing')}, flips, {c.get('crop')}-pixel shifts), "
                  "chosen on the validation split alone; the test set was used once, at the end. Batch norm and "
                  "dropout: see the ablation (section 6).")
        if text:
            sec.mono(architecture_lines(text))
    if len(done) == 2:
        dn, gp = done["dense"], done["gap"]
        sec.p(f"The GAP network reaches {pct(gp['val_accuracy'])} validation accuracy against the dense network's "
              f"{pct(dn['val_accuracy'])} ({points(gp['val_accuracy'], dn['val_accuracy'])}) with "
              f"{gp['parameters']:,} against {dn['parameters']:,} parameters.")
    for arch in ("dense", "gap"):
        m = d["cifar"][arch]["metrics"]
        smoothing = f", label smoothing {m['config'].get('label_smoothing')}" if m else ""
        sec.fig(d["cifar"][arch]["loss"], f"CIFAR-10 {ARCH_NAMES[arch]}: training loss per step and validation loss "
                                          "per epoch (problem 2 (e)). The training loss is measured on augmented "
                                          f"batches with dropout on{smoothing}, so it lies above the validation "
                                          "loss, which is plain cross-entropy in eval mode"
                + (f"; final validation accuracy {pct(m['val_accuracy'])}, test {pct(m['test_accuracy'])}." if m else "."))
    return sec


def architecture_lines(text: str) -> str:
    """architecture.txt (a constructor line, a markdown table, notes) with the table as aligned columns."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    notes = [line for line in text.splitlines() if line and not line.startswith("|")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    table = ["  ".join(cell.rjust(w) if i == len(r) - 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(notes[:1] + table + notes[1:])


def ablation_section(d) -> Section:
    sec = Section("6. Batch norm and dropout ablation (problem 2 (c), (d))")
    sec.p("Each network was trained four times - batch norm on/off x dropout on/off - with everything else equal, "
          "the learning rate included. run_all.py sets it to 0.1 because, as cifar10.py documents, the networks "
          "without batch norm do not train at the quick preset's 0.4.")
    for arch in ("dense", "gap"):
        a = d["ablation"][arch]
        if a["table"]:
            sec.h(ARCH_NAMES[arch])
            sec.p(*answer_ablation(arch, a["table"], a["lr"]))
            sec.mono(ablation_lines(a["table"]))
        sec.fig(a["png"], f"{ARCH_NAMES[arch]}: validation accuracy and loss per epoch of the four ablation variants.")
    return sec


def ablation_lines(table: dict) -> str:
    nan = lambda x, f: "diverged" if x != x else f.format(x)
    lines = [f"{'variant':<26} {'val %':>7} {'test %':>7} {'val-train loss':>14} {'seconds':>8}"]
    lines += [f"{r['label']:<26} {nan(100 * r['val_accuracy'], '{:7.2f}'):>7} {nan(100 * r['test_accuracy'], '{:7.2f}'):>7} "
              f"{nan(r['loss_gap'], '{:14.3f}'):>14} {nan(r['train_seconds'], '{:8.0f}'):>8}" for r in table["variants"]]
    return "\n".join(lines)


def filters_section(d) -> Section:
    sec = Section("7. Feature maps and filters (problem 3)")
    for arch in ("dense", "gap"):
        k = d["kernels"][arch]
        if k["gabor"]:
            sec.p(gabor_sentence(k["gabor"], ARCH_NAMES[arch]))
        for layer, maps, _ in k["layers"]:
            sec.fig(maps, f"{ARCH_NAMES[arch]}: feature maps of conv layer {layer} (after its activation) for one test "
                          "image, one panel per output channel (problem 3 (a)).")
        for layer, _, filters in k["layers"]:
            sec.fig(filters, f"{ARCH_NAMES[arch]}: learned filters of conv layer {layer}, one panel per output channel "
                             "(problem 3 (b)).")
        g = k["gabor"]
        sec.fig(k["gabor_png"], f"{ARCH_NAMES[arch]}: first-layer kernels most like a Gabor function and their fits"
                + (f"; {100 * g['trained']['share_above_threshold']:.0f}% of trained and "
                   f"{100 * g['untrained']['share_above_threshold']:.0f}% of untrained kernels reach "
                   f"R² ≥ {g['threshold']}." if g else "."))
    return sec


def saliency_sections(d) -> list:
    cam = Section("8. Class activation maps (problem 4)")
    gbp = Section("9. Guided backpropagation and the sanity check (problem 5)")
    for arch in ("dense", "gap"):
        s = d["saliency"][arch]
        name = "CAM" if s["method"] == "cam" else "Grad-CAM"
        if s["cam"]:
            cam.p(*answer_saliency(arch, s["cam"], name))
        if s["sanity"]:
            cam.p("Randomization sanity check (figures in section 9):", *sanity_verdicts(s["sanity"], cams=True))
        cam.fig(s["cam_png"], f"{ARCH_NAMES[arch]}: {name} of correctly (green) and wrongly (red) classified test "
                              "images, overlaid on each image (red: strongest evidence for the predicted class)."
                + ("" if s["method"] == "cam" else " CAM needs global average pooling, so this network gets Grad-CAM."))
        if s["gbp"]:
            gbp.p(*answer_saliency(arch, s["gbp"], "guided backpropagation"))
        gbp.fig(s["gbp_png"], f"{ARCH_NAMES[arch]}: guided backpropagation of correctly and wrongly classified test "
                              "images: Grad-CAM, the guided gradient (gray = 0), its magnitude, and guided Grad-CAM.")
    for arch in ("dense", "gap"):
        s = d["saliency"][arch]
        if s["sanity"]:
            gbp.p(f"Sanity check, {ARCH_NAMES[arch]}:", *sanity_verdicts(s["sanity"], cams=False))
        gbp.fig(s["sanity_png"], f"{ARCH_NAMES[arch]}: cascading randomization sanity check (Adebayo et al. 2018): "
                                 "rank correlation of each method's maps with the trained model's as the layers are "
                                 "re-initialized from the output down; a method that depends on the weights drops to 0.")
    return [cam, gbp]


def dataset_section(d) -> Section:
    sec = Section("10. Datasets: class balance and train/test duplicates (problem 6)")
    if d["dataset"]["json"]:
        sec.p(*dataset_text(d["dataset"]["json"]))
    sec.fig(d["dataset"]["balance"], "Share of each class in the training and test split of both datasets.")
    sec.fig(d["dataset"]["pairs"], "Test images (upper rows) and their nearest training images (lower rows), from the "
                                   "closest pair to pairs near the near-duplicate threshold.")
    return sec


def missing_section(missing: dict) -> Section:
    sec = Section("Missing inputs")
    sec.p(f"{len(missing)} file(s) this report reads were not found; the sections above are built from the rest. "
          "Each command below makes the files listed under it (or run everything: "
          "python report/run_all.py --preset quick).")
    by_command = {}
    for path, command in missing.items():
        by_command.setdefault(command, []).append(path)
    for command, paths in by_command.items():
        sec.blocks += [("mono", line) for line in textwrap.wrap("$ " + command, 110, subsequent_indent="    ")]
        sec.blocks += [("mono", "    " + path) for path in paths]
    return sec


def sections(d, missing) -> list:
    out = []
    for build in (fashion_sections, mytorch_section, cifar_section, ablation_section, filters_section,
                  saliency_sections, dataset_section):
        made = safely(build, missing, d)
        out += made if isinstance(made, list) else [made]
    out.insert(0, safely(title_section, missing, d, missing))
    for sec in out:
        if not sec.blocks and not sec.figures:
            sec.p("Nothing to show: every input of this section is missing (see Missing inputs, the last page).")
    return out + ([missing_section(missing)] if missing else [])


def safely(build, missing: dict, *args):
    """build(*args); if the files it reads parse but lack what it needs (an older or foreign run),
    a section that says so, and an entry on the missing page, instead of a traceback."""
    try:
        return build(*args)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, ZeroDivisionError) as err:
        name = build.__name__.removesuffix("s").removesuffix("_section")
        missing[f"the inputs of the {name} section"] = (f"unusable ({type(err).__name__}: {err}): files from an "
                                                      "older or foreign run; python report/run_all.py --force")
        return Section(f"{name}: inputs unusable")


# ---- layout: sections to pages ------------------------------------------------------------------------

PAGE_W, PAGE_H, MARGIN = 8.27, 11.69, 0.7      # A4 portrait, inches
USABLE_H = (PAGE_H - 2 * MARGIN) * 72 - 24     # points for content, less the footer
STYLES = {  # font size (pt), weight, family, line height factor, wrap width (characters)
    "title": (17, "bold", "sans-serif", 1.35, 55),
    "h1": (13, "bold", "sans-serif", 1.4, 66),
    "h2": (10.5, "bold", "sans-serif", 1.5, 85),
    "p": (9.5, "normal", "sans-serif", 1.38, 98),
    "mono": (7, "normal", "monospace", 1.3, 118),
}
GAP_AFTER = {"p": 5, "h2": 1, "title": 8, "h1": 8, "mono": 0}   # points after each block
PNG_DPI, MAX_ZOOM = 130, 1.5   # plots.save's resolution; small figures are enlarged at most this much


@dataclass
class Page:
    section: str
    items: list = field(default_factory=list)  # ("text", y, style, line) or ("figure", y, path, w, h, caption lines)


def wrap(style: str, text: str) -> list:
    width = STYLES[style][4]
    if style == "mono":
        return textwrap.wrap(text, width, subsequent_indent="  ", drop_whitespace=False) or [""]
    return textwrap.wrap(text, width) or [""]


def line_height(style: str) -> float:
    size, _, _, factor, _ = STYLES[style]
    return size * factor


def png_size(path) -> tuple[int, int] | None:
    """(width, height) in pixels from the PNG header, without decoding the image; None if it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:  # a folder, say
        return None
    size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return size if head[:8] == b"\x89PNG\r\n\x1a\n" and min(size) > 0 else None


def figure_box(path, caption_h: float) -> tuple[float, float]:
    """Display size (points) of a figure: the page width at most, its natural size x MAX_ZOOM at
    most, and short enough to share a page with its caption."""
    w_px, h_px = png_size(path) or (800, 600)  # unreadable: draw_page says so
    natural = (w_px / PNG_DPI * 72, h_px / PNG_DPI * 72)
    scale = min((PAGE_W - 2 * MARGIN) * 72 / natural[0], MAX_ZOOM, (USABLE_H - caption_h - 20) / natural[1])
    return natural[0] * scale, natural[1] * scale


class Flow:
    """Places text lines and figures top-down, opening a new page when the next one does not fit."""

    def __init__(self):
        self.pages, self.y = [], USABLE_H + 1

    def new_page(self, section):
        self.pages.append(Page(section))
        self.y = 0.0

    def place(self, section, height, item):
        if self.y + height > USABLE_H:
            self.new_page(section)
        self.pages[-1].items.append((item[0], self.y, *item[1:]))
        self.y += height

    def section(self, sec: "Section", first_style: str, number: int) -> int:
        self.new_page(sec.title)
        for style, text in [(first_style, sec.title)] + sec.blocks:
            lines = wrap(style, text)
            for j, line in enumerate(lines):
                gap = GAP_AFTER[style] if j == len(lines) - 1 else 0
                self.place(sec.title, line_height(style) + gap, ("text", style, line))
        for path, caption in sec.figures:
            number += 1
            cap = wrap("p", f"Figure {number}: {caption}")
            cap_h = len(cap) * line_height("p")
            w, h = figure_box(path, cap_h)
            self.place(sec.title, h + cap_h + 22, ("figure", path, w, h, cap))
        return number


def layout(secs: list) -> list:
    """Pages in order: each section from a new page, its text, then its figures, each with its caption."""
    flow, number = Flow(), 0
    for i, sec in enumerate(secs):
        number = flow.section(sec, "title" if i == 0 else "h1", number)
    return flow.pages


def contents(secs: list, pages: list | None) -> list:
    """Contents lines for the title page: each section and the page it starts on ('?' before the
    first layout; the line count never changes, so filling in the numbers moves no page)."""
    starts = {}
    for n, page in enumerate(pages or [], 1):
        starts.setdefault(page.section, n)
    return [f"{sec.title[:92]:.<100}{starts.get(sec.title, '?'):>4}" for sec in secs[1:]]


# ---- drawing -------------------------------------------------------------------------------------------

def fig_y(y_pt: float) -> float:
    """Figure coordinate (0 bottom, 1 top) of a distance in points below the top margin."""
    return 1 - (MARGIN * 72 + y_pt) / (PAGE_H * 72)


def draw_line(fig, y, style, line):
    size, weight, family, _, _ = STYLES[style]
    fig.text(MARGIN / PAGE_W, fig_y(y), line, fontsize=size, fontweight=weight, family=family, va="top", ha="left")


def draw_figure(fig, y, path, w, h, caption):
    """The PNG centred at y (points below the top margin), w x h points, its caption below it."""
    y += 6
    ax = fig.add_axes([(PAGE_W * 72 - w) / 2 / (PAGE_W * 72), fig_y(y + h), w / (PAGE_W * 72), h / (PAGE_H * 72)])
    ax.axis("off")
    try:
        ax.imshow(plt.imread(path), interpolation="none", aspect="auto")  # embedded as is, not resampled
    except (OSError, ValueError, SyntaxError) as err:
        ax.text(0.5, 0.5, f"cannot read {Path(path).name}: {err}", ha="center", va="center", fontsize=9)
    y += h + 6
    for line in caption:
        draw_line(fig, y, "p", line)
        y += line_height("p")


def draw_page(page: Page, n: int, total: int):
    fig = plt.figure(figsize=(PAGE_W, PAGE_H))
    for kind, y, *rest in page.items:
        (draw_line if kind == "text" else draw_figure)(fig, y, *rest)
    short = "title page" if n == 1 else page.section.split(":")[0].split(" (")[0]
    fig.text(0.5, 0.35 / PAGE_H, f"convlens report - {short} - page {n} of {total}", fontsize=7, color="0.4",
             ha="center", va="bottom")
    return fig


def write_pdf(pages: list, out: Path):
    """Draw every page into `out` (a temporary file renamed at the end)."""
    from matplotlib.backends.backend_pdf import PdfPages

    with files.atomic_path(out) as tmp, PdfPages(tmp) as pdf:
        info = pdf.infodict()
        info["Title"], info["Subject"] = "convlens report", "Fashion-MNIST and CIFAR-10 CNNs, kernels and saliency"
        for n, page in enumerate(pages, 1):
            fig = draw_page(page, n, len(pages))
            pdf.savefig(fig)
            plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    d, missing = collect(args.runs_dir)
    d["runs_dir"] = str(args.runs_dir)
    secs = sections(d, missing)
    secs[0].h("Contents")
    placeholder = len(secs[0].blocks)
    secs[0].blocks += [("mono", line) for line in contents(secs, None)]
    secs[0].blocks[placeholder:] = [("mono", line) for line in contents(secs, layout(secs))]
    pages = layout(secs)
    write_pdf(pages, args.out)
    figures = sum(item[0] == "figure" for page in pages for item in page.items)
    print(f"{len(pages)} pages ({figures} figures, {len(secs)} sections"
          + (f", {len(missing)} missing inputs listed on the last page" if missing else "") + f") -> {args.out}")


if __name__ == "__main__":
    cli.run(main)
