"""The evidence study (genscl_jax.tools.study) end to end at toy scale: every method runs, results.json records an argv
that reproduces its run, a rerun skips finished runs and resumes an unfinished one, KD's teachers are the same-seed CE
run and the shared strong teacher, a re-probe reads its method's encoder. The rows run in the test's process
(helpers.execute_study_row_in_this_process); one goes through study.execute's subprocess of the command line."""

import json
import os
import subprocess
import sys

import pytest
from helpers import execute_study_row_in_this_process

from genscl_jax.tools import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = "configs/study_fashion_mnist.py:tiny"  # synthetic data, 2 steps per run, one seed
METHODS = {"ce", "supcon", "genscl_mix", "genscl_mix_kd", "genscl_kd_strong", "genscl_mix_kd_strong", "genscl_mix_half",
           "supcon_bn_recalibrated", "genscl_mix_bn_recalibrated"}
REPROBES = {"supcon_bn_recalibrated": "supcon", "genscl_mix_bn_recalibrated": "genscl_mix"}


@pytest.mark.slow
def test_the_recipe_loads_from_any_working_directory(tmp_path):
    """The study recipe imports the quickstart's (`from configs import quickstart`): that works from elsewhere too."""
    recipe = os.path.join(ROOT, "configs", "study_fashion_mnist.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = f"from genscl_jax.tools import study; print(len(study.plan({recipe!r}, 'w')))"
    probe = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert int(probe.stdout.split()[-1]) > 0


def test_plan_orders_ce_first_and_points_kd_and_the_probes_at_their_workdirs(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = study.plan("configs/study_fashion_mnist.py", "w")
    teacher, main = runs[0], [r for r in runs if r.phase == "main"]
    # The strong teacher runs first, once for every seed, with 8x the steps.
    assert (teacher.phase, teacher.workdir) == ("teacher", os.path.join("w", "teacher"))
    assert "--config.mode=supervised" in teacher.argv and "--config.num_train_steps=3200" in teacher.argv
    assert len(main) == 3 * 10 and {r.seed for r in main} == {0, 1, 2} and len(runs) == 1 + 3 * 10
    for seed in (0, 1, 2):
        ce_workdir = os.path.join("w", "ce", f"seed{seed}")
        order = [(r.method, r.probe) for r in main if r.seed == seed]
        assert order[:2] == [("ce", False), ("ce", True)], order
        by_method = {(r.method, r.probe): r for r in main if r.seed == seed}
        assert f"--config.kd.teacher={ce_workdir}" in by_method["genscl_mix_kd", False].argv
        for method in ("genscl_kd_strong", "genscl_mix_kd_strong"):
            assert f"--config.kd.teacher={teacher.workdir}" in by_method[method, False].argv
        assert "mix.kind" not in " ".join(by_method["genscl_kd_strong", False].argv)
        assert "--config.mix.prob=0.5" in by_method["genscl_mix_half", False].argv
        assert f"--config.linear_eval.pretrained_workdir={ce_workdir}" in by_method["ce", True].argv
        assert "--config.mix.kind=mixup_cutmix" in by_method["genscl_mix", False].argv
        assert not any("mix." in a or "kd." in a for a in by_method["supcon", False].argv)
        for reprobe, of in REPROBES.items():
            run = by_method[reprobe, False]
            assert run.probe_of is by_method[of, False] and order.index((of, False)) < order.index((reprobe, False))
            encoder = os.path.join("w", of, f"seed{seed}", "pretrain")
            assert {"--config.mode=linear_eval", f"--config.linear_eval.pretrained_workdir={encoder}",
                    "--config.linear_eval.recalibrate_batch_stats=200"} <= set(run.argv)
    assert len({r.workdir for r in runs}) == len(runs)


def test_the_longer_budget_check_is_the_recipes_longer_variant(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert not [r for r in study.plan("configs/study_fashion_mnist.py", "w") if r.phase == "longer"]
    longer = [r for r in study.plan("configs/study_fashion_mnist.py:longer", "w") if r.phase == "longer"]
    assert {(r.method, r.argv[-2]) for r in longer} == {
        (method, f"--config.num_train_steps={steps}") for method in ("supcon", "genscl_mix") for steps in (800, 1600)}


def test_a_recipe_without_a_method_table_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.py"
    recipe.write_text("def get_config(arg=''):\n    return None\n")
    with pytest.raises(SystemExit):
        study.main(["--config", str(recipe), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert err.startswith("study error:") and "get_study" in err and "\n" not in err


def _summary_mtimes(runs_dir):
    return {root: os.path.getmtime(os.path.join(root, "summary.json"))
            for root, _, files in os.walk(runs_dir) if "summary.json" in files}


@pytest.mark.slow
@pytest.mark.long(minutes=3)
def test_tiny_study_end_to_end_reproducible_and_resumable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the recorded argv names the recipe relative to the repository
    # The rows run in this process (one import of TensorFlow, not twelve); one row below goes through study.execute.
    in_a_subprocess = study.execute
    monkeypatch.setattr(study, "execute", execute_study_row_in_this_process)
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    args = ["--config", RECIPE, "--workdir", str(runs_dir), "--results", str(results), "--no_longer"]
    study.main(args)
    records = json.loads((results / "results.json").read_text())
    teacher = [r for r in records if r["phase"] == "teacher"]
    records = [r for r in records if r["phase"] == "main"]
    assert {r["method"] for r in records} == METHODS and len(records) == len(METHODS)
    for record in records:
        assert {"method", "seed", "argv", "top1", "top1_best"} <= set(record)
        assert 0.0 <= record["top1"] <= record["top1_best"] <= 1.0
        assert record["argv"][:2] == ["--config", RECIPE] and record["pretrain_steps"] == 2
    by_method = {r["method"]: r for r in records}
    ce_workdir = str(runs_dir / "ce" / "seed0")
    assert f"--config.kd.teacher={ce_workdir}" in by_method["genscl_mix_kd"]["argv"]
    assert "classifier_top1" in by_method["ce"] and by_method["ce"]["train_workdir"] == ce_workdir
    # The shared teacher: 8x the steps, its own top-1 reported beside the table; both strong-KD rows read it.
    (teacher,) = teacher
    assert teacher["pretrain_steps"] == 16 and 0.0 <= teacher["classifier_top1"] <= 1.0
    for method in ("genscl_kd_strong", "genscl_mix_kd_strong"):
        assert f"--config.kd.teacher={runs_dir / 'teacher'}" in by_method[method]["argv"]
    # A re-probe reads its method's encoder after recomputing the BatchNorm statistics.
    for reprobe, of in REPROBES.items():
        assert by_method[reprobe]["probe_of"] == of
        log = (runs_dir / reprobe / "seed0" / "log.txt").read_text()
        assert "BatchNorm statistics on 2 clean training batches" in log
    assert (results / "results.png").stat().st_size > 0
    report = (results / "results.md").read_text()
    assert "GenSCL + Mixup/CutMix" in report and "Strong teacher" in report and "16 steps" in report

    # The recorded argv alone reproduces the run's top-1, through the study's own subprocess of the command line.
    supcon = by_method["supcon"]
    again = in_a_subprocess(study.Run("supcon", 0, "main", str(tmp_path / "again"), supcon["argv"]))
    assert again["linear_eval_top1"] == supcon["top1"]
    assert f"-m genscl_jax.main {' '.join(supcon['argv'])} --workdir" in (tmp_path / "again" / "log.txt").read_text()

    # A rerun skips finished runs and resumes an unfinished one (checkpoints there, no summary.json yet).
    unfinished = runs_dir / "genscl_mix" / "seed0"
    (unfinished / "summary.json").unlink()
    before = _summary_mtimes(runs_dir)
    capsys.readouterr()
    study.main(args)
    printed = capsys.readouterr().out
    assert printed.count("finished before, skipped") == 10, printed  # all 11 runs but the one without a summary
    assert _summary_mtimes(runs_dir) == before | {str(unfinished): _summary_mtimes(runs_dir)[str(unfinished)]}
    assert "resumed from step 2" in (unfinished / "log.txt").read_text()
    rerun = {r["method"]: r for r in json.loads((results / "results.json").read_text())}
    assert rerun["genscl_mix"]["top1"] == by_method["genscl_mix"]["top1"]


SCARCE_METHODS = {"ce", "supcon", "genscl_mix", "genscl_mix_half", "genscl_kd_strong", "genscl_mix_kd_strong"}


def test_the_scarce_round_trains_every_row_on_the_subset_and_adds_the_epoch_curve(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = study.plan("configs/study_fashion_mnist.py:scarce", "w")
    teacher, main = runs[0], [r for r in runs if r.phase == "main"]
    curve = [r for r in runs if r.phase == "longer"]
    assert teacher.phase == "teacher" and "--config.num_train_steps=1080" in teacher.argv  # 3x the 360 steps
    assert {r.method for r in main} == SCARCE_METHODS and len(main) == 3 * (len(SCARCE_METHODS) + 1)
    for run in runs:  # every run reads the same recipe: 200 images per class, 24 epochs of 15 steps
        assert run.argv[:2] == ["--config", "configs/study_fashion_mnist.py:scarce"]
    config = study.load_recipe("configs/study_fashion_mnist.py:scarce")[0].get_config("scarce")
    assert (config.train_subset, config.train_subset_seed, config.num_train_steps) == (200, 0, 360)
    assert {(r.method, r.argv[-2]) for r in curve} == {
        (method, f"--config.num_train_steps={steps}") for method in ("supcon", "genscl_mix")
        for steps in (90, 180, 720)}


@pytest.mark.slow
@pytest.mark.long(minutes=1)
def test_tiny_scarce_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(study, "execute", execute_study_row_in_this_process)
    results = tmp_path / "results"
    study.main(["--config", "configs/study_fashion_mnist.py:scarce,tiny", "--workdir", str(tmp_path / "runs"),
                "--results", str(results)])
    records = json.loads((results / "results.json").read_text())
    main = {r["method"]: r for r in records if r["phase"] == "main"}
    assert set(main) == SCARCE_METHODS and all(0.0 <= r["train_top1"] <= 1.0 for r in main.values())
    assert {(r["method"], r["pretrain_steps"]) for r in records if r["phase"] == "longer"} == {
        ("supcon", 1), ("genscl_mix", 1)}
    summary = json.loads((tmp_path / "runs" / "supcon" / "seed0" / "summary.json").read_text())
    assert (summary["train_images"], summary["num_classes"]) == (30, 10)
    report = (results / "results.md").read_text()
    assert "The probe on its own training images" in report and "epoch curve" in report
