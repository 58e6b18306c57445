"""Accuracy against wall time: every benchmarked default and every recorded trial, one panel per
network, float32 and bfloat16 marked, the targets drawn in.

Run:  python benchmarks/time_to_accuracy.py     # -> benchmarks/results/time_to_accuracy.png

Reads benchmarks/results/{fashionmnist,cifar10}.json (the defaults' test accuracy, flip-averaged
where recorded, as every default reports it, and whole-process wall time, from
bench_fashionmnist.py and bench_cifar10.py; a result of a former default, recorded with other
epochs, or other epochs at low resolution, than today's, is left out) and {speed,design}_trials.json (the
trials' validation accuracy and their recorded seconds, for those timed alone on the machine). A
target (today's, from the benchmarks)
is the shaded corner a run must reach: at least its accuracy within its time. The float32
targets are set for a CPU with AVX512 held to AVX2 (the reference condition); a CPU with AVX2 only
takes about twice as long, so the defaults run there get their own marker (the trials' records do
not always name their CPU).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402

import files  # noqa: E402
from benchmarks.bench_cifar10 import CASES  # noqa: E402
from benchmarks.bench_fashionmnist import TARGETS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PANELS = {"ffn": "Fashion-MNIST FFN", "cnn": "Fashion-MNIST CNN",
          "dense": "CIFAR-10 VGG-style (dense head)", "gap": "CIFAR-10 ResNet-style (GAP)"}


def today_schedule(panel: str, kind: str) -> tuple[int, int]:
    """(epochs, of them at low resolution) of today's default (or quick preset) of a panel's network."""
    if panel in ("ffn", "cnn"):
        from fashionmnist import DEFAULTS
        return DEFAULTS[panel]["epochs"], 0
    from cifar10 import DEFAULTS
    from training import TrainConfig
    row = DEFAULTS[(panel, "quick" if kind == "quick" else "default")]
    return row["epochs"], TrainConfig(epochs=row["epochs"], low_res=row["low_res"],
                                      low_res_fraction=row.get("low_res_fraction", 0)).low_res_epochs


def points() -> dict:
    """panel -> list of (seconds, accuracy, kind, precision) with kind "default", "quick" or "trial"
    and precision "bf16", "float32" or "float32-avx2" (float32 on a CPU with AVX2 only)."""
    out = {k: [] for k in PANELS}
    targets = {k: set() for k in PANELS}
    for name in ("fashionmnist.json", "cifar10.json"):
        for key, r in ((files.read_json_or_none(RESULTS / name) or {}).get("cases") or {}).items():
            case = key.split()[0]
            panel, kind = case.split("-")[0], "quick" if case.endswith("-quick") else "default"
            if panel not in PANELS or case.endswith(("-large", "-gpu")) or "condition" not in r:
                continue
            if (r.get("epochs"), r.get("low_res_epochs", 0)) != today_schedule(panel, kind):  # a former default
                continue
            bf16 = bool(r.get("cpu_bf16")) or (r["condition"] == "native" and r["machine"].get("cpu_bf16"))
            accuracy = r.get("test_accuracy_tta") or r["test_accuracy"]  # flip-averaged, as the defaults report
            out[panel].append((r["wall_seconds"], accuracy, kind, precision(bf16, r["machine"])))
    for model, (acc, seconds) in TARGETS.items():  # today's targets, whatever a result recorded
        targets[model].add((seconds, acc, "default"))
    for name, case in CASES.items():
        if name in ("dense", "gap", "dense-quick", "gap-quick"):
            targets[name.split("-")[0]].add((case.target_seconds, case.target_accuracy,
                                             "quick" if name.endswith("-quick") else "default"))
    for name in ("speed_trials.json", "design_trials.json"):
        for t in (files.read_json_or_none(RESULTS / name) or {}).get("trials", []):
            for run in t.get("runs", []):
                alone = not t.get("conditions")  # a trial that shared the machine has no comparable time
                if t.get("arch") in PANELS and run.get("val_accuracy") and run.get("seconds") and alone:
                    bf16 = "bfloat16" in str(t.get("precision"))
                    # Float32 trials ran on either CPU, and not every record says which: one marker.
                    out[t["arch"]].append((run["seconds"], run["val_accuracy"], "trial", "bf16" if bf16 else "float32"))
    return out, targets


def precision(bf16: bool, machine: dict) -> str:
    """A benchmark's machine is read outside the float32 condition: cpu_bf16 False means a CPU
    without native bfloat16 (here: AVX2 only)."""
    if bf16:
        return "bf16"
    return "float32-avx2" if machine.get("cpu_bf16") is False else "float32"


MARKERS = {"float32": "o", "float32-avx2": "s", "bf16": "^"}


def plot(out: dict, targets: dict):
    import matplotlib
    import matplotlib.pyplot as plt

    import plots
    fig, axes = plt.subplots(2, 2, figsize=(plots.PRINT_WIDTH_IN, 5.6))
    style = {"default": dict(s=36, edgecolors="k"), "quick": dict(s=36, edgecolors="k"),
             "trial": dict(s=18, facecolors="none")}
    colors = {"default": "C0", "quick": "C2", "trial": "C7"}
    for ax, (panel, title) in zip(axes.flat, PANELS.items()):
        xs = [p[0] for p in out[panel]] + [t[0] for t in targets[panel]] or [1.0]
        ys = [100 * p[1] for p in out[panel]] + [100 * t[1] for t in targets[panel]] or [50.0]
        xlim = (min(xs) / 1.5, max(xs) * 1.5)
        ylim = (min(ys) - 0.5, max(ys) + 0.5)
        for seconds, acc, kind in sorted(targets[panel]):  # the corner a run must reach
            ax.add_patch(plt.Rectangle((xlim[0], 100 * acc), seconds - xlim[0], ylim[1] - 100 * acc,
                                       color=colors[kind], alpha=0.08, lw=0))
            ax.axhline(100 * acc, color=colors[kind], lw=0.8, ls="--")
            ax.axvline(seconds, color=colors[kind], lw=0.8, ls="--")
        for kind in ("trial", "quick", "default"):
            for prec, marker in MARKERS.items():
                pts = [(s, 100 * a) for s, a, k, p in out[panel] if k == kind and p == prec]
                if pts:
                    px, py = zip(*pts)
                    c = colors[kind]
                    kw = {**style[kind], **({"edgecolors": c} if kind == "trial" else {"color": c})}
                    ax.scatter(px, py, marker=marker, **kw)
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))  # 50, 100, 200, 500...: a few in any range
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("wall seconds (log scale)", fontsize=7)
        ax.set_ylabel("accuracy (%)", fontsize=7)
        ax.tick_params(labelsize=7)
    handles = [plt.Line2D([], [], marker="o", ls="", color="C0", label="default, test accuracy"),
               plt.Line2D([], [], marker="o", ls="", color="C2", label="quick preset, test accuracy"),
               plt.Line2D([], [], marker="o", ls="", mfc="none", color="C7", label="trial, validation accuracy"),
               plt.Line2D([], [], marker="o", ls="", color="k", label="float32 (defaults: AVX512 CPU held to AVX2)"),
               plt.Line2D([], [], marker="s", ls="", color="k", label="float32 default, AVX2-only CPU (about 2x slower)"),
               plt.Line2D([], [], marker="^", ls="", color="k", label="bfloat16"),
               plt.Line2D([], [], ls="--", color="k", lw=0.8, label="target (reach the shaded corner)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS / "time_to_accuracy.png"), help="the figure to write")
    args = p.parse_args(argv)
    import plots
    plots.check_format(args.out)
    plots.save(plot(*points()), args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    cli.run(main, out_flag="--out")
