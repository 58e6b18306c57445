"""report/draft_kernels.py: the answer to Fashion-MNIST question 9 and to HW2 3(b) follows the
numbers it is given (crafted feature_stats.json and gabor.json), each claim turning with them."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("draft_kernels", ROOT / "report" / "draft_kernels.py")
dk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dk)


def stage(label, shape, active, edge, shape_corr, test=True):
    m = {"active_fraction": active, "edge_correlation": edge, "shape_correlation": shape_corr}
    return {"name": label.replace(" ", "_"), "label": label, "shape": list(shape),
            "sample": {"active_fraction": 0.99, "edge_correlation": 0.0, "shape_correlation": 0.0},
            "test_mean": m if test else None}


def stats(first, last, test_images=256):
    stages = [stage("conv 1 + batch norm + ReLU", (32, 28, 28), *first, test=bool(test_images)),
              stage("max pool 1", (32, 14, 14), 0.5, 0.4, 0.4, test=bool(test_images)),
              stage("conv 2 + batch norm + ReLU", (64, 7, 7), *last, test=bool(test_images))]
    if not test_images:
        for s in stages:
            s["sample"] = s["sample"] if s is stages[1] else None
        stages[0]["sample"] = dict(zip(("active_fraction", "edge_correlation", "shape_correlation"), first))
        stages[2]["sample"] = dict(zip(("active_fraction", "edge_correlation", "shape_correlation"), last))
    return {"sample": "test image #0 (Ankle boot)", "input_shape": [1, 28, 28], "test_images": test_images,
            "stages": stages}


def test_edges_then_shapes_is_said_with_the_numbers():
    text = " ".join(dk.feature_path_answer(stats((0.6, 0.62, 0.31), (0.2, 0.18, 0.71))))
    assert "from low-level edge detection to responses to the garment as a whole" in text
    assert "shrink from 28x28" in text and "to 7x7" in text and "from 32 to 64" in text
    assert "averaged over the first 256 test images" in text
    assert "60% of units active, correlation 0.62 with the edges and 0.31 with the silhouette" in text
    assert "falls from conv 1 + batch norm + ReLU to conv 2 + batch norm + ReLU, from 60% to 20%" in text
    assert "3136 numbers (64x7x7)" in text and "784 raw pixels" in text


def test_the_answer_turns_with_the_numbers():
    reversed_ = " ".join(dk.feature_path_answer(stats((0.2, 0.2, 0.7), (0.6, 0.7, 0.2))))
    assert "not the textbook move" in reversed_ and "edge detection to responses" not in reversed_
    assert "rises from conv 1 + batch norm + ReLU to conv 2 + batch norm + ReLU, from 20% to 60%" in reversed_
    same = " ".join(dk.feature_path_answer(stats((0.4, 0.6, 0.3), (0.42, 0.5, 0.2))))
    assert "The first stage after a ReLU (conv 1 + batch norm + ReLU) follows the edges more than the silhouette, and so does the last (conv 2 + batch norm + ReLU)" in same
    assert "stays near 41%" in same
    tie = " ".join(dk.feature_path_answer(stats((0.4, 0.5, 0.48), (0.4, 0.2, 0.7))))
    assert "first stage after a ReLU (conv 1 + batch norm + ReLU) follows edges and silhouette about equally" in tie
    weak = " ".join(dk.feature_path_answer(stats((0.4, -0.2, -0.6), (0.4, 0.2, 0.7))))
    assert "(conv 1 + batch norm + ReLU) follows neither edges nor silhouette (both correlations below 0.1)" in weak


def test_a_middle_stage_that_follows_neither_is_named():
    s = stats((0.6, 0.62, 0.31), (0.2, 0.18, 0.71))
    steady = " ".join(dk.feature_path_answer(s))
    assert "not a steady one" not in steady  # the middle stage (0.4, 0.4) follows both
    s["stages"][1]["test_mean"].update(edge_correlation=0.01, shape_correlation=-0.16)
    text = " ".join(dk.feature_path_answer(s))
    assert "from low-level edge detection" in text
    assert "The change is not a steady one: in between, max pool 1 follows neither (both correlations below 0.1)." in text


def test_a_label_used_twice_names_the_conv_it_follows_and_a_turn_back_to_edges_is_said():
    s = stats((0.6, 0.62, 0.31), (0.2, 0.18, 0.71))
    s["stages"][1:1] = [stage("batch norm + ReLU", (32, 14, 14), 0.5, 0.2, 0.6),
                        stage("conv 3 + max pool 2", (64, 7, 7), 0.5, 0.4, 0.4),
                        stage("batch norm + ReLU", (64, 7, 7), 0.45, 0.39, 0.17)]
    s["stages"][0]["label"] = "conv 1 + max pool 1"
    text = " ".join(dk.feature_path_answer(s))
    assert "batch norm + ReLU after conv 1 (32 channels of 14x14)" in text
    assert "batch norm + ReLU after conv 3 turns back to the edges (0.39 against 0.17)" in text
    assert "conv 3 + max pool 2 (64 channels of 7x7)" in text  # a unique label stays as it is


def test_constant_maps_and_sample_only():
    text = " ".join(dk.feature_path_answer(stats((0.0, None, None), (0.3, 0.1, 0.6), test_images=0)))
    assert "on the sample (test image #0 (Ankle boot))" in text and "averaged" not in text
    assert "its maps are constant" in text
    assert "is constant, so it follows neither" in text


def gabor(tr, un, k=7, corr=0.1, meaningful=True):
    return {"threshold": 0.7, "kernel_size": k, "meaningful": meaningful,
            "weight_correlation_trained_untrained": corr,
            "trained": {"r2": [0.8] * 16, "share_above_threshold": tr, "median_r2": 0.75},
            "untrained": {"r2": [0.3] * 16, "share_above_threshold": un, "median_r2": 0.31}}


@pytest.mark.parametrize("g, expected, absent", [
    (gabor(0.6, 0.1), "So yes: training made the kernels clearly more Gabor-like", "So no"),
    (gabor(0.5, 0.45), "no evidence that training produced Gabor filters", "So yes"),
    (gabor(0.1, 0.05), "So no: few kernels are Gabor-like", "So yes"),
    (gabor(0.9, 0.9, k=3, meaningful=False), "No: a 3x3 kernel has 9 pixels", "Yes, somewhat"),
    (gabor(0.9, 0.9, k=3, meaningful=False), "it shows no real difference", "So yes"),
    (gabor(0.95, 0.6, k=3, meaningful=False), "Yes, somewhat: a 3x3 kernel", "no real"),
    (gabor(0.95, 0.6, k=3, meaningful=False), "it shows more Gabor-like kernels after training", "No:"),
])
def test_gabor_answer_follows_the_fits(g, expected, absent):
    paragraphs = dk.gabor_answer("the VGG-style network (dense head)", g)
    assert len(paragraphs) == 1  # said once
    text = paragraphs[0]
    assert text.count("A Gabor filter is") == 1
    assert expected in text and absent not in text
    assert f"for {100 * g['trained']['share_above_threshold']:.0f}% of the trained kernels" in text
    assert "the VGG-style network (dense head)" in text
    assert "initial values" not in text


def test_gabor_answer_says_when_training_barely_moved_the_kernels():
    text = dk.gabor_answer("the CNN", gabor(0.6, 0.1, corr=0.97))[0]
    assert "still correlate 0.97 with their own initial values" in text
