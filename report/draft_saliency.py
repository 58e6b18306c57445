"""Answer text for HW2 Problem 4 (class activation maps) and Problem 5 (guided backpropagation):
what the maps show, computed from the maps rather than described by hand.

Reads, per network, `saliency_stats.json` in the run folder (runs/cifar10-gap/, runs/cifar10-dense/),
written by `cam.py --checkpoint <run folder>/model.pt --sanity --stats` (saliency.run_stats). Keys used:
- "images", "right", "wrong": the randomly drawn test images the numbers come from and how many of
  them the network classifies right and wrong; maps are for the predicted class;
- "cam_method": "CAM" (global-average-pooling network) or "Grad-CAM" (dense head);
- "uniform": {"centre", "top"}: what a map spread evenly over the image would score;
  "centre_area" (0.5) and "top_share" (0.1): the central box's share of the area, the top pixels' share;
- "methods": {"CAM" | "Grad-CAM" | "guided backprop": {
      "all" | "right" | "wrong": {"centre" | "top": {"mean", "std", "n"}},
      "right_vs_wrong": {"centre" | "top": {"diff" (right minus wrong), "p" (Mann-Whitney U)}},
      "deletion": {"auc", "random_auc", "diff" (random minus method), "faster_share", "p" (Wilcoxon), "n"}}};
- "agreement": [{"a", "b", "mean", "std", "n"}]: Spearman rank correlation of two methods' maps;
- "shown": {"index", "correct", "methods": {method: {"centre": [...], "top": [...]}}}: the figure's images;
- "sanity": {method: {"after_top", "after_all", "layers", "top_layer", "images"}} or None.
Every sentence below is chosen by the numbers against the thresholds defined here.
"""
import words  # report/words.py: report/ is on the path of its callers

# Centre: a map whose central-box share exceeds an even spread's by CENTRE_MARGIN (10 points of the
# mass) "lies on the centre"; one that falls short by as much leans "toward the border".
CENTRE_MARGIN = 0.10
# Concentration: the top 10% of pixels holding at least CONCENTRATED times an even spread's share
# (30% of the mass) is "concentrated"; at most DIFFUSE times (15%) "spread out"; between, "moderately".
CONCENTRATED = 3.0
DIFFUSE = 1.5
# Right against wrong, and a method against random deletion: a difference counts when its test's
# p-value is below ALPHA and it is at least MIN_DIFF (3 points of share; for the deletion areas,
# DELETION_MARGIN of probability averaged over the curve), with at least MIN_GROUP images a side.
ALPHA = 0.05
MIN_DIFF = 0.03
DELETION_MARGIN = 0.02
MIN_GROUP = 5
# Agreement of two methods (Spearman rank correlation): AGREE or more "alike", WEAK or more "weakly".
AGREE = 0.5
WEAK = 0.2
# Sanity check (Adebayo et al. 2018): |rank correlation| with the trained maps below SANITY_PASS
# after every layer is re-initialized means the map depends on the learned weights.
SANITY_PASS = 0.3

DELETION_DEFINITION = (
    "A deletion curve (Petsiuk et al. 2018) tracks the probability the network gives its predicted class while "
    "the image's pixels are replaced by the average colour, the most salient first; if the map marks what the "
    "network relies on, the probability falls sooner than when the pixels are removed in a random order, so "
    "the area under the curve is smaller.")
NAME = {"CAM": "CAM", "Grad-CAM": "Grad-CAM", "guided backprop": "guided backpropagation"}
PLAIN = {"CAM": "the class activation maps", "Grad-CAM": "the Grad-CAM maps",
         "guided backprop": "the guided backpropagation maps (magnitude summed over colour channels)"}


def pct(x) -> str:
    return words.pct(x, digits=0)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def significant(diff, p, margin) -> bool:
    return diff is not None and p is not None and p < ALPHA and abs(diff) >= margin


def sample_sentence(stats: dict) -> str:
    return (f"The numbers come from {stats['images']} randomly drawn test images ({stats['right']} classified "
            f"right, {stats['wrong']} wrong), each map explaining the predicted class.")


def where_sentence(method: str, m: dict, stats: dict) -> str:
    c, u = m["all"]["centre"]["mean"], stats["uniform"]["centre"]
    if c is None:
        return f"No {NAME[method]} map in the sample has any positive mass, so where it falls is undefined."
    if c >= u + CENTRE_MARGIN:
        verdict = "the maps sit mostly on the middle of the image, where CIFAR-10 photographs usually put the object"
    elif c <= u - CENTRE_MARGIN:
        verdict = "the maps lean toward the border and background rather than the middle, where the object usually is"
    else:
        verdict = "the maps are spread about as evenly between middle and border as a flat map"
    empty = m.get("empty_maps", 0)
    caveat = (f" ({empty} of the {stats['images']} maps are zero everywhere and are left out of these shares)"
              if empty else "")
    return (f"On average {pct(c)} of a map's mass lies in the central box covering {pct(stats['centre_area'])} of the "
            f"image (a map spread evenly would put {pct(u)} there){caveat}: {verdict}.")


def concentration_sentence(method: str, m: dict, stats: dict) -> str:
    t, u = m["all"]["top"]["mean"], stats["uniform"]["top"]
    if t is None:
        return ""
    ratio = t / u
    verdict = ("concentrated on a few small regions" if ratio >= CONCENTRATED else
               "spread out over much of the image" if ratio <= DIFFUSE else "moderately concentrated")
    return (f"The {pct(stats['top_share'])} most salient pixels hold {pct(t)} of the mass, {ratio:.1f} times an "
            f"even spread's share: the maps are {verdict}.")


def right_wrong_sentence(method: str, m: dict, stats: dict) -> str:
    nr, nw = m["right"]["centre"]["n"], m["wrong"]["centre"]["n"]
    if min(nr, nw) < MIN_GROUP:
        return (f"With {nr} right and {nw} wrong predictions among the sampled images, there are too few on one "
                f"side (fewer than {MIN_GROUP}) to compare right and wrong answers.")
    parts, same = [], []
    for key, what, more, less in (("centre", "the central box's share", "more on the middle", "more toward the border"),
                                  ("top", "the top pixels' share", "more concentrated", "more spread out")):
        d = m["right_vs_wrong"][key]
        r, w = m["right"][key]["mean"], m["wrong"][key]["mean"]
        if significant(d["diff"], d["p"], MIN_DIFF):
            parts.append(f"{more if d['diff'] > 0 else less} on right answers ({what} {pct(r)} against {pct(w)} "
                         f"on wrong ones, Mann-Whitney test p = {d['p']:.3f})")
        else:
            same.append(f"{what} {pct(r)} against {pct(w)}" + (f", p = {d['p']:.2f}" if d["p"] is not None else ""))
    if not parts:
        return (f"Right ({nr}) and wrong ({nw}) predictions get maps of the same kind: no difference large and "
                f"reliable enough to count ({'; '.join(same)}).")
    text = f"Comparing {nr} right with {nw} wrong predictions, the maps are " + " and ".join(parts)
    return text + (f"; {'; '.join(same)} does not differ reliably." if same else ".")


def agreement_sentences(method: str, stats: dict) -> list:
    out, explained = [], False
    same = {frozenset((a["a"], a["b"])) for a in stats["agreement"] if (a["mean"] or 0) >= IDENTICAL}
    for a in stats["agreement"]:
        if method not in (a["a"], a["b"]) or a["mean"] is None:
            continue
        other = a["b"] if a["a"] == method else a["a"]
        if other == "Grad-CAM" and frozenset(("CAM", "Grad-CAM")) in same and method != "CAM":
            continue  # on a GAP network Grad-CAM ranks pixels as CAM does: one sentence says it for both
        rho = a["mean"]
        verdict = ("rank the pixels alike" if rho >= AGREE else "agree only weakly" if rho >= WEAK else
                   "hardly agree on which pixels matter" if rho > -WEAK else "rank the pixels in opposite orders")
        out.append(f"{cap(NAME[method])} and {NAME[other]} {verdict}: mean Spearman rank correlation {rho:.2f} over "
                   f"{a['n']} images" + ("" if explained else " (1 means the same order of pixels, 0 unrelated)") + ".")
        explained = True
    return out


IDENTICAL = 0.99  # rank correlation above which two methods' maps count as the same (CAM and Grad-CAM on a GAP net)


def deletion_sentence(method: str, m: dict) -> str:
    d = m["deletion"]
    numbers = (f"removing pixels in the order of the {NAME[method]} map, the area under the curve is {d['auc']:.3f}, "
               f"against {d['random_auc']:.3f} in a random order, and smaller on {pct(d['faster_share'])} of the "
               f"{d['n']} images" + (f" (Wilcoxon signed-rank test p = {d['p']:.3g})" if d["p"] is not None else ""))
    if significant(d["diff"], d["p"], DELETION_MARGIN) and d["diff"] > 0:
        verdict = "the most salient pixels are ones the network does use for its answer"
    elif significant(d["diff"], d["p"], DELETION_MARGIN):
        verdict = "the pixels this map ranks highest matter less to the network than random ones"
    else:
        verdict = "the map does not single out pixels the network needs more than a random choice does"
    return f"In this sample, {numbers}: {verdict}."


def sanity_sentence(method: str, stats: dict) -> str:
    s = (stats.get("sanity") or {}).get(method)
    if not s:
        return ""
    rho = s["after_all"]
    verdict = ("so the map depends on what the network learned: a faithful explanation needs that, though it "
               "does not prove one" if abs(rho) < SANITY_PASS
               else "so much of the map survives random weights: it reflects the image (its edges) more than what "
                    "the network learned")
    if stats["methods"][method].get("empty_maps", 0) > stats["images"] / 2:
        verdict = ("but most of this network's maps are zero everywhere (a zero map is counted as correlation 0), "
                   "so the check says little here")
    return (f"In the randomization sanity check (Adebayo et al. 2018), re-initializing the layers from the output "
            f"down on {s['images']} test images leaves a rank correlation with the trained maps of {s['after_top']:.2f} "
            f"after the top layer and {rho:.2f} after all {s['layers']}, {verdict}.")


def shown_sentence(method: str, stats: dict) -> str:
    shown = stats.get("shown") or {}
    per = (shown.get("methods") or {}).get(method)
    if not per:
        return ""
    rows = [(i, ok, c, t) for i, ok, c, t in zip(shown["index"], shown["correct"], per["centre"], per["top"])
            if c is not None]
    if not rows:
        return f"None of the {len(shown['index'])} images in the figure has a {NAME[method]} map with positive mass."
    centre = [r[2] for r in rows]
    top = max(rows, key=lambda r: r[3])
    flat = min(rows, key=lambda r: r[3])
    mean = lambda xs: sum(xs) / len(xs)
    right = [r[2] for r in rows if r[1]]
    wrong = [r[2] for r in rows if not r[1]]
    split = (f" ({pct(mean(right))} on average on the {len(right)} right and {pct(mean(wrong))} on the "
             f"{len(wrong)} wrong ones)" if right and wrong else "")
    which = (f"the {len(rows)} images of the figure" if len(rows) == len(shown["index"]) else
             f"the {len(rows)} images of the figure (of {len(shown['index'])}) whose map is not zero everywhere")
    return (f"In {which}, the {NAME[method]} maps put between {pct(min(centre))} and "
            f"{pct(max(centre))} of their mass in the central box{split}; the most concentrated is #{top[0]} "
            f"(top pixels {pct(top[3])} of the mass), the most spread out #{flat[0]} ({pct(flat[3])}).")


def method_paragraph(network: str, method: str, stats: dict, lead: str, define: bool) -> list:
    m = stats["methods"].get(method)
    if m is None:
        return [f"No {method} statistics were computed for {network}."]
    first = " ".join(s for s in (lead, sample_sentence(stats), where_sentence(method, m, stats),
                                 concentration_sentence(method, m, stats), right_wrong_sentence(method, m, stats)) if s)
    second = " ".join(s for s in (*agreement_sentences(method, stats), DELETION_DEFINITION if define else "",
                                  deletion_sentence(method, m), sanity_sentence(method, stats)) if s)
    return [p for p in (first, second, shown_sentence(method, stats)) if p]


def cam_answer(network: str, stats: dict, define: bool = True) -> list:
    """Problem 4: where the CAM (or Grad-CAM) maps of `network` fall, how concentrated they are,
    right against wrong answers, agreement with guided backpropagation, deletion and sanity.
    define=False leaves out the deletion curve's definition (pass it after its first use)."""
    method = stats.get("cam_method")
    if method is None:
        return [f"{network} has no convolutional feature maps, so neither CAM nor Grad-CAM applies."]
    lead = (f"What {PLAIN[method]} of {network} show." if method == "CAM" else
            f"CAM needs global average pooling followed by a single linear layer, which {network} does not have, "
            f"so its maps are Grad-CAM (Selvaraju et al. 2017), which weights the last convolutional layer's "
            f"feature maps by the gradient of the class score instead.")
    return method_paragraph(network, method, stats, lead, define)


def guided_answer(network: str, stats: dict, define: bool = True) -> list:
    """Problem 5: the same questions for guided backpropagation of `network`."""
    lead = (f"What {PLAIN['guided backprop']} of {network} show; unlike the class activation maps they have the "
            "image's full resolution.")
    return method_paragraph(network, "guided backprop", stats, lead, define)
