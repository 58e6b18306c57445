"""Draft answer to HW2 2(a)(b) / 2(b)(b), "how you arrived at this architecture", from the recorded
design trials.

Reads benchmarks/results/design_trials.json (repository root, not a run folder; written by
`python benchmarks/design_trials.py`): {"budget": {"minutes", "cores", "quick_minutes"},
"groups": {group: question}, "trials": [{"name", "group", "arch", "change", "epochs", "channels",
"runs": [{"seed", "val_accuracy", "test_accuracy", "seconds"}], "timing", "compared_to",
"decision", "reason", ...}]}. Accuracies are fractions of the 5,000 validation images.

    paragraphs = design_answer("gap", load_trials())   # list[str]; plain text, no markup
"""
import json
from pathlib import Path

from words import SPREAD_POINTS  # report/words.py: report/ is on the path of its callers

TRIALS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "design_trials.json"

START = {
    "dense": ("The network follows the VGG design (Simonyan and Zisserman, 2015): blocks of 3x3 "
              "convolutions, each block halving the image with 2x2 max pooling and doubling the channels, "
              "then fully connected layers on the flattened feature maps."),
    "gap": ("The network follows Network in Network (Lin et al., 2014) and ResNet (He et al., 2016): "
            "stages of 3x3 convolutions with residual blocks (a block whose input is added to its output), "
            "then global average pooling, which averages each final feature map to one number, and a single "
            "linear layer from those averages to the ten classes."),
}


def load_trials(path=TRIALS) -> dict | None:
    """The trials file, or None when it is missing or unreadable (the report then leaves this out)."""
    try:
        trials = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return trials if isinstance(trials, dict) and isinstance(trials.get("trials"), list) else None


def mean_val(trial: dict) -> float | None:
    """Mean validation accuracy over the trial's seeds, in percent."""
    vals = [r["val_accuracy"] for r in trial.get("runs", []) if r.get("val_accuracy") is not None]
    return 100 * sum(vals) / len(vals) if vals else None


def run_seconds(trial: dict) -> list:
    return [r["seconds"] for r in trial.get("runs", []) if r.get("seconds") is not None]


def seconds_text(trial: dict, kind: bool = True) -> str:
    secs = run_seconds(trial)
    if not secs and trial.get("seconds_range"):
        secs = trial["seconds_range"]
    if not secs:
        return ""
    lo, hi = min(secs), max(secs)
    span = f"{lo:,.0f} s" if round(lo) == round(hi) else f"{lo:,.0f}-{hi:,.0f} s"
    what = {"train": "of training", "wall_per_epoch": "per epoch"}.get(trial.get("timing"), "for the whole run")
    return f"{span} {what}" if kind else span


def seeds_text(trial: dict) -> str:
    n = len(trial.get("runs", []))
    return "one seed" if n == 1 else f"the mean of {n} seeds"


def same_seed_val(trial: dict, base: dict) -> float | None:
    """The base's mean validation accuracy over the trial's seeds, in percent, where the base ran
    more seeds than the trial and all of the trial's (a one-seed trial against a two-seed default
    is compared with the same seed's run, not with the mean of both)."""
    mine = {r["seed"] for r in trial.get("runs", [])}
    ref = {r["seed"]: r["val_accuracy"] for r in base.get("runs", []) if r.get("val_accuracy") is not None}
    if not mine or not mine < set(ref):
        return None
    return 100 * sum(ref[s] for s in mine) / len(mine)


def compare(trial: dict, base: dict) -> str:
    """'<change>: 75.40% validation accuracy against 81.04% (5.64 points lower), ...'."""
    val, ref, same = mean_val(trial), mean_val(base), same_seed_val(trial, base)
    words = f"{trial['change']}: {val:.2f}% validation accuracy ({seeds_text(trial)})"
    if ref is None:
        return words
    if same is not None:
        ref = same
    diff = val - ref
    if abs(diff) < SPREAD_POINTS:
        how = f"{abs(diff):.2f} points {'higher' if diff > 0 else 'lower'}, within the seed-to-seed spread"
    else:
        how = f"{abs(diff):.2f} points {'higher' if diff > 0 else 'lower'}"
    seeds = (" with the same seed" if len(trial["runs"]) == 1 else " with the same seeds") if same is not None else ""
    words += f" against {ref:.2f}% for {label(base)}{seeds} ({how}"
    words += seeds_compared(trial, base) + ")"
    t, b = seconds_text(trial), seconds_text(base, kind=False)
    if t and b and timed_alike(trial, base):
        words += f", in {t} against {b}"
    return words


def timed_alike(trial: dict, base: dict) -> bool:
    """Whether the two trials' seconds compare: timed the same way, in the same precision, on CPUs
    alike in bfloat16 support, and neither sharing the machine (a "conditions" entry)."""
    same = lambda get: get(trial) == get(base)  # noqa: E731
    return (same(lambda t: t.get("timing")) and same(lambda t: t.get("precision"))
            and same(lambda t: (t.get("machine") or {}).get("cpu_bf16"))
            and not trial.get("conditions") and not base.get("conditions"))


def label(trial: dict) -> str:
    """How a compared-to trial is named: its "label" if it has one, else the starting network for a
    baseline, else its change up to any colon."""
    if trial.get("label"):
        return trial["label"]
    return "the starting network" if trial["decision"] == "baseline" else trial["change"].split(":")[0]


def seeds_compared(trial: dict, base: dict) -> str:
    """'; higher with each of the 2 seeds' where both ran the same seeds (more than one)."""
    mine = {r["seed"]: r["val_accuracy"] for r in trial.get("runs", [])}
    ref = {r["seed"]: r["val_accuracy"] for r in base.get("runs", [])}
    if len(mine) < 2 or set(mine) != set(ref) or None in (*mine.values(), *ref.values()):
        return ""
    n = len(mine)
    counts = {"higher": sum(mine[s] > ref[s] for s in mine), "lower": sum(mine[s] < ref[s] for s in mine)}
    counts["the same"] = n - counts["higher"] - counts["lower"]
    for word, count in counts.items():
        if count == n:
            return f"; {word} with each of the {n} seeds"
    parts = [(w, c) for w, c in counts.items() if c]
    if len(parts) == 2 and parts[1][1] == 1:  # "higher with 1 of the 2 seeds, lower with the other"
        return f"; {parts[0][0]} with {parts[0][1]} of the {n} seeds, {parts[1][0]} with the other"
    return "; " + ", ".join(f"{w} with {c} of the {n} seeds" for w, c in parts)


def verdict(trial: dict, base: dict | None) -> str:
    decision, reason = trial["decision"], trial.get("reason", "")
    said = {"kept": "Kept", "dropped": "Not kept", "superseded": "Used for a while, then replaced"}[decision]
    text = f"{said}: {reason}."
    if base is not None and mean_val(trial) is not None and mean_val(base) is not None:
        diff = mean_val(trial) - mean_val(base)
        if decision == "kept" and diff <= -SPREAD_POINTS:
            text += " (It was less accurate; the time budget decided for it.)"
        if decision == "dropped" and diff >= SPREAD_POINTS and took_longer(trial, base):
            text += " (It was more accurate; the time it took decided against it.)"
    return text


def took_longer(trial: dict, base: dict) -> bool:
    """Whether the trial's mean time exceeds its base's, timed alike (else it is not known)."""
    mine, ref = run_seconds(trial), run_seconds(base)
    return bool(mine and ref and timed_alike(trial, base) and sum(mine) / len(mine) > sum(ref) / len(ref))


def group_paragraph(question: str, trials: list[dict], by_name: dict) -> str:
    question = question.strip()
    sentences = [question if question.endswith((".", "?")) or not question else question + "."]
    for trial in trials:
        if trial["decision"] == "baseline" or mean_val(trial) is None:
            continue
        base = by_name.get(trial.get("compared_to"))
        sentences.append(compare(trial, base) + ". " + verdict(trial, base)
                         if base and mean_val(base) is not None
                         else f"{trial['change']}: {mean_val(trial):.2f}% validation accuracy "
                              f"({seeds_text(trial)}). " + verdict(trial, None))
    return " ".join(s[0].upper() + s[1:] for s in sentences if s)


SEED_NOTE = "Most trials ran with one seed"  # opens design_answer's closing paragraph (not a group of trials)


def design_answer(arch: str, trials: dict | None) -> list[str]:
    """Paragraphs on how the `arch` ("dense" or "gap") network was reached: the published design it
    starts from, the time budget, and each recorded trial with its validation accuracy and decision."""
    paragraphs = [START[arch]]
    if not trials:
        return paragraphs + ["The trials that chose its size and training settings are not recorded here."]
    budget = trials.get("budget", {})
    if budget:
        rule = (f"one training run was to fit within {budget['minutes']} minutes on a {budget['cores']}-core CPU "
                f"in 32-bit floating point (a smaller variant within {budget['quick_minutes']} minutes)")
        if budget.get("later"):  # the budget was tightened after the first trials
            rule = f"at first {rule}; later {budget['later']}"
        paragraphs.append(
            f"Its size was set by a time budget: {rule}, so each change was weighed by the accuracy it adds "
            "against the time it costs (a target, not a promise: how long this run took depends on the machine "
            "it ran on, and is given with its results). Every trial was compared on 5,000 images held out of the "
            "training set (validation accuracy); the test set played no part in any choice.")
    mine = [t for t in trials["trials"] if t.get("arch") == arch]
    by_name = {t["name"]: t for t in trials["trials"]}
    groups = trials.get("groups", {})
    for group in dict.fromkeys(t.get("group") for t in mine):
        members = [t for t in mine if t.get("group") == group]
        if any(t["decision"] != "baseline" for t in members):
            paragraphs.append(group_paragraph(groups.get(group, ""), members, by_name))
    if any(len(t.get("runs", [])) == 1 for t in mine):
        paragraphs.append(f"{SEED_NOTE}: differences below {SPREAD_POINTS} points are within "
                          "what a second seed can change, so they were not taken as evidence either way.")
    return paragraphs
