"""report/draft_saliency.py: the interpretation sentences follow the numbers they are given
(crafted saliency_stats.json contents), and read a real cam.py --stats output."""
import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
import draft_saliency as d  # noqa: E402


def _group(centre, top, n):
    return {"centre": {"mean": centre, "std": 0.1, "n": n}, "top": {"mean": top, "std": 0.1, "n": n}}


def _deletion(auc, random_auc, p=1e-6):
    return {"auc": auc, "random_auc": random_auc, "diff": random_auc - auc, "faster_share": 0.9, "p": p, "n": 200}


def _method(centre=0.7, top=0.5, wrong_centre=None, wrong_top=None, p=0.001, auc=0.2, random_auc=0.4, dp=1e-6,
            blur=None, size=(4, 4)):
    wc, wt = wrong_centre if wrong_centre is not None else centre, wrong_top if wrong_top is not None else top
    out = {"empty_maps": 0, "all": _group(centre, top, 200), "right": _group(centre, top, 150),
           "wrong": _group(wc, wt, 50), "native_size": list(size),
           "right_vs_wrong": {"centre": {"diff": centre - wc, "p": p}, "top": {"diff": top - wt, "p": p}},
           "deletion": _deletion(auc, random_auc, dp)}
    if blur is not None:
        out["deletion_blur"] = _deletion(*blur)
    return out


def stats(cam=None, guided=None, agree=0.7, sanity_cam=0.05, method="CAM"):
    return {"images": 200, "right": 150, "wrong": 50, "cam_method": method,
            "uniform": {"centre": 0.47, "top": 0.1}, "centre_area": 0.5, "top_share": 0.1,
            "methods": {method: cam or _method(), "guided backprop": guided or _method()},
            "agreement": [{"a": method, "b": "guided backprop", "mean": agree, "std": 0.2, "n": 200}],
            "shown": {"index": [3, 17, 42, 99], "correct": [True, True, False, False], "size": [32, 32],
                      "predicted": ["cat", "dog", "cat", "ship"], "true": ["cat", "dog", "dog", "truck"],
                      "methods": {method: {"centre": [0.9, 0.8, 0.2, 0.3], "top": [0.6, 0.5, 0.3, 0.2],
                                           "peak": [[16, 16], [15, 17], [1, 2], [30, 16]],
                                           "peak_centre": [True, True, False, False]},
                                  "guided backprop": {"centre": [0.5] * 4, "top": [0.4] * 4,
                                                      "peak": [[16, 16]] * 4, "peak_centre": [True] * 4}}},
            "sanity": {method: {"top_layer": "fc", "after_top": 0.4, "after_all": sanity_cam, "layers": 9, "images": 32},
                       "guided backprop": {"top_layer": "fc", "after_top": 0.9, "after_all": 0.8, "layers": 9,
                                           "images": 32}}}


def text(paragraphs):
    assert paragraphs and all(isinstance(p, str) and p for p in paragraphs)
    return " ".join(paragraphs)


def test_centre_and_concentration_follow_the_numbers():
    centred = text(d.cam_answer("net", stats(cam=_method(centre=0.8, top=0.6))))
    assert "80%, more than the 47% a flat map would put there" in centred
    assert "concentrated on a few small regions" in centred and "6.0 times" in centred
    border = text(d.cam_answer("net", stats(cam=_method(centre=0.3, top=0.12))))
    assert "30%, less than the 47%" in border and "spread over much of the image" in border
    assert "concentrated on a few" not in border
    even = text(d.cam_answer("net", stats(cam=_method(centre=0.48, top=0.2))))
    assert "48%, about the same as the 47%" in even and "moderately concentrated" in even


def test_close_centre_shares_get_the_same_words():
    """56% and 58% (a flat map: 47%) must not read as 'even' and 'mostly middle' in one report."""
    a = text(d.cam_answer("net", stats(cam=_method(centre=0.56))))
    b = text(d.cam_answer("net", stats(cam=_method(centre=0.58))))
    assert "56%, more than the 47%" in a and "58%, more than the 47%" in b


def test_words_follow_the_printed_numbers():
    """A verdict is decided on the rounded number the reader sees, so 0.198 printed as 0.20 is not
    'below 0.2', and 49.6% against a flat 47% (printed 50% and 47%) is 'more than'."""
    assert "agree only weakly (Spearman rank correlation 0.20" in text(d.guided_answer("net", stats(agree=0.198)))
    assert "hardly agree" in text(d.guided_answer("net", stats(agree=0.194)))
    assert "50%, more than the 47%" in text(d.cam_answer("net", stats(cam=_method(centre=0.496))))
    s = stats(cam=_method(centre=0.496))
    s["uniform"]["centre"] = 0.4727
    assert "50%, more than the 47%" in text(d.cam_answer("net", s))
    assert "3.0 times a flat map's share: the maps are concentrated" in text(d.cam_answer("net", stats(cam=_method(top=0.2996))))
    assert "lowers the probability sooner" in text(d.cam_answer("net", stats(cam=_method(auc=0.2549, random_auc=0.2651))))
    assert "does no better" in text(d.cam_answer("net", stats(cam=_method(auc=0.2551, random_auc=0.2749))))  # 0.26, 0.27


def test_right_and_wrong_differ_or_not():
    differ = text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.3, p=0.001))))
    assert "more concentrated on right answers than on wrong ones (top pixels 60% against 30%" in differ
    assert "p = 0.001" in differ
    assert "central box's share differs reliably but by less than 3 points, too little to matter (70% against 70%, p = 0.001)" in differ
    same = text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.3, p=0.4))))   # big but unreliable
    assert "look alike" in same and "more concentrated on right" not in same
    tiny = text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.59, p=0.001))))  # reliable but tiny
    assert "look alike" in tiny and "differs reliably but by less than" in tiny  # says why, beside its p
    assert "p < 0.001" in text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.59, p=0.0002))))
    few = stats()
    few["methods"]["CAM"]["wrong"] = _group(0.7, 0.5, 3)
    assert "too small" in text(d.cam_answer("net", few))


def test_agreement_follows_the_correlation():
    assert "rank the pixels alike" in text(d.guided_answer("net", stats(agree=0.7)))
    assert "agree only weakly" in text(d.guided_answer("net", stats(agree=0.3)))
    none = text(d.guided_answer("net", stats(agree=0.05)))
    assert "hardly agree" in none and "Guided backpropagation and CAM" in none


def test_deletion_says_whether_the_map_points_at_used_evidence():
    used = text(d.cam_answer("net", stats(cam=_method(auc=0.2, random_auc=0.4))))
    assert "deletion curve" in used and "lowers the probability sooner than deleting in the order of a random 4 x 4 map" in used
    assert "area 0.20 against 0.40" in used
    no = text(d.cam_answer("net", stats(cam=_method(auc=0.395, random_auc=0.4))))     # too small a gap
    assert "does no better than" in no
    worse = text(d.cam_answer("net", stats(cam=_method(auc=0.5, random_auc=0.4))))
    assert "lowers it more slowly than" in worse
    assert "deletion curve" not in text(d.cam_answer("net", stats(), define=False))
    pixels = text(d.guided_answer("net", stats(guided=_method(size=(32, 32)))))
    assert "deleting in a random pixel order" in pixels and "4 x 4" not in pixels


def test_deletion_with_a_blurred_fill_agrees_or_not():
    both = text(d.cam_answer("net", stats(cam=_method(auc=0.2, random_auc=0.4, blur=(0.3, 0.45)))))
    assert "and so it does when the deleted pixels take a blurred copy's values instead (area 0.30 against 0.45)" in both
    only_mean = text(d.cam_answer("net", stats(cam=_method(auc=0.2, random_auc=0.4, blur=(0.44, 0.45)))))
    assert "but not when the deleted pixels take a blurred copy" in only_mean
    only_blur = text(d.cam_answer("net", stats(cam=_method(auc=0.4, random_auc=0.4, blur=(0.3, 0.45)))))
    assert "does no better than" in only_blur and "but it does reliably better when" in only_blur
    assert "blurred" not in text(d.cam_answer("net", stats()))   # an older file without the check


def test_sanity():
    passed = text(d.cam_answer("net", stats(sanity_cam=0.05)))
    assert "they depend on what the network learned" in passed
    failed = text(d.guided_answer("net", stats()))             # guided backprop: 0.80 after all layers
    assert "survives random weights" in failed
    no_sanity = stats()
    no_sanity["sanity"] = None
    assert "randomization" not in text(d.cam_answer("net", no_sanity))


def test_the_answer_starts_with_what_the_shown_maps_cover():
    first = d.cam_answer("net", stats())[0]
    assert "the figure's 4 images (2 right, 2 wrong)" in first
    assert "peaks inside the central box (the middle half" in first
    assert "on #3 (right: a cat) and #17 (right: a dog), and outside it on #42 (wrong: a dog taken for a cat), at the " \
           "top left, and #99 (wrong: a truck taken for a ship), at the bottom" in first
    assert "between 20% and 90% of each map's mass, against 47% for a flat map" in first
    assert "85% on average on the right answers and 25% on the wrong ones" in first
    assert "randomly drawn" not in first                      # the sample comes after, in its own paragraph
    gbp = d.guided_answer("net", stats())[0]
    assert "every map peaks inside the central box" in gbp
    old = stats()                                              # a file written before peaks were recorded
    for m in old["shown"]["methods"].values():
        del m["peak"], m["peak_centre"]
    old_first = d.cam_answer("net", old)[0]
    assert "In the figure's 4 images (2 right, 2 wrong), the central box (the middle half" in old_first
    assert "peaks" not in old_first and "holds between 20% and 90%" in old_first


def test_a_shorter_answer_after_the_first_network():
    first, second = text(d.cam_answer("net", stats())), text(d.cam_answer("net", stats(), define=False))
    assert "middle half" in first and "middle half" not in second and len(second) < len(first) - 300


def test_grad_cam_on_a_dense_network_says_why():
    s = stats(method="Grad-CAM")
    out = text(d.cam_answer("the VGG-style network", s))
    assert out.startswith("CAM needs global average pooling") and "Grad-CAM maps" not in out[:20]
    s["methods"]["Grad-CAM"]["empty_maps"] = 150
    assert "150 maps that are zero everywhere left out" in text(d.cam_answer("net", s))
    assert "says little" in text(d.cam_answer("net", s))


def test_no_markup_or_internal_names():
    for fn in (d.cam_answer, d.guided_answer):
        out = text(fn("net", stats()))
        for bad in ("_", "*", "#{", "GAPNet", "None", "nan"):
            assert bad not in out, bad
