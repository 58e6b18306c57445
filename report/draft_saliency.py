"""Answer text for HW2 Problem 4 (class activation maps) and Problem 5 (guided backpropagation):
what the maps show, computed from the maps rather than described by hand.

Reads, per network, `saliency_stats.json` in the run folder (runs/cifar10-gap/, runs/cifar10-dense/),
written by `cam.py --checkpoint <run folder>/model.pt --sanity --stats` (saliency.run_stats). Keys used:
- "images", "right", "wrong": the randomly drawn test images the numbers come from and how many of
  them the network classifies right and wrong; maps are for the predicted class;
- "cam_method": "CAM" (global-average-pooling network) or "Grad-CAM" (dense head);
- "uniform": {"centre", "top"}: what a map spread evenly over the image (a flat map) would score;
  "centre_area" (0.5) and "top_share" (0.1): the central box's share of the area, the top pixels' share;
- "methods": {"CAM" | "Grad-CAM" | "guided backprop": {
      "all" | "right" | "wrong": {"centre" | "top": {"mean", "std", "n"}},
      "right_vs_wrong": {"centre" | "top": {"diff" (right minus wrong), "p" (Mann-Whitney U)}},
      "native_size": [h, w] (optional): the resolution the map is computed at before upsampling,
      "deletion", "deletion_blur" (optional): {"auc", "random_auc" (the baseline: a random map at the
          method's native size, upsampled like the map), "diff" (baseline minus method), "faster_share",
          "p" (Wilcoxon), "n", "pixel_random_auc" (optional)}: removed pixels take the mean colour, or a
          blurred copy of the image}};
- "agreement": [{"a", "b", "mean", "std", "n"}]: Spearman rank correlation of two methods' maps;
- "shown": {"index", "correct", "predicted", "true" (optional), "size" (optional),
      "methods": {method: {"centre": [...], "top": [...], "peak": [[row, col], ...] (optional),
      "peak_centre": [...] (optional)}}}: the figure's images;
- "sanity": {method: {"after_top", "after_all", "layers", "top_layer", "images"}} or None.
Every sentence below is chosen by the numbers against the thresholds defined here. Each network's
answer is one paragraph on the maps the figure shows, then one on the larger random sample.
"""
import words  # report/words.py: report/ is on the path of its callers

# Centre share against a flat map's: a difference under NEAR (3 points of the mass) reads "about the
# same as a flat map", any larger one "more" or "less", always with both numbers, so two runs with
# close shares never get opposite words.
NEAR = 0.03
# Concentration: the top 10% of pixels holding at least CONCENTRATED times a flat map's share
# (30% of the mass) is "concentrated"; at most DIFFUSE times (15%) "spread out"; between, "moderately".
CONCENTRATED = 3.0
DIFFUSE = 1.5
# Right against wrong, and a method against its random baseline: a difference counts when its test's
# p-value is below ALPHA and it is at least MIN_DIFF (3 points of share; for the deletion areas,
# DELETION_MARGIN of probability averaged over the curve), with at least MIN_GROUP images a side.
ALPHA = 0.05
MIN_DIFF = 0.03
DELETION_MARGIN = 0.02
MIN_GROUP = 5
# Agreement of two methods (Spearman rank correlation): AGREE or more "alike", WEAK or more "weakly".
AGREE = 0.5
WEAK = 0.2
IDENTICAL = 0.99  # rank correlation above which two methods' maps count as the same (CAM and Grad-CAM on a GAP net)
# Sanity check (Adebayo et al. 2018): |rank correlation| with the trained maps below SANITY_PASS
# after every layer is re-initialized means the map depends on the learned weights.
SANITY_PASS = 0.3

NAME = {"CAM": "CAM", "Grad-CAM": "Grad-CAM", "guided backprop": "guided backpropagation"}


def pct(x) -> str:
    return words.pct(x, digits=0)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def significant(diff, p, margin) -> bool:
    return diff is not None and p is not None and p < ALPHA and abs(diff) >= margin


def mean(xs):
    return sum(xs) / len(xs)


def compared_with_flat(share: float, flat: float) -> str:
    """'58%, more than the 47% a flat map would put there' (or 'less than', 'about the same as')."""
    share, flat = round(share, 2), round(flat, 2)   # decide on the numbers the reader sees
    word = "more than" if share >= flat + NEAR else "less than" if share <= flat - NEAR else "about the same as"
    return f"{pct(share)}, {word} the {pct(flat)} a flat map would put there"


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def region(peak, size) -> str:
    """Where a peak (row, col) lies in an image of `size` (H, W), in thirds: 'top left', 'bottom'..."""
    (r, c), (h, w) = peak, size
    vert = ("top", "", "bottom")[min(2, 3 * r // h)]
    horiz = ("left", "", "right")[min(2, 3 * c // w)]
    return " ".join(p for p in (vert, horiz) if p) or "middle"


# ---- the figure's images -------------------------------------------------------------------------

def shown_sentences(method: str, stats: dict, define: bool) -> list:
    """What the figure's maps cover: where each peaks (inside the central box or near the border)
    and the central box's share of each map's mass, right and wrong answers apart."""
    shown = stats.get("shown") or {}
    per = (shown.get("methods") or {}).get(method)
    if not per:
        return []
    n = len(shown["index"])
    keep = [i for i in range(n) if per["centre"][i] is not None]
    if not keep:
        return [f"None of the {n} images in the figure has a {NAME[method]} map with any positive value."]
    box = ("the central box (the middle half of the image's area, where CIFAR-10 photographs usually put the "
           "object)" if define else "the central box")
    right = [i for i in keep if shown["correct"][i]]
    wrong = [i for i in keep if not shown["correct"][i]]
    what = (f"the figure's {len(keep)} images ({len(right)} right, {len(wrong)} wrong)" if len(keep) == n else
            f"the {len(keep)} of the figure's {n} images whose map is not zero everywhere")
    out = []
    if per.get("peak_centre") is not None:
        inside = [i for i in keep if per["peak_centre"][i]]
        outside = [i for i in keep if not per["peak_centre"][i]]
        size = shown.get("size") or [32, 32]

        def label(i):
            text = f"#{shown['index'][i]}"
            if shown.get("predicted"):
                text += (f" (right: {article(shown['true'][i])})" if shown["correct"][i] else
                         f" (wrong: {article(shown['true'][i])} taken for {article(shown['predicted'][i])})")
            return text

        def and_list(items):   # items that hold a comma themselves get one before the "and" too
            last = ", and " if any("," in i for i in items) else " and "
            return items[0] if len(items) == 1 else ", ".join(items[:-1]) + last + items[-1]
        if not outside:
            where = f"every map peaks inside {box}"
        else:
            away = and_list([f"{label(i)}, at the {region(per['peak'][i], size)}" for i in outside])
            where = (f"the map peaks inside {box} on {and_list([label(i) for i in inside])}, and outside it on {away}"
                     if inside else f"no map peaks inside {box}: " + away)
        out.append(f"In {what}, {where}.")
        box = "the central box"
    centre = [per["centre"][i] for i in keep]
    split = (f"; {pct(mean([per['centre'][i] for i in right]))} on average on the right answers and "
             f"{pct(mean([per['centre'][i] for i in wrong]))} on the wrong ones" if right and wrong else "")
    lead = "" if out else f"In {what}, "
    flat = stats["uniform"]["centre"]
    out.append(cap(f"{lead}{box} holds between {pct(min(centre))} and {pct(max(centre))} of each map's mass, "
                   f"against {pct(flat)} for a flat map{split}."))
    return out


# ---- the larger random sample --------------------------------------------------------------------

def spread_sentence(method: str, m: dict, stats: dict, define: bool) -> str:
    """Sample size, centre share against a flat map's, and concentration."""
    c, t = m["all"]["centre"]["mean"], m["all"]["top"]["mean"]
    head = (f"Over {stats['images']} randomly drawn test images ({stats['right']} right, {stats['wrong']} wrong), ")
    if c is None:
        return head + f"no {NAME[method]} map has any positive value, so where it falls is undefined."
    empty = m.get("empty_maps", 0)
    caveat = f" ({empty} maps that are zero everywhere left out)" if empty else ""
    ratio = round(t / stats["uniform"]["top"], 1)   # decide on the number the reader sees
    verdict = ("concentrated on a few small regions" if ratio >= CONCENTRATED else
               "spread over much of the image" if ratio <= DIFFUSE else "moderately concentrated")
    strongest = (f"the strongest {pct(stats['top_share'])} of the pixels (the top pixels)" if define else
                 f"the top {pct(stats['top_share'])} of pixels")
    return (f"{head}the central box holds on average {compared_with_flat(c, stats['uniform']['centre'])}{caveat}, "
            f"and {strongest} hold {pct(t)} of the mass, {ratio:.1f} times a flat map's share: the maps are "
            f"{verdict}.")


def p_value(p: float) -> str:
    """A p-value as printed: three decimals, and "p < 0.001" where those would read 0.000."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def right_wrong_sentence(method: str, m: dict) -> str:
    nr, nw = m["right"]["centre"]["n"], m["wrong"]["centre"]["n"]
    if min(nr, nw) < MIN_GROUP:
        return (f"With {nr} right and {nw} wrong answers in the sample, one side is too small (under {MIN_GROUP} "
                f"images) to compare them.")
    parts, same = [], []
    for key, what, share, more, less in (
            ("centre", "central box", "central box's share", "more on the middle", "more toward the border"),
            ("top", "top pixels", "top pixels' share", "more concentrated", "more spread out")):
        d = m["right_vs_wrong"][key]
        numbers = f"{pct(m['right'][key]['mean'])} against {pct(m['wrong'][key]['mean'])}"
        if significant(d["diff"], d["p"], MIN_DIFF):
            parts.append(f"{more if d['diff'] > 0 else less} on right answers than on wrong ones ({what} "
                         f"{numbers}, Mann-Whitney test {p_value(d['p'])})")
        elif d["p"] is not None and d["p"] < ALPHA:  # a reliable difference, but too small to matter
            same.append((what, share, f"{numbers}, {p_value(d['p'])}",
                         f"differs reliably but by less than {round(100 * MIN_DIFF)} points, too little to matter"))
        else:
            same.append((what, share, numbers, "does not differ reliably"))
    if not parts:
        return ("Maps of right and wrong answers look alike (right against wrong): "
                + "; ".join(f"the {w}, {n}, {why}" for w, _, n, why in same) + ".")
    return "The maps are " + " and ".join(parts) + (
        f"; the {same[0][1]} {same[0][3]} ({same[0][2]})." if same else ".")


def deletion_verdict(d: dict) -> int:
    """+1: the map's order lowers the probability reliably faster than its baseline; -1: slower; 0: neither."""
    printed = round(round(d["random_auc"], 2) - round(d["auc"], 2), 2)   # decide on the areas the reader sees
    if not significant(printed, d["p"], DELETION_MARGIN):
        return 0
    return 1 if printed > 0 else -1


def baseline_words(m: dict, image_size) -> str:
    """The random order a method is compared with: its own resolution, enlarged as its maps are."""
    size = m.get("native_size")
    if size and list(size) != list(image_size):
        return f"in the order of a random {size[0]} x {size[1]} map enlarged the same way"
    return "in a random pixel order" if size else "in a random order"


def deletion_sentences(method: str, m: dict, define: bool, size) -> list:
    d = m.get("deletion")
    if not d:
        return []
    out = []
    if define:
        out.append("A deletion curve (Petsiuk et al. 2018) tracks the probability of the network's answer as pixels "
                   "are replaced by the average colour, the map's most salient first; a smaller area under it than "
                   "for a random order of the map's own coarseness (scattered single-pixel holes disturb a network "
                   "more than a few larger ones) means the map marks pixels the network uses.")
    v = deletion_verdict(d)
    verdict = ("lowers the probability sooner than" if v > 0 else "lowers it more slowly than" if v < 0 else
               "does no better than")
    numbers = (f"area {d['auc']:.2f} against {d['random_auc']:.2f}, smaller on {pct(d['faster_share'])} of the "
               f"{d['n']} images")
    text = f"Deleting in the {NAME[method]} order {verdict} deleting {baseline_words(m, size)} ({numbers})"
    b = m.get("deletion_blur")
    if b:
        vb = deletion_verdict(b)
        agree = "and so it does" if vb == v else "but not" if v > 0 else "but it does reliably better" if vb > 0 else \
            "and it does reliably worse"
        text += (f", {agree} when the deleted pixels take a blurred copy's values instead (area {b['auc']:.2f} "
                 f"against {b['random_auc']:.2f})")
    out.append(text + ".")
    return out


def agreement_sentence(method: str, stats: dict) -> str:
    """Guided backpropagation against the class activation map (CAM or Grad-CAM)."""
    other = stats.get("cam_method")
    for a in stats["agreement"]:
        if {a["a"], a["b"]} == {method, other} and a["mean"] is not None:
            rho = round(a["mean"], 2)   # decide on the number the reader sees
            verdict = ("rank the pixels alike" if rho >= AGREE else "agree only weakly" if rho >= WEAK else
                       "hardly agree on which pixels matter" if rho > -WEAK else "rank the pixels in opposite orders")
            return (f"{cap(NAME[method])} and {NAME[other]} {verdict} (Spearman rank correlation {rho:.2f}, where 1 "
                    f"is the same order of pixels and 0 unrelated).")
    return ""


def sanity_sentence(method: str, stats: dict) -> str:
    s = (stats.get("sanity") or {}).get(method)
    if not s:
        return ""
    rho = round(s["after_all"], 2)
    verdict = ("they depend on what the network learned (needed for a faithful map, not proof of one)"
               if abs(rho) < SANITY_PASS else
               "much of the map survives random weights, so it reflects the image's edges more than what the "
               "network learned")
    if stats["methods"][method].get("empty_maps", 0) > stats["images"] / 2:
        verdict = "but most of the maps are zero everywhere (counted as correlation 0), so the check says little here"
    on = f" on its fixed batch of {s['images']} test images" if s.get("images") else ""
    return (f"With all {s['layers']} weight layers re-initialized (the randomization check of Adebayo et al. 2018{on}), "
            f"the maps keep a rank correlation of {rho:.2f} with the trained ones{',' if verdict.startswith('but') else ':'} {verdict}.")


def answer(network: str, method: str, stats: dict, lead: str, define: bool, agreement: bool) -> list:
    m = stats["methods"].get(method)
    if m is None:
        return [f"No {NAME.get(method, method)} statistics were computed for {network}."]
    first = " ".join(s for s in (lead, *shown_sentences(method, stats, define)) if s)
    second = " ".join(s for s in (spread_sentence(method, m, stats, define), right_wrong_sentence(method, m),
                                  agreement_sentence(method, stats) if agreement else "",
                                  *deletion_sentences(method, m, define, (stats.get("shown") or {}).get("size") or [32, 32]), sanity_sentence(method, stats)) if s)
    return [p for p in (first, second) if p]


def cam_answer(network: str, stats: dict, define: bool = True) -> list:
    """Problem 4: what the CAM (or Grad-CAM) maps of `network` cover in the figure, then on a random
    sample: where they fall, how concentrated, right against wrong, deletion and the sanity check.
    define=False leaves out the definitions (pass it after their first use)."""
    method = stats.get("cam_method")
    if method is None:
        return [f"{cap(network)} has no convolutional feature maps, so neither CAM nor Grad-CAM applies."]
    lead = (f"{cap(network)} ends in global average pooling and one linear layer, so its maps are class activation "
            f"maps (Zhou et al. 2016)." if method == "CAM" else
            f"CAM needs global average pooling followed by a single linear layer, which {network} does not have, "
            f"so its maps are Grad-CAM (Selvaraju et al. 2017), which weights the last convolutional layer's "
            f"feature maps by the gradient of the class score instead.")
    return answer(network, method, stats, lead, define, agreement=False)


def guided_answer(network: str, stats: dict, define: bool = True) -> list:
    """Problem 5: the same questions for guided backpropagation of `network`, and how well it agrees
    with the class activation map."""
    lead = (("Guided backpropagation (Springenberg et al. 2015) takes the gradient of the class score with respect to the image, letting no "
             "negative gradient back through any ReLU, and shows its size summed over the colour channels; " if define
             else "") + f"for {network} these maps have the image's full resolution.")
    lead = cap(lead)
    return answer(network, "guided backprop", stats, lead, define, agreement=True)
