"""Answer text for HW2 Problem 2 (a) and (b), items (a) and (c)-(f), from a CIFAR-10 run's files.

Every function returns a list of plain-text paragraphs (no markup), each sentence built from the
numbers it is given, so the text stays true for any run. `arch` is "dense" or "gap".

Files read (paths relative to runs/), by the caller (report/build.py), and passed in:
- cifar10-<arch>/metrics.json -> `metrics` (dict): parameters, batchnorm, dropout, dropout_position,
  val_/test_accuracy[_plain|_tta], tta, val_loss, train_eval_loss, loss_gap, train_eval_images, val_images,
  test_images, epochs and `config` (the run's arguments: channels, epochs, lr, batch_size, ...).
- cifar10-<arch>/architecture.txt -> `architecture_text` (str): the layer table cifar10.py writes.
- cifar10-<arch>/history.csv -> `history` (list of dicts, one per epoch, values as read by
  csv.DictReader or as floats): epoch, train_loss, train_eval_loss, val_loss, val_accuracy.
- cifar10-<arch>-ablation/ablation.json -> `ablation` (dict): setting, effects, variants (see
  cifar10.write_ablation).
"""
import math
import re

from draft_design import load_trials, mean_val
from words import OPTIMIZERS, SPREAD_POINTS, listed, pct, plural, points  # report/words.py: report/ is on the path of its callers

NETWORK = {"dense": "the VGG-style network with a dense head", "gap": "the ResNet-style network with global "
           "average pooling"}
def signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def dashed(channels) -> str:
    return "-".join(map(str, channels))


# ---- (a) the final architecture -------------------------------------------------------------

def layer_rows(architecture_text: str) -> list[dict]:
    """The rows of architecture.txt's layer table: name, type, shape [C, H, W] or [F], parameters."""
    rows = []
    for line in architecture_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("layer", "input") and not cells[0].startswith("---"):
            rows.append({"name": cells[0], "type": cells[1], "shape": [int(v) for v in cells[2].split("×")],
                         "parameters": int(cells[3].replace(",", "") or 0)})
    return rows


def architecture_answer(arch: str, metrics: dict, architecture_text: str) -> list[str]:
    cfg, rows = metrics["config"], layer_rows(architecture_text)
    convs = [r for r in rows if r["type"].startswith("Conv2d")]
    linears = [r for r in rows if r["type"].startswith("Linear")]
    pools = [r for r in rows if r["type"].startswith("MaxPool2d")]
    last_map = next(r["shape"] for r in reversed(rows) if r["name"].startswith("features."))  # (C, H, W)
    sizes = " → ".join(str(s) for s in [32, *[r["shape"][1] for r in pools]])
    norm = ("each followed by batch normalization (each channel normalized over the batch, then scaled and "
            "shifted by learned parameters) and a ReLU" if metrics["batchnorm"] else "each followed by a ReLU "
            "(no batch normalization)")
    text = []
    if arch == "dense":
        text.append(f"The network has {plural(len(convs), 'convolutional layer')} (3×3 kernels, 'same' padding), "
                    f"{norm}, in {plural(len(cfg['channels']), 'stage')} of {plural(cfg['convs_per_block'], 'convolution')} with "
                    f"{dashed(cfg['channels'])} channels. Each stage halves the image with 2×2 max pooling "
                    f"({sizes} pixels), placed right after the stage's first convolution so that the rest of the "
                    f"stage runs on the smaller image.")
        hidden = cfg["hidden"]
        head = (f"a hidden layer of {' and '.join(map(str, hidden))} units with ReLU and " if hidden else "")
        text.append(f"The final {last_map[0]}×{last_map[1]}×{last_map[2]} feature maps are flattened into "
                    f"{last_map[0] * last_map[1] * last_map[2]:,} numbers and go through a dense head: {head}"
                    f"an output layer of 10 units, one score per class ({plural(len(linears), 'linear layer')}).")
        if any(r["type"].startswith("AdaptiveAvgPool2d") for r in rows):
            text[-1] = (f"Adaptive average pooling to {last_map[1]}×{last_map[2]} comes before the flattening: it "
                        "changes nothing on 32×32 images, and lets the smaller images of the first epochs (see "
                        "Training below) reach the dense layers at the size they were built for, as in "
                        "torchvision's VGG. " + text[-1])
    else:
        blocks = {m.group(0) for r in rows if (m := re.search(r"res\d+_\d+", r["name"]))}  # resS_B
        stem = cfg.get("stem") or 0
        bn = metrics["batchnorm"]
        text.append(("A first 3×3 convolution with {stem} channels runs at full resolution; then ".format(stem=stem)
                     if stem else "The network has ") +
                    f"{plural(len(cfg['channels']), 'stage')} with {dashed(cfg['channels'])} channels, "
                    f"{plural(len(convs), 'convolutional layer')} in all (3×3 kernels). Each stage starts with a "
                    f"convolution, 2×2 max pooling ({sizes} pixels), "
                    + ("batch normalization (each channel normalized over the batch, then scaled and shifted by "
                       "learned parameters) and a ReLU" if bn else "and a ReLU (no batch normalization)")
                    + (f"; then come {plural(len(blocks), 'residual block')} in all ({'-'.join(map(str, cfg['blocks']))} "
                       f"per stage), each two 3×3 convolutions{' with batch normalization' if bn else ''} whose input "
                       "is added back to their output before the last ReLU (He et al. 2016)" if blocks else "") + ".")
        text.append(f"After the last stage, global average pooling turns the {last_map[0]}×{last_map[1]}×"
                    f"{last_map[2]} feature maps into {last_map[0]} numbers, the mean of each channel, and a single "
                    "linear layer maps them to the 10 class scores: there is no dense hidden layer, so each class "
                    "score is a weighted sum of the channel means (which is what class activation maps use).")
    if metrics["dropout"]:
        text.append(f"Dropout (during training, each activation is zeroed with probability p and the rest scaled "
                    f"by 1/(1 − p)) with p = {metrics['dropout']:g}, {metrics.get('dropout_position') or 'in the head'}.")
    else:
        text.append(no_dropout_reason(arch))
    text.append(f"In total {metrics['parameters']:,} trainable parameters.")
    text.append(training_schedule(cfg, metrics))
    return text


def kept_dropout_reason(arch: str, trials: dict | None = None) -> str:
    """Why the final network kept its dropout: the design trial that tried it without, against the
    trial it was compared to ("" where there is none)."""
    trials = load_trials() if trials is None else trials
    rows = {t["name"]: t for t in (trials or {}).get("trials", []) if t.get("arch") == arch}
    off = next((t for t in rows.values() if t.get("change", "").startswith("no dropout")
                and t.get("decision") == "dropped" and mean_val(t) is not None), None)
    on = off and rows.get(off.get("compared_to"))
    if not on or mean_val(on) is None:
        return ""
    gain = mean_val(off) - mean_val(on)  # points gained by removing dropout
    if gain >= SPREAD_POINTS:
        return ""  # dropping it clearly won: no reason to give
    verdict = "a difference within what a seed changes" if gain > -SPREAD_POINTS else "clearly lower without"
    return (f" It was kept because the design trial that removed it ({off['epochs']} epochs, "
            f"{plural(len(off['runs']), 'seed')}) reached {mean_val(off):.2f}% validation accuracy without dropout "
            f"against {mean_val(on):.2f}% with it, {verdict}.")


def no_dropout_reason(arch: str, trials: dict | None = None) -> str:
    """Why the final network has no dropout: the design trials that settled it, with and without
    dropout at the same length and width (benchmarks/results/design_trials.json)."""
    trials = load_trials() if trials is None else trials
    rows = [t for t in (trials or {}).get("trials", []) if t.get("arch") == arch]
    off = next((t for t in rows if t.get("change") == "no dropout" and mean_val(t) is not None), None)
    on = off and next((t for t in rows if t.get("change", "").startswith("dropout ") and mean_val(t) is not None
                       and (t.get("epochs"), t.get("channels")) == (off.get("epochs"), off.get("channels"))), None)
    if not on:
        return "The final network uses no dropout (item (d) gives what dropout did in this run's ablation)."
    return (f"The final network uses no dropout: in the design trials that settled it ({off['epochs']} epochs, "
            f"{plural(len(off['runs']), 'seed')} each) it reached {mean_val(off):.2f}% validation accuracy on average "
            f"without dropout against {mean_val(on):.2f}% with {on['change']}; label smoothing and the random shifts "
            "and flips already regularize a network trained this briefly, so dropout mainly slowed the fit (item (d) "
            "gives what dropout did in this run's ablation).")


def training_schedule(cfg: dict, metrics: dict) -> str:
    low = cfg.get("low_res") or 0
    epochs = metrics.get("epochs") or cfg["epochs"]  # what the run did (--time-budget chooses after parsing)
    low_epochs = metrics.get("low_res_epochs")  # older metrics.json lack it: TrainConfig.low_res_epochs's rule
    if low_epochs is None:
        low_epochs = int(epochs * (cfg.get("low_res_fraction") or 0)) if low else 0
    optimizer = ("SGD with Nesterov momentum {m:g}".format(m=cfg.get("momentum", 0.9)) if cfg["optimizer"] != "adamw"
                 else "AdamW")
    decay = f"weight decay {cfg['weight_decay']:g}"
    if cfg["optimizer"] == "muon":
        optimizer = (f"Muon (Jordan et al. 2024) for the convolution filters (each step is the filters' Nesterov "
                     f"momentum made orthogonal, at a peak learning rate of {cfg['muon_lr']:g}) and {optimizer} "
                     "for the other parameters")
        decay += " on the dense weights"
    augment = [w for w, on in (("flipped left-right at random", cfg.get("flip")),
                               (f"shifted by up to {cfg.get('crop')} pixels", cfg.get("crop"))) if on]
    text = (f"Training: {plural(epochs, 'epoch')} over {metrics['train_images']:,} training images in batches "
            f"of {cfg['batch_size']}, {optimizer}, the learning rate rising linearly to {cfg['lr']:g} over the "
            f"first {100 * cfg.get('warmup', 0.2):.0f}% of the steps and then falling linearly to near zero, "
            f"{decay}")
    if cfg.get("label_smoothing"):
        text += (f", and label smoothing {cfg['label_smoothing']:g} (the target puts {cfg['label_smoothing']:g} "
                 "of its probability evenly on all classes)")
    text += "."
    if augment:
        text += f" Each training image is {' and '.join(augment)} every time it is used."
    if low_epochs:
        first = "The first epoch sees" if low_epochs == 1 else f"The first {plural(low_epochs, 'epoch')} see"
        text += f" {first} the images shrunk to {low}×{low} pixels, which costs less, and the rest the full 32×32."
    return text


# ---- (c), (d) the ablation --------------------------------------------------------------------

def setting_sentence(arch: str, ablation: dict, final: dict | None = None) -> str:
    """How the four variants were trained, and how that differs from the final network."""
    s, f = ablation["setting"], final_setting(ablation, final)
    seeds, deeper = s["seeds"], deeper_final(s, f)
    run = lambda e, c, lr: f"{plural(e, 'epoch')}, {dashed(c)} channels, peak learning rate {lr:g}"
    text = (f"To measure this we trained four versions of {NETWORK[arch]}, identical except for batch normalization "
            f"(on or off) and dropout (on or off), each with {plural(len(seeds), 'random seed')}"
            + (f" ({', '.join(map(str, seeds))}; the numbers are the mean ± the standard deviation over seeds)"
               if len(seeds) > 1 else " (so no spread between seeds could be measured)")
            + f", at {ablation_run(s)}"
            + (f", {dashed(s['blocks'])} residual blocks per stage" if deeper is not None else "")
            + (f", on {s['train_images']:,} training images" if final and s.get("train_images", 0) < final.get(
                "train_images", 0) else "") + ".")
    if not same_setting(s, f):
        shorter = [w for w, yes in (("shorter", s["epochs"] < f["epochs"]),
                                    ("narrower", sum(s["channels"]) < sum(f["channels"])),
                                    ("shallower", deeper)) if yes]
        other_optimizer = optimizer_of(s) != optimizer_of(f)
        differs = [w for w, yes in (("length", s["epochs"] != f["epochs"]),
                                    ("width", list(s["channels"]) != list(f["channels"])),
                                    ("depth", deeper is not None),
                                    ("learning rate", s["lr"] != f["lr"]),
                                    ("batch size", s.get("batch_size", f.get("batch_size")) != f.get("batch_size")),
                                    ("optimizer", other_optimizer)) if yes]
        final_run = (run(f["epochs"], f["channels"], f["lr"])
                     + (f", {dashed(f['blocks'])} residual blocks per stage" if deeper is not None else "")
                     + (f", {OPTIMIZERS[optimizer_of(f)]}" if other_optimizer else ""))
        text += (f" That is {listed(shorter) or 'a different setting'} than the final network "
                 f"({final_run}), to pay for {plural(4 * len(seeds), 'training run')}; "
                 f"the effects may differ at the final network's {listed(differs)}.")
    return text


def ablation_run(s: dict) -> str:
    """The ablation's length, width, batch and optimizer, in words (Muon's lr is the other parameters')."""
    batch = f", batch {s['batch_size']}" if s.get("batch_size") else ""
    rate = (f"{OPTIMIZERS['muon']} and a peak learning rate of {s['lr']:g} for the other parameters"
            if optimizer_of(s) == "muon" else f"{OPTIMIZERS[optimizer_of(s)]} at a peak learning rate of {s['lr']:g}")
    return f"{plural(s['epochs'], 'epoch')}, {dashed(s['channels'])} channels{batch}, {rate}"


def optimizer_of(setting: dict) -> str:
    return setting.get("optimizer", "sgd")  # records from before the optimizer was recorded were SGD


def final_setting(ablation: dict, final: dict | None) -> dict:
    """The final network's epochs, channels and lr: its metrics.json's config, else the ablation's record."""
    return final["config"] if final else ablation["setting"]["default_network"]


def same_setting(s: dict, f: dict) -> bool:
    return ((f["epochs"], list(f["channels"]), f["lr"], optimizer_of(f))
            == (s["epochs"], list(s["channels"]), s["lr"], optimizer_of(s))) and deeper_final(s, f) is None


def deeper_final(s: dict, f: dict) -> bool | None:
    """Whether the final gap network has more residual blocks than the ablation's (None: the same,
    or not recorded: the dense network has none)."""
    if not (s.get("blocks") and f.get("blocks")) or list(s["blocks"]) == list(f["blocks"]):
        return None
    return sum(f["blocks"]) > sum(s["blocks"])


def variant(ablation: dict, name: str) -> dict:
    return next(r for r in ablation["variants"] if r["variant"] == name)


def mean_sd(row: dict, key: str = "val_accuracy") -> str:
    if row["counted"] == 0:
        return "diverged"
    return pct(row[key]) + (f" ± {100 * row[key + '_std']:.2f}" if row["counted"] > 1 else "")


def within_spread(effect: dict, ablation: dict) -> bool | None:
    if effect.get("within_spread") is not None or len(effect["seeds"]) < 2:
        return effect.get("within_spread")
    return abs(effect["mean"]) <= effect["spread"]


def effect_sentence(ablation: dict, what: str, held: str, held_words: str, note_one_seed: bool = True) -> str:
    """One comparison, within one setting of the other switch: the two variants' accuracies and
    the paired difference, said to be within the seed spread when it is."""
    effect = ablation["effects"][what][held]["val_accuracy"]
    on, off = variant(ablation, effect["on"]), variant(ablation, effect["off"])
    name = "batch normalization" if what == "batchnorm" else "dropout"
    if not effect["seeds"]:
        return (f"{held_words.capitalize()}, the effect of {name} could not be measured: "
                f"{variant_fate(on)}; {variant_fate(off)}.")
    n = len(effect["seeds"])
    delta = effect["mean"]
    verb = "raised" if delta > 0 else "lowered" if delta < 0 else "did not change"
    text = (f"{held_words.capitalize()}, {name} {verb} validation accuracy (from {mean_sd(off)} without it to "
            f"{mean_sd(on)} with it, {points(delta)}" + (f" ± {100 * effect['std']:.2f}, paired by seed" if n > 1 else "") + ")")
    inside = within_spread(effect, ablation)
    if inside:
        text += (f", a difference within the spread between seeds (up to {100 * effect['spread']:.2f} points), "
                 f"so {plural(n, 'seed')} cannot tell it from chance")
    elif inside is None and note_one_seed:  # said once per item: the pair's second sentence would repeat it
        text += ", from one seed, so how much of it is chance is unknown"
    diverged = [r for r in (on, off) if r["diverged"]]
    text += "." + not_learned_sentence((on, off))
    if diverged:
        text += " " + "; ".join(variant_fate(r) for r in diverged).capitalize() + "."
    return text


def barely_learned(row: dict, classes: int = 10) -> bool:
    """Whether a variant ended near chance: under 2.5 times the accuracy of guessing (1 / classes),
    or a validation loss within 10% of a uniform guess's (ln classes). A difference to such a
    variant measures whether it trained at all, not the switch."""
    return bool(row["counted"]) and (row["val_accuracy"] < 2.5 / classes
                                     or row.get("val_loss", 0) >= 0.9 * math.log(classes))


def not_learned_sentence(rows, classes: int = 10) -> str:
    stuck = [r for r in rows if barely_learned(r, classes)]
    if not stuck:
        return ""
    names = " and ".join(f"'{r['label']}' ({pct(r['val_accuracy'])}, validation loss {r['val_loss']:.2f})"
                         for r in stuck)
    return (f" The variant {names} barely learned: chance is {pct(1 / classes)} and a uniform guess has loss "
            f"ln {classes} = {math.log(classes):.2f}, so this difference shows that it did not train in this "
            "setting, not what the switch does (more epochs or a lower learning rate may let it train).")


def variant_fate(row: dict) -> str:
    if row["diverged"]:
        return (f"the variant '{row['label']}' diverged (its loss became infinite) in {row['diverged']} of "
                f"{row['seeds']} seeds")
    return f"the variant '{row['label']}' trained"


def batchnorm_answer(arch: str, ablation: dict, final: dict | None = None) -> list[str]:
    """2(x)(c): the effect of batch norm, once without dropout and once with it (never averaged).
    final: the final network's metrics.json, to name its setting (default: ablation's record)."""
    p = ablation["setting"]["dropout"]
    text = [setting_sentence(arch, ablation, final),
            effect_sentence(ablation, "batchnorm", "without_dropout", "without dropout") + " "
            + effect_sentence(ablation, "batchnorm", "with_dropout", f"with dropout (p = {p:g})", note_one_seed=False)]
    return text + [bn_training_note(ablation)]


def bn_training_note(ablation: dict) -> str:
    """Whether the runs without batch norm needed He initialization and what rate they trained at."""
    lr = ablation["setting"]["lr"]
    return (f"All four versions trained at the same peak learning rate, {lr:g}; the versions without batch "
            "normalization start from He initialization (weights scaled to keep the signal's variance through "
            "each ReLU), so that the signal does not shrink from layer to layer.")


def dropout_answer(arch: str, ablation: dict, final: dict | None = None) -> list[str]:
    """2(x)(d): the effect of dropout, once with batch norm and once without (never averaged),
    on validation accuracy and on the overfitting gap; its rate and where it sits."""
    s = ablation["setting"]
    text = [f"Dropout zeroes each activation with probability p during training (and scales the rest by "
            f"1/(1 − p)); at evaluation it is off. In the versions with dropout, p = {s['dropout']:g}, "
            f"{s['dropout_position']}; the versions without dropout have none. The four versions are those of "
            "item (c), trained as described there.",
            effect_sentence(ablation, "dropout", "with_batchnorm", "with batch normalization") + " "
            + effect_sentence(ablation, "dropout", "without_batchnorm", "without batch normalization",
                              note_one_seed=False)]
    gaps = []
    for held, words in (("with_batchnorm", "with batch normalization"), ("without_batchnorm", "without it")):
        e = ablation["effects"]["dropout"][held]["loss_gap"]
        if not e["seeds"]:
            continue
        on, off = variant(ablation, e["on"]), variant(ablation, e["off"])
        if barely_learned(on) or barely_learned(off):
            gaps.append(f"{words}, not read (a variant barely learned, see above)")
            continue
        shown = round(on["loss_gap"], 3) - round(off["loss_gap"], 3)  # as printed: a reader's subtraction agrees
        change = "narrowed" if shown < 0 else "widened"
        inside = within_spread(e, ablation)
        effect = f"{change} it by {abs(shown):.3f}" if round(abs(shown), 3) else "left it unchanged"
        gaps.append(f"{words}, {signed(off['loss_gap'])} without dropout and {signed(on['loss_gap'])} with it (dropout "
                    f"{effect}" + (", within the seed spread" if inside else "") + ")")
    if gaps:
        text.append("Overfitting, measured as the final validation loss minus the training loss (both in evaluation "
                    "mode, on a fixed subset of training images, without augmentation or label smoothing): "
                    + "; ".join(gaps) + ".")
    used = final["dropout"] if final else s["default_network"]["dropout"]
    text.append((f"The final network uses dropout p = {used:g}" if used else "The final network uses no dropout")
                + disagreement(ablation, used, final) + "." + (kept_dropout_reason(arch) if used else ""))
    return text


def disagreement(ablation: dict, used: float, final: dict | None = None) -> str:
    """Where the ablation (with batch norm, as the final network) leans the other way than the
    final network's choice, say so, and, where they ran different settings, that both can stand."""
    e = ablation["effects"]["dropout"]["with_batchnorm"]["val_accuracy"]
    if (not e["seeds"] or (used > 0) == (e["mean"] > 0) or 100 * abs(e["mean"]) < SPREAD_POINTS
            or within_spread(e, ablation)):
        return ""  # no lean, or one that seeds or one run cannot tell from chance
    text = (f", although in the ablation, with batch normalization, the variants {'without' if used else 'with'} "
            "dropout reached the higher validation accuracy")
    if same_setting(ablation["setting"], final_setting(ablation, final)):
        return text
    return text + ("; the ablation ran a different setting (item (c)), and what dropout does there need not hold "
                   "for the final network")


# ---- (e) the loss curves, (f) validation accuracy ------------------------------------------------

def loss_answer(arch: str, metrics: dict, history: list) -> list[str]:
    rows = [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in history]
    last = rows[-1]
    above = rows[-1]["train_loss"] > rows[-1]["val_loss"]
    text = ["The figure shows two training losses. The running training loss is averaged over each step's batch "
            "while training: augmented images" + (", dropout on" if metrics.get("dropout") else "") + ", label smoothing included"
            + ("; it ends above the validation loss because training is made harder on purpose, so it cannot "
               "show overfitting. " if above else ". ") + "The eval-mode training loss measures a fixed subset of "
            f"{metrics.get('train_eval_images', 0):,} training images after each epoch exactly as the validation "
            "loss is measured (plain cross-entropy, network in evaluation mode, no augmentation), so the two can "
            "be compared."]
    if "train_eval_loss" not in last:
        return text + ["This run's history has no eval-mode training loss, so the overfitting gap cannot be read "
                       "from it; rerun cifar10.py to record it."]
    gap = last["val_loss"] - last["train_eval_loss"]
    first_gap = rows[0]["val_loss"] - rows[0]["train_eval_loss"]
    best = min(rows, key=lambda r: r["val_loss"])
    verdict = (f"validation loss {last['val_loss']:.3f} against {last['train_eval_loss']:.3f} on training images, "
               f"a gap of {signed(gap)}")
    if gap <= 0.02:
        verdict += ": no measurable overfitting, the network does as well on images it never trained on."
    else:
        verdict += (f" ({100 * gap / max(last['train_eval_loss'], 1e-9):.0f}% of the training loss): the network "
                    "fits its training images better than new ones, a "
                    + ("small" if gap < 0.1 else "clear") + " generalization gap.")
    text.append(f"After the last epoch (of {plural(len(rows), 'epoch')}): " + verdict)
    if len(rows) < 2:  # one point: no trend to read
        return text
    trend = f"The gap went from {signed(first_gap)} after the first epoch to {signed(gap)} after the last"
    if best["epoch"] < last["epoch"] and last["val_loss"] - best["val_loss"] > 0.01:
        trend += (f"; the validation loss was lowest after epoch {int(best['epoch'])} ({best['val_loss']:.3f}) "
                  "and rose afterwards, a sign of overfitting late in training.")
    else:
        trend += ("; the validation loss fell until the last epoch, so the gap had not yet turned into "
                  "overfitting in the harmful sense (a validation loss that rises), and training longer may "
                  "still help.")
    text.append(trend)
    return text


def validation_answer(arch: str, metrics: dict) -> list[str]:
    """2(f): the final validation accuracy, then the test accuracy, in the run's reported rule
    (flip-averaged where metrics["tta"], with the plain one beside it)."""
    def rule(split):
        if metrics.get("tta"):
            return (f" (each image's prediction averaged with its mirror image's; "
                    f"{pct(metrics[split + '_accuracy_plain'])} from the image alone)")
        tta = metrics.get(f"{split}_accuracy_tta")
        return (f" ({pct(tta)} when each image's prediction is averaged with that of its mirror image)"
                if split == "test" and tta is not None and not math.isnan(tta) else "")
    text = [f"Final validation accuracy: {pct(metrics['val_accuracy'])}{rule('val')} on the {metrics['val_images']:,} "
            "validation images held out from the training set (the network after the last epoch; no epoch was picked)."]
    if "test_accuracy" in metrics:
        text.append(f"Test accuracy, measured once at the end on the {metrics['test_images']:,} test images: "
                    f"{pct(metrics['test_accuracy'])}{rule('test')}.")
    return text
