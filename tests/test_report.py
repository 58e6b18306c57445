"""report/run_all.py and report/build.py: one tiny run of every step (shared by this module) builds
a PDF with every section and figure and this run's own numbers; a second run skips everything;
touching an input reruns just what reads it; a failing step blocks only its dependents and makes
the exit status nonzero; build.py lists missing inputs and still writes a PDF."""
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pypdf
import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["1. Fashion-MNIST: the two networks", "2. Fashion-MNIST CNN: kernels", "3. Conceptual questions",
            "4. MyTorch Conv2D", "5. CIFAR-10: the two networks", "6. Batch norm and dropout ablation",
            "7. Feature maps and filters", "8. Class activation maps", "9. Guided backpropagation",
            "10. Datasets"]


def load(name):
    """report/<name>.py as a module (report/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"report_{name}", ROOT / "report" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = load("run_all")
build = load("build")


def pdf_pages(path) -> list:
    """Each page's text with whitespace runs collapsed (wrapped lines become one text)."""
    return [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(path).pages]


# ---- one tiny end-to-end run, shared -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_data_dir, tmp_path_factory):
    """run_all.py --limit 128 on the fake datasets (256 training, 128 test images each)."""
    folder = tmp_path_factory.mktemp("report")
    argv = ["--limit", "128", "--runs-dir", str(folder / "runs"), "--report", str(folder / "report.pdf"),
            "--data-dir", str(tiny_data_dir)]
    proc = subprocess.run([sys.executable, str(ROOT / "report/run_all.py"), *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return argv, folder / "runs", folder / "report.pdf", proc.stdout


def read(runs, rel):
    return json.loads((runs / rel).read_text())


def expected_figures(runs) -> list:
    """Every figure the report must show for a complete run, in report order."""
    figs = [f"fashionmnist-{m}/{f}.png" for m in ("ffn", "cnn") for f in ("examples", "loss", "confusion_matrix")]
    figs += [f"fashionmnist-cnn/kernels/{f}.png" for f in ("kernels", "filtered", "feature_maps", "gabor")]
    figs += [f"cifar10-{a}/loss.png" for a in ("dense", "gap")] + [f"cifar10-{a}-ablation/ablation.png" for a in ("dense", "gap")]
    for arch in ("dense", "gap"):
        layers = [layer.replace(".", "-") for layer in read(runs, f"cifar10-{arch}/kernels/gabor.json")["layers"]]
        figs += [f"cifar10-{arch}/kernels/{kind}_{layer}.png" for kind in ("feature_maps", "filters") for layer in layers]
        figs.append(f"cifar10-{arch}/kernels/gabor.png")
    figs += ["cifar10-dense/gradcam.png", "cifar10-gap/cam.png"]
    figs += [f"cifar10-{a}/{f}.png" for f in ("guided_backprop", "sanity") for a in ("dense", "gap")]
    return figs + ["dataset/class_balance.png", "dataset/near_duplicates.png"]


def test_run_all_builds_one_pdf_with_every_section_figure_and_measured_number(tiny):
    _, runs, report, stdout = tiny
    summary = read(runs, "run_all.json")
    assert [r["status"] for r in summary["steps"]] == ["ran"] * 16 and summary["failures"] == []
    assert "[16/16] report" in stdout and (runs / "logs" / "cifar10-gap.log").stat().st_size > 0
    pages = pdf_pages(report)
    n = len(pages)
    assert [f"page {i} of {n}" in text for i, text in enumerate(pages, 1)] == [True] * n
    body = " ".join(pages[1:])  # the title page lists the sections too (contents)
    starts = [body.find(s) for s in SECTIONS]
    assert -1 not in starts and starts == sorted(starts), starts
    assert "Missing inputs" not in body

    figures = expected_figures(runs)
    assert all((runs / f).exists() for f in figures)
    numbers = [int(k) for k in re.findall(r"Figure (\d+):", body)]
    assert numbers == list(range(1, len(figures) + 1))  # one captioned figure per file, none left out

    title, text = pages[0], " ".join(pages)
    assert "TINY TEST RUN (--limit 128" in title and "CPU:" in title and "JPEG" in title
    assert f"torch {importlib.metadata.version('torch')}" in title
    made_before_report = sum(r["made_seconds"] for r in summary["steps"] if r["step"] != "report")
    assert f"{run_all.fmt_time(made_before_report)} (m:ss) of compute" in title  # build ran before its own row
    for model in ("ffn", "cnn"):
        m = read(runs, f"fashionmnist-{model}/metrics.json")
        assert f"test accuracy {100 * m['test_accuracy']:.2f}%" in text and f"{m['parameters']:,} parameters" in text
    for arch in ("dense", "gap"):
        m = read(runs, f"cifar10-{arch}/metrics.json")
        assert f"validation {100 * m['val_accuracy']:.2f}%" in text and f"test {100 * m['test_accuracy']:.2f}%" in text
        g = read(runs, f"cifar10-{arch}/kernels/gabor.json")
        assert f"fits {100 * g['trained']['share_above_threshold']:.0f}% of the" in text
    check = read(runs, "mytorch/check.json")
    assert f"{check['passed']} of {check['total']} cases pass" in text
    sanity = read(runs, "cifar10-gap/sanity.json")["steps"][-1]
    assert f"{sanity['CAM']['mean']:.2f} after all {sanity['randomized']} layers" in text


def test_second_run_skips_every_step_and_keeps_the_pdf(tiny):
    argv, runs, report, _ = tiny
    before = report.stat().st_mtime_ns
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "report/run_all.py"), *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t0 < 15  # nothing ran (one training step alone would import torch)
    summary = read(runs, "run_all.json")
    assert {r["status"] for r in summary["steps"]} == {"skipped"}
    assert summary["total_seconds"] > 0 and summary["this_run_seconds"] == 0
    assert report.stat().st_mtime_ns == before


def test_a_checkpoint_written_after_its_run_reruns_it_and_what_reads_it(tiny):
    """E.g. `python fashionmnist.py --epochs 3` into the report's folder: its numbers are not the run's."""
    argv, runs, _, _ = tiny
    ckpt = runs / "fashionmnist-cnn" / "model.pt"
    stat = ckpt.stat()
    try:
        os.utime(ckpt, (time.time() + 60, time.time() + 60))  # newer than everything made from it
        args = run_all.parse_args(argv)
        rows = run_all.execute(run_all.plan(args), args.runs_dir, dry_run=True)
    finally:
        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = {r["step"]: r["reason"] for r in rows if r["status"] == "would run"}
    assert set(again) == {"fashionmnist-cnn", "kernels-fashionmnist-cnn", "report"}
    assert again["fashionmnist-cnn"] == "model.pt was rewritten after this step ran"
    assert again["kernels-fashionmnist-cnn"] == "fashionmnist-cnn reruns"


# ---- the step runner on made-up steps (each a short python -c) ------------------------------------------

COPY = "import sys, pathlib; pathlib.Path(sys.argv[2]).write_text(pathlib.Path(sys.argv[1]).read_text() + '+')"


def copy_step(name, src, dst, needs=()):
    return run_all.Step(name, ["-c", COPY, str(src), str(dst)], [dst], [src], list(needs))


def statuses(rows) -> dict:
    return {r["step"]: r["status"] for r in rows}


def test_skips_up_to_date_steps_and_reruns_touched_ones_and_their_dependents(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    steps = [copy_step("a", tmp_path / "in.txt", tmp_path / "a.txt"),
             copy_step("b", tmp_path / "a.txt", tmp_path / "b.txt", needs=["a"]),
             copy_step("c", tmp_path / "in.txt", tmp_path / "c.txt")]
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "ran", "b": "ran", "c": "ran"}
    assert (tmp_path / "b.txt").read_text() == "x++"
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    earlier = (tmp_path / "a.txt").stat().st_mtime - 10
    os.utime(tmp_path / "b.txt", (earlier, earlier))  # as if a.txt were edited after b ran: only b reads it
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "ran", "c": "skipped"}
    later = time.time() + 60
    os.utime(tmp_path / "c.txt", (later, later))  # another command wrote c's output after c ran
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "skipped", "c": "ran"}
    steps[2].argv.append("--changed")  # another command for the same outputs: not up to date
    assert statuses(run_all.execute(steps, tmp_path)) == {"a": "skipped", "b": "skipped", "c": "ran"}
    assert statuses(run_all.execute(steps, tmp_path, force=True)) == {"a": "ran", "b": "ran", "c": "ran"}


def test_a_failing_step_blocks_only_its_dependents_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    (tmp_path / "in.txt").write_text("x")
    steps = [run_all.Step("broken", ["-c", "import sys; print('boom'); print('error: no data here; put it there', "
                                           "file=sys.stderr); sys.exit(3)"], [tmp_path / "never.txt"]),
             copy_step("reads-broken", tmp_path / "never.txt", tmp_path / "d.txt", needs=["broken"]),
             copy_step("independent", tmp_path / "in.txt", tmp_path / "e.txt"),
             run_all.Step("report", ["-c", COPY, str(tmp_path / "in.txt"), str(tmp_path / "r.txt")],
                          [tmp_path / "r.txt"], after_all=True)]
    monkeypatch.setattr(run_all, "plan", lambda args: steps)
    monkeypatch.setattr(run_all, "check_data", lambda data_dir: None)  # these made-up steps read none
    with pytest.raises(SystemExit) as exit_:
        run_all.main(["--runs-dir", str(tmp_path / "runs")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "broken, reads-broken" in err and "exit status 3: no data here; put it there" in err  # its own error line
    assert len(err.strip().splitlines()) == 1
    summary = json.loads((tmp_path / "runs" / "run_all.json").read_text())
    assert statuses(summary["steps"]) == {"broken": "failed", "reads-broken": "blocked", "independent": "ran",
                                          "report": "ran"}
    assert (tmp_path / "e.txt").exists() and (tmp_path / "r.txt").exists() and not (tmp_path / "d.txt").exists()
    assert "boom" in (tmp_path / "runs" / "logs" / "broken.log").read_text()
    stamp = json.loads((tmp_path / "runs" / "logs" / "broken.json").read_text())
    assert stamp["state"] == "failed"  # so the next run tries it again


def test_an_interrupted_step_resumes_and_a_changed_one_starts_over():
    step = run_all.Step("train", ["fashionmnist.py", "--epochs", "3"], [], resumable=True)
    assert run_all.command(step, {"argv": step.argv, "code": run_all.step_code(step), "state": "running"})[-1] == "--resume"
    assert "--resume" not in run_all.command(step, {"argv": ["fashionmnist.py", "--epochs", "12"], "state": "running"})
    assert "--resume" not in run_all.command(step, {"argv": step.argv, "state": "failed"})
    assert run_all.why_run(step, {"argv": step.argv, "code": run_all.step_code(step), "state": "running"},
                           set(), [], False) == "last attempt running"


# ---- build.py on its own ----------------------------------------------------------------------------------

def fashion_metrics(acc, params, shirt):
    return {"test_accuracy": acc, "parameters": params, "train_images": 60000, "config": {"epochs": 12},
            "per_class_accuracy": {"Shirt": shirt, "Bag": 0.97}}


def ablation_row(variant, val, gap=0.1):
    return {"variant": variant, "label": variant, "val_accuracy": val, "test_accuracy": val, "loss_gap": gap,
            "epochs": 5, "diverged": 0, "train_seconds": 1.0}


def test_written_answers_follow_the_measured_numbers():
    ffn, cnn = fashion_metrics(0.90, 2_000_000, 0.60), fashion_metrics(0.93, 400_000, 0.75)
    answer = " ".join(build.answer_cnn_vs_ffn(ffn, cnn))
    assert "the CNN beats the feed-forward network: 93.00% against 90.00%" in answer
    assert "+3.00 points" in answer and "5.0x fewer parameters" in answer and "on Shirt (+15.00 points)" in answer
    answer = " ".join(build.answer_cnn_vs_ffn(cnn, ffn))  # the other way round
    assert "does NOT beat" in answer and "did not show" in answer and "beats" not in answer

    table = {"seeds": 1, "variants": [ablation_row("bn-drop", 0.80, 0.05), ablation_row("bn-nodrop", 0.80, 0.20),
                                      ablation_row("nobn-drop", 0.70), ablation_row("nobn-nodrop", 0.701)]}
    answer = " ".join(build.answer_ablation("gap", table, 0.1))
    assert "Batch norm helps: +9.95 points" in answer and "Dropout: -0.05 points" in answer
    assert "no clear effect" in answer and "dropout narrows the gap" in answer
    table["variants"][0]["loss_gap"], table["variants"][1]["loss_gap"] = -0.5, -0.4  # val loss < train loss
    answer = " ".join(build.answer_ablation("gap", table, 0.1))
    assert "neither overfits yet" in answer and "narrow" not in answer

    steps = [{"randomized": 0, "layer": "none"}, {"randomized": 1, "layer": "fc", "CAM": {"mean": 0.5}},
             {"randomized": 2, "layer": "fc+conv1", "CAM": {"mean": 0.05}}]
    assert "passes" in build.sanity_verdicts({"methods": ["CAM"], "steps": steps}, cams=True)[0]
    steps[-1]["CAM"]["mean"] = 0.8
    assert "fails" in build.sanity_verdicts({"methods": ["CAM"], "steps": steps}, cams=True)[0]

    plain = build.receptive_fields({"channels": [32, 64, 128]})
    assert plain == [(1, 32, 14, 4), (2, 64, 7, 10), (3, 128, 3, 22)]
    early = build.receptive_fields({"channels": [32, 64], "convs_per_block": 2, "early_pool": True})
    assert early == [(1, 32, 14, 8), (2, 64, 7, 22)]  # conv, pool, conv: 3, 4, 8; then 12, 14, 22


def test_build_with_empty_runs_lists_missing_inputs_and_still_writes_the_pdf(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    out = tmp_path / "out" / "report.pdf"
    build.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    pages = pdf_pages(out)
    first = 1 + len(SECTIONS)  # title, then one page per (empty) section, then the missing inputs
    assert [any(p.startswith(s) for s in SECTIONS) for p in pages[1:first]] == [True] * len(SECTIONS)
    assert pages[first].startswith("Missing inputs")
    missing = " ".join(pages[first:])
    assert all("- Missing inputs - page" in p for p in pages[first:])
    assert "$ python fashionmnist.py --model cnn" in missing and "fashionmnist-cnn/metrics.json" in missing
    assert "$ python cam.py --checkpoint" in missing and "cifar10-gap/sanity.json" in missing
    assert "Unknown: neither run_all.json" in pages[0]
    assert [p.name for p in out.parent.iterdir()] == ["report.pdf"]  # no temporary file left behind
    assert "missing inputs listed on the last page" in capsys.readouterr().out


@pytest.mark.parametrize("script, argv, message", [
    ("build", ["--runs-dir", "no/such/folder"], "--runs-dir no/such/folder is not a folder"),
    ("build", ["--runs-dir", ".", "--out", "report.txt"], "must be a .pdf file name"),
    ("run_all", ["--limit", "0"], "expected a number >= 1"),
    ("run_all", ["--report", "report.txt"], "must be a .pdf file name"),
    ("run_all", ["--data-dir", "BROKEN", "--runs-dir", "RUNS", "--limit", "8"], "the data is not ready: "),
])
def test_bad_arguments_are_one_line_errors(script, argv, message, capsys, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "fashion_mnist.npz").write_text("not a zip")  # found, so no download is tried
    argv = [{"BROKEN": str(tmp_path / "broken"), "RUNS": str(tmp_path / "runs")}.get(a, a) for a in argv]
    module = {"build": build, "run_all": run_all}[script]
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: module.main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0] and err[0].count("error") == 1


def test_build_survives_files_from_an_older_or_foreign_run(tiny, tmp_path, capsys):
    """JSON that parses but holds the wrong thing, and a PNG that is not one: listed, not a traceback."""
    import shutil
    _, runs, _, _ = tiny
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    (copy / "fashionmnist-cnn" / "metrics.json").write_text('{"x": 1}')  # parses, lacks every field
    (copy / "mytorch" / "check.json").write_text("{}")
    (copy / "cifar10-gap" / "sanity.json").write_text("[1]")
    (copy / "run_all.json").write_text('{"x": 1}')
    png = (copy / "cifar10-gap" / "loss.png").read_bytes()
    (copy / "cifar10-gap" / "loss.png").write_bytes(png[:16] + bytes(8) + png[24:])  # width 0
    out = tmp_path / "report.pdf"
    build.main(["--runs-dir", str(copy), "--out", str(out)])
    missing = " ".join(p for p in pdf_pages(out) if "Missing inputs" in p)
    for name in ("mytorch/check.json", "cifar10-gap/sanity.json", "cifar10-gap/loss.png"):
        assert name in missing
    assert "the inputs of the fashion section" in missing and "the inputs of the title section" in missing
