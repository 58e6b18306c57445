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


def _method(centre=0.7, top=0.5, wrong_centre=None, wrong_top=None, p=0.001, auc=0.2, random_auc=0.4, dp=1e-6):
    wc, wt = wrong_centre if wrong_centre is not None else centre, wrong_top if wrong_top is not None else top
    return {"empty_maps": 0, "all": _group(centre, top, 200), "right": _group(centre, top, 150),
            "wrong": _group(wc, wt, 50),
            "right_vs_wrong": {"centre": {"diff": centre - wc, "p": p}, "top": {"diff": top - wt, "p": p}},
            "deletion": {"auc": auc, "random_auc": random_auc, "diff": random_auc - auc, "faster_share": 0.9,
                         "p": dp, "n": 200}}


def stats(cam=None, guided=None, agree=0.7, sanity_cam=0.05, method="CAM"):
    return {"images": 200, "right": 150, "wrong": 50, "cam_method": method,
            "uniform": {"centre": 0.47, "top": 0.1}, "centre_area": 0.5, "top_share": 0.1,
            "methods": {method: cam or _method(), "guided backprop": guided or _method()},
            "agreement": [{"a": method, "b": "guided backprop", "mean": agree, "std": 0.2, "n": 200}],
            "shown": {"index": [3, 17, 42, 99], "correct": [True, True, False, False],
                      "methods": {method: {"centre": [0.9, 0.8, 0.2, 0.3], "top": [0.6, 0.5, 0.3, 0.2]},
                                  "guided backprop": {"centre": [0.5] * 4, "top": [0.4] * 4}}},
            "sanity": {method: {"top_layer": "fc", "after_top": 0.4, "after_all": sanity_cam, "layers": 9, "images": 32},
                       "guided backprop": {"top_layer": "fc", "after_top": 0.9, "after_all": 0.8, "layers": 9,
                                           "images": 32}}}


def text(paragraphs):
    assert paragraphs and all(isinstance(p, str) and p for p in paragraphs)
    return " ".join(paragraphs)


def test_centre_and_concentration_follow_the_numbers():
    centred = text(d.cam_answer("net", stats(cam=_method(centre=0.8, top=0.6))))
    assert "mostly on the middle" in centred and "concentrated on a few small regions" in centred
    assert "80% of a map's mass" in centred and "6.0 times" in centred
    border = text(d.cam_answer("net", stats(cam=_method(centre=0.3, top=0.12))))
    assert "toward the border" in border and "spread out" in border and "concentrated on a few" not in border
    even = text(d.cam_answer("net", stats(cam=_method(centre=0.5, top=0.2))))
    assert "about as evenly" in even and "moderately concentrated" in even


def test_right_and_wrong_differ_or_not():
    differ = text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.3, p=0.001))))
    assert "more concentrated on right answers" in differ and "p = 0.001" in differ
    same = text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.3, p=0.4))))   # big but unreliable
    assert "same kind" in same and "more concentrated on right" not in same
    tiny = text(d.cam_answer("net", stats(cam=_method(top=0.6, wrong_top=0.59, p=0.001))))  # reliable but tiny
    assert "same kind" in tiny
    few = stats()
    few["methods"]["CAM"]["wrong"] = _group(0.7, 0.5, 3)
    assert "too few" in text(d.cam_answer("net", few))


def test_agreement_follows_the_correlation():
    assert "rank the pixels alike" in text(d.cam_answer("net", stats(agree=0.7)))
    assert "agree only weakly" in text(d.guided_answer("net", stats(agree=0.3)))
    none = text(d.guided_answer("net", stats(agree=0.05)))
    assert "hardly agree" in none and "Guided backpropagation and CAM" in none


def test_deletion_says_whether_the_map_points_at_used_evidence():
    used = text(d.cam_answer("net", stats(cam=_method(auc=0.2, random_auc=0.4))))
    assert "A deletion curve" in used and "does use for its answer" in used
    no = text(d.cam_answer("net", stats(cam=_method(auc=0.395, random_auc=0.4))))     # too small a gap
    assert "does not single out" in no
    worse = text(d.cam_answer("net", stats(cam=_method(auc=0.5, random_auc=0.4))))
    assert "matter less to the network than random" in worse
    assert "A deletion curve" not in text(d.cam_answer("net", stats(), define=False))


def test_sanity_and_shown_images():
    passed = text(d.cam_answer("net", stats(sanity_cam=0.05)))
    assert "depends on what the network learned" in passed
    failed = text(d.guided_answer("net", stats()))             # guided backprop: 0.80 after all layers
    assert "survives random weights" in failed
    assert "In the 4 images of the figure, the CAM maps put between 20% and 90%" in passed
    assert "(85% on average on the 2 right and 25% on the 2 wrong ones)" in passed
    assert "most concentrated is #3" in passed and "most spread out #99" in passed
    no_sanity = stats()
    no_sanity["sanity"] = None
    assert "sanity check" not in text(d.cam_answer("net", no_sanity))


def test_grad_cam_on_a_dense_network_says_why():
    s = stats(method="Grad-CAM")
    out = text(d.cam_answer("the VGG-style network", s))
    assert out.startswith("CAM needs global average pooling") and "Grad-CAM maps" not in out[:20]
    s["methods"]["Grad-CAM"]["empty_maps"] = 150
    assert "150 of the 200 maps are zero everywhere" in text(d.cam_answer("net", s))
    assert "says little" in text(d.cam_answer("net", s))


def test_no_markup_or_internal_names():
    for fn in (d.cam_answer, d.guided_answer):
        out = text(fn("net", stats()))
        for bad in ("_", "*", "#{", "GAPNet", "None", "nan"):
            assert bad not in out, bad
