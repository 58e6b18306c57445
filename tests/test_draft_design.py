"""report/draft_design: the account of how each CIFAR-10 design was reached says what the recorded
trials measured, and no more."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
import draft_design  # noqa: E402


def trial(name, arch, change, vals, decision, compared_to=None, seconds=100, group="g", reason="a reason"):
    return {"name": name, "group": group, "arch": arch, "change": change, "timing": "train",
            "runs": [{"seed": s, "val_accuracy": v, "test_accuracy": None, "seconds": seconds} for s, v in enumerate(vals)],
            "compared_to": compared_to, "decision": decision, "reason": reason}


def crafted(delta_small=0.003, delta_big=-0.0412):
    return {"budget": {"minutes": 20, "cores": 2, "quick_minutes": 5},
            "groups": {"g": "Are the blocks worth it?"},
            "trials": [trial("base", "gap", "none: the start", [0.80], "baseline", seconds=200),
                       trial("small", "gap", "learning rate 0.2", [0.80 + delta_small], "dropped", "base",
                             reason="too small to matter"),
                       trial("big", "gap", "no residual blocks", [0.80 + delta_big], "dropped", "base", seconds=120),
                       trial("d0", "dense", "dropout 0.2", [0.85, 0.86], "dropped", "d1", group="h"),
                       trial("d1", "dense", "no dropout", [0.86, 0.87], "kept", "d0", group="h")]}


def text(arch, trials):
    return " ".join(draft_design.design_answer(arch, trials))


def test_a_tightened_budget_is_told_after_the_first():
    trials = crafted()
    trials["budget"]["later"] = "within 6 minutes on 2 cores held to AVX2"
    out = text("gap", trials)
    assert "at first one training run was to fit within 20 minutes" in out
    assert "; later within 6 minutes on 2 cores held to AVX2, so each change" in out
    assert "at first" not in text("gap", crafted())


def test_differences_are_measured_and_small_ones_called_noise():
    out = text("gap", crafted())
    assert "Are the blocks worth it?" in out and "20 minutes on a 2-core CPU" in out
    assert "Learning rate 0.2: 80.30% validation accuracy (one seed) against 80.00% for the starting network " \
           "(0.30 points higher, within the seed-to-seed spread)" in out
    assert "No residual blocks: 75.88% validation accuracy (one seed) against 80.00% for the starting network " \
           "(4.12 points lower), in 120 s of training against 200 s" in out
    assert "Not kept: too small to matter." in out
    assert "dropout" not in out  # the other network's trials stay out


def test_a_larger_difference_is_not_called_noise():
    out = text("gap", crafted(delta_small=0.006))
    assert "(0.60 points higher)" in out and "seed-to-seed" not in out.split("Learning rate 0.2")[1].split(".")[2]


def test_seeds_are_averaged_and_compared_one_by_one():
    out = text("dense", crafted())
    assert "No dropout: 86.50% validation accuracy (the mean of 2 seeds) against 85.50% for dropout 0.2 " \
           "(1.00 points higher; higher with each of the 2 seeds)" in out
    assert "Kept: a reason." in out
    assert out.startswith("The network follows the VGG design")


def test_a_kept_change_that_measured_lower_says_so():
    trials = crafted()
    trials["trials"][4]["runs"][0]["val_accuracy"] = 0.80  # no dropout now lower on average
    out = text("dense", trials)
    assert "higher with 1 of the 2 seeds, lower with the other" in out
    assert "the time budget decided for it" in out


def test_a_seed_with_equal_accuracy_is_not_called_lower():
    trials = crafted()
    trials["trials"][4]["runs"][0]["val_accuracy"] = trials["trials"][3]["runs"][0]["val_accuracy"]
    out = text("dense", trials)
    assert "higher with 1 of the 2 seeds, the same with the other" in out and "lower with the other" not in out


def test_without_trials_only_the_starting_point(tmp_path):
    assert draft_design.load_trials(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert draft_design.load_trials(tmp_path / "bad.json") is None
    out = draft_design.design_answer("gap", None)
    assert "Network in Network" in out[0] and "not recorded" in out[-1]


def test_the_recorded_trials_read_in_plain_words():
    trials = draft_design.load_trials()
    assert trials is not None
    for arch in ("dense", "gap"):
        out = text(arch, trials)
        for jargon in ("TTA", "preset", "GAPNet", "--", "bf16", "None", "nan"):
            assert jargon not in out, (arch, jargon)
    json.dumps(trials)


def test_times_compare_only_when_measured_alike():
    """Seconds of a trial that shared the machine, or ran in another precision or on a CPU unlike
    the other's in bfloat16 support, are not set against each other."""
    for change in ({"conditions": "two runs side by side"}, {"precision": "bfloat16 autocast"},
                   {"machine": {"cpu_bf16": True}}):
        trials = crafted()
        trials["trials"][2].update(change)
        out = text("gap", trials)
        assert "No residual blocks: 75.88% validation accuracy" in out and "120 s of training" not in out
    assert "in 120 s of training against 200 s" in text("gap", crafted())


def test_a_one_seed_trial_is_read_against_the_same_seed_of_a_two_seed_base():
    """Set against a base of two seeds, a trial of one seed is compared with that seed's run (not
    with the mean of both): the number the reason beside it quotes."""
    trials = crafted()
    trials["trials"].append(trial("d2", "dense", "7 epochs", [0.845], "dropped", "d1", group="h"))
    out = text("dense", trials)
    assert "7 epochs: 84.50% validation accuracy (one seed) against 86.00% for no dropout with the same seed " \
           "(1.50 points lower)" in out
    assert "against 86.50% for no dropout" in out  # the two-seed trial d0 is still read against the mean


def test_the_closing_note_is_not_counted_as_a_group_of_trials():
    trials = crafted()
    trials["trials"].append(trial("d2", "dense", "7 epochs", [0.845], "dropped", "d1", group="h"))
    out = draft_design.design_answer("dense", trials)
    assert out[-1].startswith(draft_design.SEED_NOTE)
    assert sum(not p.startswith(draft_design.SEED_NOTE) for p in out[2:]) == 1  # group "h" alone


def test_a_baseline_with_a_label_is_named_by_it():
    trials = crafted()
    trials["trials"][0]["label"] = "the default rerun"
    out = text("gap", trials)
    assert "against 80.00% for the default rerun (0.30 points higher" in out and "starting network" not in out


def test_a_dropped_more_accurate_change_blames_its_time_only_when_it_took_longer():
    for seconds, blamed in ((300, True), (150, False)):  # the base took 200 s
        trials = crafted(delta_big=0.02)
        trials["trials"][2]["runs"][0]["seconds"] = seconds
        out = text("gap", trials)
        assert ("the time it took decided against it" in out) == blamed, seconds
