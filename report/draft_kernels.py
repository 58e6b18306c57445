"""Answer text for the kernel questions, from kernel_vis.py's JSON: Fashion-MNIST question 9 (how
the features evolve through the CNN) and HW2 Problem 3(b) (are the first-layer filters Gabor-like).

Each function returns plain-text paragraphs (no markup); every claim is conditional on the numbers
it is given. Files read (relative to a run folder such as runs/fashionmnist-cnn/):

- kernels/feature_stats.json (`feature_path_answer`), written by kernel_vis.py:
  {"sample": "test image #0 (Ankle boot)", "input_shape": [C, H, W], "test_images": 256 (0: only the sample was measured),
   "measures": {key: definition}, "stages": [{"name", "label" (plain words, e.g. "conv 1 + batch
   norm + ReLU"), "shape": [C, H, W], "sample": {"active_fraction", "edge_correlation",
   "shape_correlation"}, "test_mean": the same averaged over the test images, or null}]}
  (a correlation is null when every map of the stage was constant).
- kernels/gabor.json (`gabor_answer`), written by kernel_vis.py: {"threshold", "kernel_size",
  "meaningful", "weight_correlation_trained_untrained", "trained": {"r2", "share_above_threshold",
  "median_r2"}, "untrained": {the same}, ...}.
"""
import re
from collections import Counter

import words  # report/words.py: report/ is on the path of its callers

CLEAR = 0.1    # correlations closer than this count as a tie: too slight a gap to name what a stage follows
WEAK = 0.1     # a stage whose correlations are both below this follows neither reference
SHIFT = 0.15   # a change in Gabor share (trained - untrained) counted as a real difference


def _pct(x: float) -> str:
    return words.pct(x, digits=0)


def _shape(shape) -> str:
    c, h, w = shape
    return f"{c} channels of {h}x{w}"


def _measured(stage: dict) -> dict:
    return stage["test_mean"] or stage["sample"]


def _lean(m: dict) -> str | None:
    """'edges', 'shape', 'both' (a tie), 'neither' (both correlations weak) or None (no
    correlation: constant maps)."""
    e, s = m["edge_correlation"], m["shape_correlation"]
    if e is None or s is None:
        return None
    if max(e, s) < WEAK:
        return "neither"
    return "edges" if e - s > CLEAR else "shape" if s - e > CLEAR else "both"


def _stage_sentence(stage: dict) -> str:
    m = _measured(stage)
    text = f"{stage['label']} ({_shape(stage['shape'])}): {_pct(m['active_fraction'])} of units active"
    if _lean(m) is None:
        return text + ", and its maps are constant, so they follow neither edges nor the silhouette"
    return (text + f", correlation {m['edge_correlation']:.2f} with the edges and {m['shape_correlation']:.2f} "
            f"with the silhouette")


LEAN_WORDS = {"edges": "follows the edges more than the silhouette",
              "shape": "follows the whole silhouette more than its edges",
              "both": "follows edges and silhouette about equally",
              "neither": f"follows neither edges nor silhouette (both correlations below {WEAK})",
              None: "is constant, so it follows neither"}


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _distinct_labels(stages: list) -> list:
    """The stages with every label unique: a label used twice ('batch norm + ReLU') gets the conv
    it follows ('batch norm + ReLU after conv 3'), as the feature-path figure notes under it."""
    counts, conv, out = Counter(s["label"] for s in stages), None, []
    for s in stages:
        found = re.findall(r"conv (\d+)", s["label"])
        conv = found[-1] if found else conv
        label = s["label"] if counts[s["label"]] == 1 or found or conv is None else f"{s['label']} after conv {conv}"
        out.append({**s, "label": label})
    return out


def feature_path_answer(stats: dict) -> list[str]:
    """Fashion-MNIST question 9: how the features evolve through the CNN and why the hierarchy
    helps classification, from feature_stats.json."""
    stages = _distinct_labels(stats["stages"])
    if not stages:
        return ["The network has no convolution or pooling stage to describe."]
    # the first stage after an activation: a conv or pool before its ReLU is not yet a feature detector
    first = next((s for s in stages if "relu" in s["label"].lower()), stages[0])
    last = stages[-1]
    where = (f"averaged over the first {stats['test_images']} test images" if stats.get("test_images")
             else f"on the sample ({stats['sample']})")
    (c0, h0, w0), (c1, h1, w1) = first["shape"], last["shape"]
    size = ("shrink" if h1 * w1 < h0 * w0 else "keep their size" if h1 * w1 == h0 * w0 else "grow")
    overview = (f"The feature-map figure follows the sample ({stats['sample']}) through {len(stages)} stages. "
                f"The maps {size} from {h0}x{w0} at {first['label']} to {h1}x{w1} at {last['label']}, while the "
                f"number of channels goes from {c0} to {c1}. To say what each stage responds to we measured, "
                f"{where}, the share of active units (above zero) and how closely each stage's response map (the "
                f"mean absolute activation over its channels, scaled up to the image size) correlates with the "
                f"image's edges (the Sobel gradient magnitude, large where brightness changes) and with its "
                f"silhouette (the garment's whole area). Per stage: "
                + "; ".join(_stage_sentence(s) for s in stages) + ".")

    m0, m1 = _measured(first), _measured(last)
    lean0, lean1 = _lean(m0), _lean(m1)
    # name the two stages compared: the first one after an activation need not be the figure's first panel
    one, end = f"the first stage after a ReLU ({first['label']})", f"the last ({last['label']})"
    if lean0 == "edges" and lean1 == "shape":
        trend = ("So the features move from low-level edge detection to responses to the garment as a whole: "
                 f"{one} {LEAN_WORDS[lean0]}, {end} {LEAN_WORDS[lean1]}.")
    elif lean0 == lean1:
        trend = (f"{cap(one)} {LEAN_WORDS[lean0]}, and so does {end}, so by this measure the network does "
                 "not move from edges to whole shapes; what changes is the scale at which it looks.")
    else:
        trend = (f"{cap(one)} {LEAN_WORDS[lean0]} and {end} {LEAN_WORDS[lean1]}; this is not the "
                 "textbook move from edges to whole shapes.")
    # a stage in between that follows neither reference, or turns back to the edges after one that
    # followed the silhouette, breaks a steady edges-to-shape story
    middle = stages[stages.index(first) + 1:-1]
    leans = [_lean(_measured(s)) for s in middle]
    quiet = [s for s, lean in zip(middle, leans) if lean == "neither"]
    back = [s for i, (s, lean) in enumerate(zip(middle, leans)) if lean == "edges" and {"shape", "both"} & set(leans[:i])]
    breaks = ([f"{' and '.join(s['label'] for s in quiet)} follow{'s' if len(quiet) == 1 else ''} neither (both "
               f"correlations below {WEAK:g})"] if quiet else []) + \
             [f"{s['label']} turns back to the edges ({_measured(s)['edge_correlation']:.2f} against "
              f"{_measured(s)['shape_correlation']:.2f})" for s in back]
    if breaks:
        trend += f" The change is not a steady one: in between, {'; '.join(breaks)}."
    a0, a1 = m0["active_fraction"], m1["active_fraction"]
    between = f"from {first['label']} to {last['label']}"
    sparsity = (f" The share of active units falls {between}, from {_pct(a0)} to {_pct(a1)}: deeper units fire "
                "more selectively, each on fewer positions." if a1 < a0 - 0.05 else
                f" The share of active units rises {between}, from {_pct(a0)} to {_pct(a1)}: deeper units fire "
                "more broadly." if a1 > a0 + 0.05 else
                f" The share of active units stays near {_pct((a0 + a1) / 2)} {between}.")

    pools = sum("pool" in s["label"] for s in stages)
    c, h, w = stats.get("input_shape") or first["shape"]
    pixels = h * w if c == 1 else f"{c}x{h * w}"
    why = (f"Why the hierarchy helps classification: each convolution combines the previous stage's features "
           f"over a small neighbourhood, so after {pools} pooling stage{'s' if pools != 1 else ''} a unit of the "
           f"last stage summarises a large part of the image, and pooling keeps the strongest response of a "
           f"neighbourhood, so a small shift of the garment changes it little. The classifier then sees "
           f"{c1 * h1 * w1} numbers ({c1}x{h1}x{w1}), each summarising a neighbourhood of features, rather "
           f"than {pixels} raw pixels whose meaning changes with every shift, so classes that differ in shape "
           f"(a sandal's straps against a sneaker's closed upper, a shirt's sleeves against a bag) can be told "
           f"apart from them.")
    return [overview, trend + sparsity, why]


def gabor_answer(network: str, gabor: dict, define: bool = True) -> list[str]:
    """HW2 3(b): whether the first-layer filters resemble Gabor filters, from gabor.json's fits of
    the trained network and of an untrained one of the same shape. One paragraph; define=False
    leaves out the definition of a Gabor filter (for the second network)."""
    tr, un = gabor["trained"]["share_above_threshold"], gabor["untrained"]["share_above_threshold"]
    k, n = gabor["kernel_size"], len(gabor["trained"]["r2"])
    definition = ("A Gabor filter is a stripe pattern (a cosine wave) under a Gaussian window, the shape of edge "
                  "detectors in the visual cortex. " if define else "")
    numbers = (f"{definition}We fitted one to each of the {n} first-layer {k}x{k} kernels of "
               f"{network}: it explains at least {_pct(gabor['threshold'])} of the kernel's variation "
               f"(R² ≥ {gabor['threshold']}) for {_pct(tr)} of the trained kernels (median R² "
               f"{gabor['trained']['median_r2']:.2f}), against {_pct(un)} of the kernels of the same network "
               f"untrained (median {gabor['untrained']['median_r2']:.2f}).")
    if not gabor["meaningful"]:
        answer = ("Yes, somewhat" if tr - un >= SHIFT else "No")
        verdict = (f" {answer}: a {k}x{k} kernel has {k * k} pixels for the Gabor function's 9 parameters, so almost "
                   f"any kernel fits (the figures' best fits are close for that reason); only the comparison with the "
                   "untrained network says something, and "
                   + ("it shows more Gabor-like kernels after training." if tr - un >= SHIFT else
                      "it shows fewer Gabor-like kernels after training: no sign of Gabor filters." if un - tr >= SHIFT
                      else "it shows no real difference, so training did not make them Gabor filters."))
    elif tr - un >= SHIFT and tr >= 0.3:
        verdict = " So yes: training made the kernels clearly more Gabor-like than they were at initialization."
    elif tr >= 0.3:
        verdict = (" Many kernels fit, but about as many untrained ones do, so there is no evidence that training "
                   "produced Gabor filters.")
    else:
        verdict = " So no: few kernels are Gabor-like."
    corr = gabor.get("weight_correlation_trained_untrained")
    if corr is not None and corr > 0.9:
        verdict += (f" The trained kernels still correlate {corr:.2f} with their own initial values: training "
                    "changed them little, which limits what any comparison can show.")
    return [numbers + verdict]
