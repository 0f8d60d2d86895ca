"""The evidence study (genscl_jax.tools.study) end to end at toy scale: every method runs, results.json records an argv
that reproduces its run, a rerun skips finished runs and resumes an unfinished one, KD's teacher is the CE run."""

import json
import os
import subprocess
import sys

import pytest

from genscl_jax.tools import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = "configs/study_fashion_mnist.py:tiny"  # synthetic data, 2 steps per run, one seed
METHODS = {"ce", "supcon", "genscl_mix", "genscl_mix_kd"}


def test_the_recipe_loads_from_any_working_directory(tmp_path):
    """The study recipe imports the quickstart's (`from configs import quickstart`): that works from elsewhere too."""
    recipe = os.path.join(ROOT, "configs", "study_fashion_mnist.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = f"from genscl_jax.tools import study; print(len(study.plan({recipe!r}, 'w')))"
    probe = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert int(probe.stdout.split()[-1]) > 0


def test_plan_orders_ce_first_and_points_kd_and_the_probe_at_its_workdir(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = study.plan("configs/study_fashion_mnist.py", "w")
    main = [r for r in runs if r.phase == "main"]
    assert len(main) == 3 * 5 and {r.seed for r in main} == {0, 1, 2}
    for seed in (0, 1, 2):
        ce_workdir = os.path.join("w", "ce", f"seed{seed}")
        order = [(r.method, r.probe) for r in main if r.seed == seed]
        assert order[:2] == [("ce", False), ("ce", True)], order
        by_method = {(r.method, r.probe): r for r in main if r.seed == seed}
        assert f"--config.kd.teacher={ce_workdir}" in by_method["genscl_mix_kd", False].argv
        assert f"--config.linear_eval.pretrained_workdir={ce_workdir}" in by_method["ce", True].argv
        assert "--config.mix.kind=mixup_cutmix" in by_method["genscl_mix", False].argv
        assert not any("mix.kind" in a or "kd." in a for a in by_method["supcon", False].argv)
    longer = [r for r in runs if r.phase == "longer"]
    assert {(r.method, r.argv[-2]) for r in longer} == {
        (method, f"--config.num_train_steps={steps}") for method in ("supcon", "genscl_mix") for steps in (800, 1600)}
    assert len({r.workdir for r in runs}) == len(runs)


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


def test_tiny_study_end_to_end_reproducible_and_resumable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the recorded argv names the recipe relative to the repository
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    args = ["--config", RECIPE, "--workdir", str(runs_dir), "--results", str(results), "--no_longer"]
    study.main(args)
    records = json.loads((results / "results.json").read_text())
    assert {r["method"] for r in records} == METHODS and len(records) == 4
    for record in records:
        assert {"method", "seed", "argv", "top1", "top1_best"} <= set(record)
        assert 0.0 <= record["top1"] <= record["top1_best"] <= 1.0
        assert record["argv"][:2] == ["--config", RECIPE]
    by_method = {r["method"]: r for r in records}
    ce_workdir = str(runs_dir / "ce" / "seed0")
    assert f"--config.kd.teacher={ce_workdir}" in by_method["genscl_mix_kd"]["argv"]
    assert "classifier_top1" in by_method["ce"] and by_method["ce"]["train_workdir"] == ce_workdir
    assert (results / "results.png").stat().st_size > 0
    assert "GenSCL + Mixup/CutMix" in (results / "results.md").read_text()

    # The recorded argv alone reproduces the run's top-1.
    supcon = by_method["supcon"]
    subprocess.run([sys.executable, "-m", "genscl_jax.main", *supcon["argv"], "--workdir", str(tmp_path / "again")],
                   check=True, cwd=ROOT, capture_output=True)
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["linear_eval_top1"] == supcon["top1"]

    # A rerun skips finished runs and resumes an unfinished one (checkpoints there, no summary.json yet).
    unfinished = runs_dir / "genscl_mix" / "seed0"
    (unfinished / "summary.json").unlink()
    before = _summary_mtimes(runs_dir)
    capsys.readouterr()
    study.main(args)
    printed = capsys.readouterr().out
    assert printed.count("finished before, skipped") == 4, printed
    assert _summary_mtimes(runs_dir) == before | {str(unfinished): _summary_mtimes(runs_dir)[str(unfinished)]}
    assert "resumed from step 2" in (unfinished / "log.txt").read_text()
    rerun = {r["method"]: r for r in json.loads((results / "results.json").read_text())}
    assert rerun["genscl_mix"]["top1"] == by_method["genscl_mix"]["top1"]
