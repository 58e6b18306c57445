"""report/draft_cifar.py: answer text built from crafted run files says what the numbers say."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
import cifar10  # noqa: E402
import draft_cifar  # noqa: E402
from test_cifar10 import ablation_rows  # noqa: E402

SETTING = {"epochs": 5, "channels": [24, 48, 96], "lr": 0.1, "batch_size": 512, "dropout": 0.2,
           "dropout_position": "in the dense head, before each of its 2 linear layers", "seeds": [0, 1, 2],
           "default_network": {"epochs": 9, "channels": [48, 96, 192], "lr": 0.2, "batch_size": 256, "dropout": 0.0}}


def ablation(with_bn, without_bn, seeds=(0, 1, 2)):
    rows = ablation_rows(with_bn, without_bn, seeds)
    return {"setting": {**SETTING, "seeds": list(seeds)}, "effects": cifar10.ablation_effects(rows), "variants": rows}


def text(paragraphs) -> str:
    assert all(isinstance(p, str) and p for p in paragraphs)
    return " ".join(paragraphs)


def test_dropout_helps_with_batch_norm_and_hurts_without():
    a = ablation({True: [0.82, 0.83, 0.84], False: [0.80, 0.81, 0.82]},
                 {True: [0.50, 0.52, 0.54], False: [0.56, 0.58, 0.60]})
    out = text(draft_cifar.dropout_answer("dense", a))
    assert "With batch normalization, dropout raised validation accuracy (from 81.00% ± 1.00 without it to " \
           "83.00% ± 1.00 with it, +2.00 points" in out
    assert "Without batch normalization, dropout lowered validation accuracy (from 58.00% ± 2.00 without it to " \
           "52.00% ± 2.00 with it, −6.00 points" in out
    assert "−2.00" not in out and "within the spread" not in out.split("Overfitting")[0]  # never averaged
    assert "p = 0.2, in the dense head, before each of its 2 linear layers" in out
    assert "The four versions are those of item (c)" in out and "To measure this" not in out  # said once, in (c)
    setting = text(draft_cifar.batchnorm_answer("dense", a))
    assert "three random seeds" in setting and "mean ± the standard deviation" in setting
    assert "shorter and narrower than the final network (nine epochs, 48-96-192 channels" in setting
    # the ablation (its own shorter setting) favoured dropout, the final network has none: said and explained
    assert ("The final network uses no dropout, although in the ablation, with batch normalization, the variants "
            "with dropout reached the higher validation accuracy; the ablation ran a different setting (item (c))") in out
    same = {"config": {"epochs": 5, "channels": [24, 48, 96], "lr": 0.1}, "dropout": 0.0}  # the ablation's own
    assert text(draft_cifar.dropout_answer("dense", a, same)).endswith("reached the higher validation accuracy.")
    # a lean within the seeds' spread is no lean: nothing to explain
    close = ablation({True: [0.80, 0.84, 0.82], False: [0.81, 0.82, 0.83]}, {True: [0.5] * 3, False: [0.6] * 3})
    assert text(draft_cifar.dropout_answer("dense", close)).endswith("The final network uses no dropout.")
    assert "dropout widened it by 0.100" in out  # the crafted gaps: 0.2 with dropout, 0.1 without


def test_a_difference_within_the_seed_spread_is_called_so():
    a = ablation({True: [0.80, 0.84, 0.82], False: [0.81, 0.82, 0.83]},
                 {True: [0.50, 0.52, 0.54], False: [0.56, 0.58, 0.60]})
    out = text(draft_cifar.dropout_answer("gap", a))
    with_bn = out.split("With batch normalization, ")[1].split("Without batch")[0]
    assert "did not change" in with_bn and "within the spread between seeds (up to 2.00 points)" in with_bn
    assert "three seeds cannot tell it from chance" in with_bn
    one = ablation({True: [0.8], False: [0.7]}, {True: [0.5], False: [0.6]}, seeds=(0,))
    assert "from one seed, so how much of it is chance is unknown" in text(draft_cifar.dropout_answer("gap", one))


def test_batch_norm_answer_per_dropout_setting_and_the_final_setting_named():
    a = ablation({True: [0.82, 0.83, 0.84], False: [0.80, 0.81, 0.82]},
                 {True: [0.50, 0.52, 0.54], False: [0.56, 0.58, 0.60]})
    final = {"config": {"epochs": 12, "channels": [40, 80, 160], "lr": 0.2}, "dropout": 0.1}
    out = text(draft_cifar.batchnorm_answer("gap", a, final))
    assert "Without dropout, batch normalization raised validation accuracy (from 58.00% ± 2.00 without it to " \
           "81.00% ± 1.00 with it, +23.00 points" in out
    assert "With dropout (p = 0.2), batch normalization raised validation accuracy (from 52.00% ± 2.00" in out
    assert "(12 epochs, 40-80-160 channels, peak learning rate 0.2)" in out
    assert "The final network uses dropout p = 0.1." in text(draft_cifar.dropout_answer("gap", a, {**final}))  # agrees


def test_the_setting_sentence_names_another_optimizer_as_a_difference():
    a = ablation({True: [0.82], False: [0.80]}, {True: [0.50], False: [0.56]})
    same = {"config": {**a["setting"], "optimizer": "sgd"}, "dropout": 0.1}
    assert "That is" not in draft_cifar.setting_sentence("gap", a, same)
    muon = {"config": {**a["setting"], "optimizer": "muon"}, "dropout": 0.1}
    out = draft_cifar.setting_sentence("gap", a, muon)
    assert "Muon for the convolution filters)" in out and "differ at the final network's optimizer." in out


def test_the_setting_sentence_names_the_ablations_batch_and_optimizer():
    a = ablation({True: [0.82], False: [0.80]}, {True: [0.50], False: [0.56]})
    a["setting"] = {**a["setting"], "batch_size": 512, "optimizer": "muon", "lr": 0.1}
    final = {"config": {**a["setting"], "batch_size": 256, "lr": 0.2}, "dropout": 0.1}
    out = draft_cifar.setting_sentence("gap", a, final)
    assert "batch 512, Muon for the convolution filters and a peak learning rate of 0.1 for the other parameters." in out
    assert "differ at the final network's learning rate and batch size." in out
    assert "batch size" not in draft_cifar.setting_sentence("gap", a, {"config": {**final["config"], "batch_size": 512}})


def test_the_setting_sentence_names_fewer_residual_blocks_as_shallower():
    a = ablation({True: [0.82], False: [0.80]}, {True: [0.50], False: [0.56]})
    a["setting"] = {**a["setting"], "blocks": [0, 1, 1]}
    final = {"config": {**a["setting"], "blocks": [1, 1, 1]}, "dropout": 0.1}
    out = draft_cifar.setting_sentence("gap", a, final)
    assert "24-48-96 channels, batch 512" in out and ", 0-1-1 residual blocks per stage." in out
    assert "That is shallower than the final network (five epochs, 24-48-96 channels, peak learning rate 0.1, " \
           "1-1-1 residual blocks per stage)" in out and "differ at the final network's depth." in out
    assert "That is" not in draft_cifar.setting_sentence("gap", a, {"config": a["setting"], "dropout": 0.1})


def test_loss_answer_reads_the_gap_from_eval_mode_losses():
    history = [{"epoch": "1", "train_loss": "1.9", "train_eval_loss": "1.2", "val_loss": "1.25"},
               {"epoch": "2", "train_loss": "1.4", "train_eval_loss": "0.6", "val_loss": "0.85"},
               {"epoch": "3", "train_loss": "1.2", "train_eval_loss": "0.4", "val_loss": "0.9"}]
    out = text(draft_cifar.loss_answer("gap", {"train_eval_images": 5000}, history))
    assert "validation loss 0.900 against 0.400 on training images, a gap of +0.500" in out and "a clear generalization gap" in out
    assert "from +0.050 after the first epoch to +0.500" in out
    assert "lowest after epoch 2 (0.850) and rose afterwards" in out
    assert "5,000 training images" in out and "ends above the validation loss" in out
    flat = [{"epoch": 1, "train_loss": 0.5, "train_eval_loss": 0.71, "val_loss": 0.7}]
    out = text(draft_cifar.loss_answer("gap", {"train_eval_images": 100}, flat))
    assert "no measurable overfitting" in out and "ends above" not in out
    assert "gap went from" not in out and "fell until" not in out  # one epoch: no trend to read
    assert "dropout on" not in out  # what the run trained with: no dropout recorded here
    assert "dropout on" in text(draft_cifar.loss_answer("gap", {"dropout": 0.1}, flat))


def test_architecture_and_validation_answers_use_plain_words(tmp_path):
    import torch

    from training import build_model
    args = cifar10.parse_args(["--arch", "gap", "--channels", "8", "16", "32", "--blocks", "0", "1", "1"])
    name, margs = cifar10.model_spec(args, True, 0.1)
    model = build_model(name, margs)
    arch_text = cifar10.architecture_text(model, name, margs)
    metrics = {"batchnorm": True, "dropout": 0.1, "dropout_position": cifar10.dropout_position("gap", margs),
               "parameters": sum(p.numel() for p in model.parameters()), "train_images": 45000,
               "config": {**vars(args), "out_dir": "x"}}
    out = text(draft_cifar.architecture_answer("gap", metrics, arch_text))
    assert "three stages with 8-16-32 channels" in out and "two residual blocks" in out
    assert "global average pooling turns the 32×4×4 feature maps into 32 numbers" in out
    assert f"{metrics['parameters']:,} trainable parameters" in out and "p = 0.1" in out
    assert "first four epochs see the images shrunk to 24×24" in out  # 4 of the default 6
    assert "GAPNet" not in out and "preset" not in out and torch is not None
    v = text(draft_cifar.validation_answer("gap", {"val_accuracy": 0.8512, "val_images": 5000, "test_accuracy": 0.8401,
                                                   "test_images": 10000, "test_accuracy_tta": 0.85}))
    assert "validation accuracy: 85.12% on the 5,000 validation images" in v and "Test accuracy" in v
    assert "84.01%" in v
    flipped = text(draft_cifar.validation_answer("gap", {
        "tta": True, "val_accuracy": 0.8612, "val_accuracy_plain": 0.8555, "val_images": 5000, "test_accuracy": 0.8534,
        "test_accuracy_plain": 0.8477, "test_accuracy_tta": 0.8534, "test_images": 10000}))
    assert ("validation accuracy: 86.12% (each image's prediction averaged with its mirror image's; 85.55% from the "
            "image alone)") in flipped
    assert "85.34% (each image's prediction averaged" in flipped and "84.77% from the image alone" in flipped


def test_dense_architecture_answer_explains_the_adaptive_pooling_only_where_the_net_has_it():
    from training import build_model
    for low_res, has_it in (("24", True), ("0", False)):
        args = cifar10.parse_args(["--arch", "dense", "--channels", "8", "16", "32", "--low-res", low_res])
        name, margs = cifar10.model_spec(args, True, 0.0)
        model = build_model(name, margs)
        metrics = {"batchnorm": True, "dropout": 0.0, "parameters": sum(p.numel() for p in model.parameters()),
                   "train_images": 45000, "config": {**vars(args), "out_dir": "x"}}
        out = text(draft_cifar.architecture_answer("dense", metrics, cifar10.architecture_text(model, name, margs)))
        assert ("Adaptive average pooling to 4×4 comes before the flattening: it changes nothing on 32×32 "
                "images" in out) == has_it
        assert ("first four epochs see the images shrunk to 24×24" in out) == has_it
        assert "32×4×4 feature maps are flattened into 512 numbers" in out


def test_a_variant_that_barely_learned_is_named_and_its_gap_not_read():
    # without batch norm or dropout the net stayed near chance (14%): the 16-point "effect" of dropout
    # next to it says that variant did not train, not what dropout does
    a = ablation({True: [0.42], False: [0.42]}, {True: [0.30], False: [0.14]}, seeds=(0,))
    out = text(draft_cifar.dropout_answer("dense", a))
    without_bn = out.split("Without batch normalization, ")[1]
    assert "The variant 'neither' (14.00%, validation loss 0.60) barely learned" in without_bn
    assert "barely learned: chance is 10.00%" in without_bn and "ln 10 = 2.30" in without_bn
    assert "without it, not read (a variant barely learned" in out
    with_bn = out.split("With batch normalization, ")[1].split("Without batch")[0]
    assert "barely learned" not in with_bn  # both variants with batch norm trained
    assert "barely learned" in text(draft_cifar.batchnorm_answer("dense", a))
    # 21% is near chance too (under 2.5 times 10%): both variants without batch norm are named
    both = text(draft_cifar.dropout_answer("dense", ablation({True: [0.42], False: [0.42]},
                                                             {True: [0.21], False: [0.14]}, seeds=(0,))))
    assert "The variant 'dropout, no batch norm' (21.00%, validation loss 0.70) and 'neither' (14.00%" in both


def test_schedule_sentence_takes_the_low_res_epochs_the_run_recorded():
    """metrics.json's low_res_epochs is what the run did (a --time-budget run sets its epochs after
    parsing); only a metrics.json without it falls back to the config's epochs x fraction."""
    cfg = {"epochs": 9, "low_res": 24, "low_res_fraction": 0.56, "optimizer": "sgd", "batch_size": 256, "lr": 0.2,
           "weight_decay": 5e-4}
    recorded = draft_cifar.training_schedule(cfg, {"train_images": 45000, "epochs": 4, "low_res_epochs": 2})
    assert recorded.startswith("Training: four epochs over 45,000") and "The first two epochs see the images shrunk to 24×24" in recorded
    assert "first five epochs" in draft_cifar.training_schedule(cfg, {"train_images": 45000})
    assert "shrunk" not in draft_cifar.training_schedule(cfg, {"train_images": 45000, "low_res_epochs": 0})


def test_schedule_sentence_names_muons_filters_and_where_weight_decay_applies():
    cfg = {"epochs": 7, "low_res": 24, "low_res_fraction": 0.58, "optimizer": "muon", "muon_lr": 0.1,
           "momentum": 0.9, "batch_size": 256, "lr": 0.2, "weight_decay": 5e-4}
    text = draft_cifar.training_schedule(cfg, {"train_images": 45000, "low_res_epochs": 4})
    assert "Muon (Jordan et al. 2024) for the convolution filters" in text and "learning rate of 0.1)" in text
    assert "SGD with Nesterov momentum 0.9 for the other parameters" in text
    assert "weight decay 0.0005 on the dense weights" in text
    sgd = draft_cifar.training_schedule({**cfg, "optimizer": "sgd"}, {"train_images": 45000})
    assert "Muon" not in sgd and "weight decay 0.0005." in sgd


def test_the_gap_change_is_the_difference_of_the_printed_gaps():
    a = ablation({True: [0.82, 0.83, 0.84], False: [0.80, 0.81, 0.82]},
                 {True: [0.50, 0.52, 0.54], False: [0.56, 0.58, 0.60]})
    for row in a["variants"]:
        row["loss_gap"] = {"bn-drop": 0.0384, "bn-nodrop": 0.0246}.get(row["variant"], row["loss_gap"])
    a["effects"]["dropout"]["with_batchnorm"]["loss_gap"]["mean"] = 0.0138  # unrounded: would print 0.014
    out = text(draft_cifar.dropout_answer("dense", a))
    assert "+0.025 without dropout and +0.038 with it (dropout widened it by 0.013" in out  # 0.038 - 0.025


def test_no_dropout_gives_its_reason_from_the_design_trials():
    def trial(change, vals, epochs=9):
        return {"arch": "dense", "change": change, "epochs": epochs, "channels": [48, 96, 192],
                "runs": [{"seed": i, "val_accuracy": v} for i, v in enumerate(vals)]}
    trials = {"trials": [trial("dropout 0.2 before the dense layers", [0.84, 0.85]), trial("no dropout", [0.86, 0.87]),
                         trial("dropout 0.5", [0.10], epochs=3)]}  # another length: not the comparison
    out = draft_cifar.no_dropout_reason("dense", trials)
    assert "(9 epochs, two seeds each) it reached 86.50% validation accuracy on average without dropout" in out
    assert "against 84.50% with dropout 0.2 before the dense layers" in out and "item (d)" in out
    # no such pair of trials (another design, or no trials file): no reason is made up
    for arch, t in (("gap", trials), ("dense", {"trials": []})):
        assert draft_cifar.no_dropout_reason(arch, t) == ("The final network uses no dropout (item (d) gives what "
                                                          "dropout did in this run's ablation).")


def test_a_kept_dropout_gives_the_design_trial_that_removed_it():
    def trial(name, change, val, **kw):
        return {"name": name, "arch": "gap", "change": change, "epochs": 9, "runs": [{"seed": 0, "val_accuracy": val}],
                **kw}
    trials = {"trials": [trial("base", "none", 0.845), trial("nodrop", "no dropout instead of 0.1", 0.846,
                                                                decision="dropped", compared_to="base")]}
    out = draft_cifar.kept_dropout_reason("gap", trials)
    assert "(9 epochs, one seed) reached 84.60% validation accuracy without dropout against 84.50% with it, " \
           "a difference within what a seed changes." in out
    trials["trials"][1]["runs"][0]["val_accuracy"] = 0.86  # dropping it clearly won: no reason to give
    assert draft_cifar.kept_dropout_reason("gap", trials) == ""
    assert draft_cifar.kept_dropout_reason("dense", trials) == ""
