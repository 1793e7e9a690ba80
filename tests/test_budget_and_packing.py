"""A wall-clock budget (`--stop-after-minutes`) stops at an epoch boundary and the next call finishes
with the numbers of an uninterrupted run; `--jobs-per-gpu K` packs K runs per device, each trained once."""

import json

import pytest
import torch

from cat_bench import records
from cat_bench.costs import RATES
from cat_bench.orchestrate import run_dir
from cat_bench.suite import load_suite

from test_orchestrate import TINY, finish, per_seed_table

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # workers of --jobs-per-gpu run 1 thread each: compare like with like
TRAIN = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "3", "--n-train", "100",
         "--batch-size", "50", "--select-n", "20", "--schedule", "uniform", "--no-progress"]


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _epochs(out):
    return [row["epoch"] for row in records.read_jsonl(out / records.HISTORY)]


def _numbers(out):
    return [(r["nat_acc"], r["rob_acc"], r["train"]) for r in records.read_jsonl(out / records.HISTORY)]


def test_train_stops_at_the_first_epoch_boundary_after_the_budget_and_resumes_to_the_same_run(tiny, tmp_path):
    finish(*TRAIN, "--out", tmp_path / "whole")
    out = finish(*TRAIN, "--out", tmp_path / "chunked", "--stop-after-minutes", "0.0001")
    assert "stopped after epoch 1 of 3" in out and "--resume" in out
    assert _epochs(tmp_path / "chunked") == [1]
    assert not (tmp_path / "chunked" / records.DONE).exists()
    assert (tmp_path / "chunked" / records.LAST).exists()

    finish(*TRAIN, "--out", tmp_path / "chunked", "--resume")
    assert _epochs(tmp_path / "chunked") == [1, 2, 3]
    assert _numbers(tmp_path / "chunked") == _numbers(tmp_path / "whole")
    whole = torch.load(tmp_path / "whole" / records.LAST, weights_only=True)["nets"]["f"]
    chunked = torch.load(tmp_path / "chunked" / records.LAST, weights_only=True)["nets"]["f"]
    assert all(torch.equal(whole[k], chunked[k]) for k in whole)


def test_a_suite_under_a_budget_stops_and_the_next_call_gives_the_uninterrupted_table(tiny, tmp_path):
    finish("run", "--suite", tiny, "--results", tmp_path / "whole", "--no-progress")
    out = finish("run", "--suite", tiny, "--results", tmp_path / "chunked", "--no-progress",
                 "--stop-after-minutes", "0.0001")
    assert "0 of 2 runs finished (0 this time), 2 stopped by the budget" in out
    specs = load_suite(str(tiny)).runs
    started = [s for s in specs if run_dir(tmp_path / "chunked", s).exists()]
    assert len(started) == 1 and _epochs(run_dir(tmp_path / "chunked", started[0])) == [1]  # the rest waits

    finish("run", "--suite", tiny, "--results", tmp_path / "chunked", "--no-progress")
    assert per_seed_table(tiny, tmp_path / "chunked") == per_seed_table(tiny, tmp_path / "whole")


def test_jobs_per_gpu_packs_runs_each_trained_once_with_the_same_table(tiny, tmp_path):
    finish("run", "--suite", tiny, "--results", tmp_path / "one", "--no-progress")
    out = finish("run", "--suite", tiny, "--results", tmp_path / "two", "--no-progress", "--device", "cpu",
                 "--jobs-per-gpu", "2")
    assert "2 of 2 runs finished (2 this time)" in out
    for spec in load_suite(str(tiny)).runs:
        sessions = records.read_jsonl(run_dir(tmp_path / "two", spec) / records.SESSIONS)
        assert [s["start_epoch"] for s in sessions] == [0]  # one worker trained it, once
        evaluation = json.loads((run_dir(tmp_path / "two", spec) / records.EVAL).read_text())
        assert set(evaluation["attacks"]) == {"natural", "fgsm", "pgd20"}
    assert per_seed_table(tiny, tmp_path / "two") == per_seed_table(tiny, tmp_path / "one")


def test_jobs_per_gpu_and_gpus_per_job_exclude_each_other(tiny, tmp_path):
    from test_orchestrate import cli

    proc = cli("run", "--suite", tiny, "--results", tmp_path, "--jobs-per-gpu", "2", "--gpus-per-job", "2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--jobs-per-gpu 2" in err and "--gpus-per-job 2" in err


def test_budget_and_compile_mode_are_checked_by_the_parser(tmp_path):
    from test_orchestrate import cli

    for flag, value in (("--stop-after-minutes", "0"), ("--stop-after-minutes", "soon"), ("--compile", "fast")):
        proc = cli(*TRAIN, "--out", tmp_path / "x", flag, value)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and value in err, err
        assert not (tmp_path / "x").exists()


def test_dry_run_prices_with_a_measured_record_and_says_which(tmp_path):
    tiny = tmp_path / "official.toml"  # AT's official protocol trains madry-cnn: two networks to price
    tiny.write_text(TINY.replace('schedule = "uniform"', 'schedule = "official"'))
    record = {"arch": "smallcnn", "rows": [
        {"method": "at", "precision": "fp32", "compile": None, "images_per_s": 1000.0, "flops_per_image": 1e9},
        {"method": "at", "precision": "fp32", "compile": None, "images_per_s": 10.0, "flops_per_image": 1e9,
         "reference": True},
    ]}
    h100 = json.loads(RATES.read_text())["h100"]["smallcnn"]
    out = finish("run", "--suite", tiny, "--results", tmp_path, "--dry-run")
    assert (f"measured: smallcnn: {h100['tflops']:.3g} TFLOP/s measured on h100 ({h100['source']}" in out
            and f"assumed: madry-cnn: {h100['tflops']:.3g} TFLOP/s assumed: smallcnn's on h100" in out), out
    assert "GPU-hours (h100)" in out and "Assumed rates: " in out
    out = finish("run", "--suite", tiny, "--results", tmp_path, "--dry-run", "--gpu-tflops", "7")
    assert "assumed: madry-cnn: 7 TFLOP/s assumed (--gpu-tflops)" in out
    out = finish("run", "--suite", tiny, "--results", tmp_path, "--dry-run", "--price-on", "cpu")
    assert "CPU-hours (one process)" in out and "smallcnn: " in out and "measured on cpu" in out
    (tmp_path / "throughput-smallcnn.json").write_text(json.dumps(record))
    out = finish("run", "--suite", tiny, "--results", tmp_path, "--dry-run")
    assert "measured: smallcnn: 1 TFLOP/s measured on h100 (--throughput)" in out


def test_killing_the_launcher_of_jobs_per_gpu_kills_its_workers(tmp_path, monkeypatch):
    """Workers die with the launcher: a SIGKILLed `run --jobs-per-gpu 2` leaves no process training and
    holding a run's lock (the rerun would stall behind it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)
    suite = tmp_path / "long.toml"
    suite.write_text(TINY.replace("epochs = 2", "epochs = 200"))
    log = open(tmp_path / "log", "w")  # not a pipe: a worker writing to a closed pipe would die of that
    proc = subprocess.Popen([sys.executable, "-m", "cat_bench.cli", "run", "--suite", str(suite), "--results",
                             str(tmp_path / "r"), "--no-progress", "--device", "cpu", "--jobs-per-gpu", "2"],
                            stdout=log, stderr=log, start_new_session=True)
    workers: set[int] = set()
    deadline = time.time() + 120
    while len(workers) < 2 and time.time() < deadline:
        for lock in (tmp_path / "r").rglob("*.lock"):
            try:
                workers.add(json.loads(lock.read_text())["pid"])
            except (ValueError, KeyError):
                pass
        time.sleep(0.2)
    assert len(workers) == 2 and proc.pid not in workers, workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    deadline = time.time() + 20
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    orphans = [pid for pid in workers if _alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie (exited, not yet reaped by init) is not running
        return stat.read().split(")")[-1].split()[0] != "Z"
