"""The orchestrator: a killed `cat-bench run` finishes with the same table, concurrent runs share the
work, dry runs plan (the Slurm executor: tests/test_slurm.py)."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cat_bench import records
from cat_bench.orchestrate import run_dir, run_local, state
from cat_bench.settings import Settings
from cat_bench.suite import load_suite

TINY = """
description = "two tiny runs for the orchestrator tests"
[defaults]
dataset = "mnist-mini"
eps = [0.3]
epochs = 2
n_train = 100
batch_size = 50
select_n = 20
seeds = [0]
attacks = ["natural", "fgsm", "pgd20"]
n_examples = 40
schedule = "uniform"  # CAT's protocol for both: SmallCNN and PGD-20, half the cost of AT's official one

[[runs]]
label = "tiny"
methods = ["natural", "at"]
"""


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cat_bench.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def finish(*args):
    proc = cli(*args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


def per_seed_table(suite, results):
    return finish("results", "--suite", suite, "--results", results, "--format", "csv", "--per-seed")


def test_sigkill_at_a_random_moment_then_rerun_gives_the_same_table(tiny, tmp_path):
    t0 = time.time()
    out = finish("run", "--suite", tiny, "--results", tmp_path / "clean", "--no-progress")
    duration = time.time() - t0
    assert "runs finished" in out and str(tmp_path / "clean") in out
    expected = per_seed_table(tiny, tmp_path / "clean")

    moment = random.Random(os.environ.get("CAT_BENCH_KILL_SEED", "0")).uniform(0.2, 0.9) * duration
    proc = cli("run", "--suite", tiny, "--results", tmp_path / "killed", "--no-progress")
    time.sleep(moment)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finish("run", "--suite", tiny, "--results", tmp_path / "killed", "--no-progress")

    assert per_seed_table(tiny, tmp_path / "killed") == expected
    names = sorted(p.name for p in (tmp_path / "killed" / "runs").iterdir() if p.is_dir())
    assert names == sorted(s.name for s in load_suite(str(tiny)).runs)  # every run once


def _temp_files(folder):
    return [p for p in folder.rglob(f".*{records.TEMP_SUFFIX}")]


def _report_pages(folder, results):
    return {str(p.relative_to(folder)): p.read_text().replace(str(results), "RESULTS")
            for p in sorted(folder.rglob("*.html"))}


@pytest.mark.parametrize("command", ["eval", "report"])
def test_sigkill_of_eval_or_report_then_rerun_gives_the_same_records(command, tiny, tmp_path):
    """An evaluation (more attacks on a finished run) or a report killed at a random moment: the rerun
    ends with what an uninterrupted one writes, and no temp file of the killed write is left."""
    finish("run", "--suite", tiny, "--results", tmp_path / "clean", "--no-progress")
    shutil.copytree(tmp_path / "clean", tmp_path / "killed")
    spec = load_suite(str(tiny)).runs[1]

    def argv(results):
        if command == "eval":
            return ["eval", run_dir(results, spec), "--attacks", "natural,fgsm,pgd20,pgd100,cw", "--n-examples", "40",
                    "--no-progress"]
        return ["report", "--suite", tiny, "--results", results, "--out", results / "report"]

    t0 = time.time()
    finish(*argv(tmp_path / "clean"))
    duration = time.time() - t0
    moment = random.Random(os.environ.get("CAT_BENCH_KILL_SEED", "0")).uniform(0.2, 0.9) * duration
    proc = cli(*argv(tmp_path / "killed"))
    time.sleep(moment)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finish(*argv(tmp_path / "killed"))

    if command == "eval":
        accuracies = [{k: v["accuracy"] for k, v in records.read_json(run_dir(r, spec) / records.EVAL)["attacks"].items()}
                      for r in (tmp_path / "clean", tmp_path / "killed")]
        assert accuracies[0] == accuracies[1] and len(accuracies[0]) == 5
    else:
        assert _report_pages(tmp_path / "killed" / "report", tmp_path / "killed") == \
            _report_pages(tmp_path / "clean" / "report", tmp_path / "clean")
    assert _temp_files(tmp_path / "killed") == []


def test_two_concurrent_runs_train_each_run_exactly_once(tiny, tmp_path):
    procs = [cli("run", "--suite", tiny, "--results", tmp_path / "shared", "--no-progress") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    for spec in load_suite(str(tiny)).runs:
        sessions = records.read_jsonl(run_dir(tmp_path / "shared", spec) / records.SESSIONS)
        assert [s["start_epoch"] for s in sessions] == [0]  # trained once, by one process
        assert state(tmp_path / "shared", spec) == "done"


def test_dry_run_status_and_filters(tiny, tmp_path):
    out = finish("run", "--suite", tiny, "--results", tmp_path / "r", "--dry-run")
    assert "2 runs, 0 done" in out and "GPU-hours" in out
    out = finish("run", "--suite", tiny, "--results", tmp_path / "r", "--only", "method=at", "--no-progress")
    out = finish("status", "--suite", tiny, "--results", tmp_path / "r")
    assert "1 done" in out and "1 to do" in out
    out = finish("run", "--suite", "paper", "--results", tmp_path / "r", "--dry-run", "--only", "method=cat-cent")
    assert "GPU-hours" in out and "cifar10" in out


def test_bad_suite_and_filter_exit_2(tiny, tmp_path):
    proc = cli("run", "--suite", tmp_path / "missing.toml", "--results", tmp_path / "r")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "missing.toml" in err
    proc = cli("run", "--suite", tiny, "--results", tmp_path / "r", "--only", "colour=red")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "colour" in err


def test_a_suite_trains_each_run_as_one_group(tiny, tmp_path):
    """`run --gpus-per-job 2` locally: each run trains as a two-process group (gloo on CPU), then is evaluated."""
    spec = load_suite(str(tiny)).runs[1]
    outcome = run_local(tmp_path / "r", [spec], Settings("cpu", progress=False), log=lambda m: None, nproc=2)
    assert outcome == {spec.name: "done"} and state(tmp_path / "r", spec) == "done"
    assert [s["ranks"] for s in records.read_jsonl(run_dir(tmp_path / "r", spec) / records.SESSIONS)] == [2]


def test_finished_runs_are_skipped(tiny, tmp_path):
    specs = load_suite(str(tiny)).runs
    quiet = dict(settings=Settings("cpu", progress=False), log=lambda m: None)
    assert set(run_local(tmp_path, specs, **quiet).values()) == {"done"}
    assert set(run_local(tmp_path, specs, **quiet).values()) == {"skipped"}


def test_parallel_workers_share_the_runs(tiny, tmp_path):
    """The one-process-per-GPU executor, with two CPU 'devices' standing in for GPUs."""
    from cat_bench.orchestrate import run_parallel

    specs = load_suite(str(tiny)).runs
    outcome = run_parallel(tmp_path, specs, ["cpu", "cpu"], Settings("cpu"))
    assert set(outcome) == {s.name for s in specs} and set(outcome.values()) <= {"done", "skipped"}
    for spec in specs:
        assert [s["start_epoch"] for s in records.read_jsonl(run_dir(tmp_path, spec) / records.SESSIONS)] == [0]


def test_a_corrupt_checkpoint_fails_its_run_and_the_suite_goes_on(tiny, tmp_path):
    """One corrupt checkpoint fails that run only; the summary names it and the fix; exit 1."""
    specs = load_suite(str(tiny)).runs
    results = tmp_path / "r"
    run_local(results, specs[:1], Settings("cpu", progress=False, stop_after_epoch=1), log=lambda m: None)
    bad = run_dir(results, specs[0]) / records.LAST
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated, as a full disk or a kill outside cat-bench leaves it

    proc = cli("run", "--suite", tiny, "--results", results, "--no-progress")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "1 of 2 runs finished (1 this time), 1 FAILED" in out
    assert f"FAILED {specs[0].name}: corrupt checkpoint {bad}" in out and "fix: remove the corrupt file" in out
    assert [state(results, s) for s in specs] == ["failed", "done"]
    failed = records.read_json(run_dir(results, specs[0]) / records.FAILED)
    assert "corrupt checkpoint" in failed["reason"] and str(run_dir(results, specs[0])) in failed["fix"]
    assert "1 failed" in finish("status", "--suite", tiny, "--results", results)

    bad.unlink()  # the fix: training restarts from epoch 0
    assert finish("run", "--suite", tiny, "--results", results, "--no-progress")
    assert [state(results, s) for s in specs] == ["done", "done"]
    assert not (run_dir(results, specs[0]) / records.FAILED).exists()
