"""Bad inputs and unusable runs: an exit status and a message, never a traceback; in a suite, the one run
fails (failed.json, with a fix that works) and the others go on; every command calls it failed alike."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cat_bench import records
from cat_bench.cli import main
from cat_bench.orchestrate import run_dir, run_local, state
from cat_bench.settings import Settings
from cat_bench.suite import load_suite
from cat_bench.config import resolve_config

TINY = """
description = "two tiny runs for the failure tests"
[defaults]
dataset = "mnist-mini"
eps = [0.3]
epochs = 1
n_train = 60
batch_size = 30
select_n = 20
attacks = ["natural", "fgsm"]
n_examples = 20

[[runs]]
label = "tiny"
methods = ["natural", "at"]
"""
TRAIN = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "1", "--n-train", "60",
         "--select-n", "20", "--no-progress"]
QUIET = dict(settings=Settings("cpu", progress=False), log=lambda m: None)


def run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results directory where both runs of the tiny suite are trained and evaluated."""
    root = tmp_path_factory.mktemp("failures")
    suite = root / "tiny.toml"
    suite.write_text(TINY)
    assert set(run_local(root / "results", load_suite(str(suite)).runs, **QUIET).values()) == {"done"}
    return suite, root / "results"


@pytest.fixture()
def results(finished, tmp_path):
    """A copy of the finished results and the suite's runs (natural, at)."""
    suite, source = finished
    shutil.copytree(source, tmp_path / "results", symlinks=True)
    return str(suite), tmp_path / "results", load_suite(str(suite)).runs


def every_command(suite, results, capsys):
    """What run, status, results and report say about the suite."""
    said = {}
    for command in (["run", "--no-progress"], ["status"], ["results"], ["report", "--out", results / "report"]):
        code, out, err = run([command[0], "--suite", suite, "--results", results, *command[1:]], capsys)
        assert "Traceback" not in err
        said[command[0]] = (code, out + err)
    return said


# 4. A finished run without its checkpoint: failed alone, with a fix that works (--retrain)

def test_a_run_missing_its_checkpoint_fails_alone_and_retrain_starts_it_again(results, capsys):
    suite, res, (natural, at) = results
    (run_dir(res, natural) / records.BEST).unlink()
    (run_dir(res, natural) / records.EVAL).unlink()  # so the suite must evaluate it again
    (run_dir(res, at) / records.EVAL).unlink()
    code, out, err = run(["run", "--suite", suite, "--results", res, "--no-progress"], capsys)
    assert code == 1 and "1 of 2 runs finished (1 this time), 1 FAILED" in out  # the intact run went on
    assert f"FAILED {natural.name}: missing checkpoint" in out and f"--retrain {natural.name}" in out
    assert [state(res, s) for s in (natural, at)] == ["failed", "done"]
    assert "--retrain" in records.read_json(run_dir(res, natural) / records.FAILED)["fix"]

    code, out, err = run(["run", "--suite", suite, "--results", res, "--no-progress", "--retrain", natural.name], capsys)
    assert code == 0 and "2 of 2 runs finished (1 this time)" in out
    aside = [p for p in (res / "runs").iterdir() if p.name.startswith(natural.name + ".old-")]
    assert len(aside) == 1 and (aside[0] / records.CONFIG).is_file()  # moved aside, not deleted
    assert [state(res, s) for s in (natural, at)] == ["done", "done"]


def test_retrain_names_a_run_of_the_suite(results, capsys):
    suite, res, _ = results
    code, _, err = run(["run", "--suite", suite, "--results", res, "--retrain", "at-mnist-mini-000000000000"], capsys)
    assert code == 2 and "not a run of this suite" in err


# 5. Seeds are checked before anything is written

@pytest.mark.parametrize("seed", ["-1", str(2 ** 32), "1234567890123456789012345", str(2 ** 64)])
def test_a_seed_out_of_range_exits_2(seed, tmp_path, capsys):
    code, _, err = run(TRAIN + ["--seed", seed, "--out", tmp_path / "r"], capsys)
    assert code == 2 and f"seed {seed} is out of range" in err and "4294967295" in err
    assert not (tmp_path / "r").exists()


def test_a_suite_seed_out_of_range_is_refused_on_loading(tmp_path, capsys):
    path = tmp_path / "seeds.toml"
    path.write_text(TINY.replace('label = "tiny"', 'label = "tiny"\nseeds = [-1]'))
    code, _, err = run(["run", "--suite", path, "--results", tmp_path / "r", "--dry-run"], capsys)
    assert code == 2 and "seed -1 is out of range" in err and "[[runs]] block 1" in err


# 6. Paths that are files, folders that cannot be written, a full disk

def test_paths_that_are_files_exit_2(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for argv in (TRAIN + ["--out", a_file], ["report", "--suite", "smoke", "--out", a_file],
                 ["run", "--suite", "smoke", "--results", a_file], ["status", "--suite", "smoke", "--results", a_file],
                 ["results", "--suite", "smoke", "--results", a_file], ["report", "--suite", "smoke", "--results", a_file]):
        code, _, err = run(argv, capsys)
        assert code == 2 and str(a_file) in err and "is a file" in err and "Traceback" not in err
    assert a_file.read_text() == "x"


def _unprivileged() -> list[str]:
    """A prefix that makes root obey file permissions (drops the capabilities that override them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: permissions cannot be made to bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def cli_as_user(*args):
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "cat_bench.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture()
def read_only(results):
    suite, res, specs = results
    folders = [res, res / "runs", *(run_dir(res, s) for s in specs)]
    for folder in folders:
        folder.chmod(0o555)
    yield suite, res, specs
    for folder in folders:
        if folder.exists():
            folder.chmod(0o755)


def test_a_read_only_results_directory(read_only):
    suite, res, (natural, at) = read_only
    done = cli_as_user("run", "--suite", suite, "--results", res, "--no-progress")
    assert done.returncode == 0 and "2 of 2 runs finished (0 this time)" in done.stdout  # nothing to write
    evaluation = cli_as_user("eval", run_dir(res, at), "--attacks", "natural,pgd20", "--n-examples", "10",
                             "--no-progress")
    assert evaluation.returncode == 2 and "cannot" in evaluation.stderr and "Traceback" not in evaluation.stderr
    assert "pgd20:" not in evaluation.stderr  # refused before any attack ran
    recorded = cli_as_user("eval", run_dir(res, at), "--attacks", "natural,fgsm", "--n-examples", "20",
                           "--no-progress")  # what its eval.json holds: reprinted, said to be recorded
    assert recorded.returncode == 0 and "is read-only" in recorded.stderr, recorded.stderr
    natural_acc = 100 * records.read_json(run_dir(res, at) / records.EVAL)["attacks"]["natural"]["accuracy"]
    assert re.search(rf"^natural\s+{natural_acc:.2f}%$", recorded.stdout, re.M), recorded.stdout
    (run_dir(res, natural)).chmod(0o755)
    shutil.rmtree(run_dir(res, natural))
    todo = cli_as_user("run", "--suite", suite, "--results", res, "--no-progress")
    assert todo.returncode == 2 and "cannot write in the results directory" in todo.stderr


def _full_disk(monkeypatch):
    """torch.save fails as it does on a full disk (its zip writer's RuntimeError)."""
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4374")

    monkeypatch.setattr(records.torch, "save", full)


def test_a_full_disk_ends_train_with_a_message(tmp_path, capsys, monkeypatch):
    _full_disk(monkeypatch)
    code, _, err = run(TRAIN + ["--out", tmp_path / "r"], capsys)
    assert code == 1 and "disk full" in err and ".pt" in err and "Traceback" not in err


def test_a_full_disk_fails_that_run_only_in_a_suite(finished, tmp_path, monkeypatch):
    suite, _ = finished
    natural, at = load_suite(str(suite)).runs
    real = records.save_checkpoint

    def full_for_at(path, state):
        if at.name in str(path):
            raise OSError(28, "No space left on device", str(path))
        real(path, state)

    monkeypatch.setattr(records, "save_checkpoint", full_for_at)
    outcome = run_local(tmp_path, [at, natural], **QUIET)
    assert outcome == {at.name: "failed", natural.name: "done"}
    failed = records.read_json(run_dir(tmp_path, at) / records.FAILED)
    assert "No space left on device" in failed["reason"] and "free disk space" in failed["fix"]


# 7 and 11. Edited or unreadable records fail their run, alike in run, status, results and report

def _edit_epochs(path: Path) -> None:
    config = json.loads(path.read_text())
    config["identity"]["schedule"]["epochs"] = 99
    path.write_text(json.dumps(config))


DAMAGES = {
    "edited config.json": lambda d: _edit_epochs(d / records.CONFIG),
    "invalid config.json": lambda d: (d / records.CONFIG).write_text("{not json"),
    "random eval.json": lambda d: (d / records.EVAL).write_bytes(bytes(range(256))),
    "null eval.json": lambda d: (d / records.EVAL).write_text("null"),
    "history garbage line": lambda d: (d / records.HISTORY).write_text("{]\n" + (d / records.HISTORY).read_text()),
    "run folder is a file": lambda d: (shutil.rmtree(d), d.write_text("not a folder")),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_fails_alone_in_every_command(damage, results, capsys):
    suite, res, (natural, at) = results
    DAMAGES[damage](run_dir(res, natural))
    assert [state(res, s) for s in (natural, at)] == ["failed", "done"]
    said = every_command(suite, res, capsys)
    assert said["run"][0] == 1 and f"FAILED {natural.name}" in said["run"][1]
    assert said["status"][0] == 0 and "1 done" in said["status"][1] and "1 failed" in said["status"][1]
    assert said["results"][0] == 0 and "1 failed" in said["results"][1] and "| at " in said["results"][1]
    assert "99" not in said["results"][1]  # an edited value is never shown
    assert said["report"][0] == 0
    assert [state(res, s) for s in (natural, at)] == ["failed", "done"]


def test_a_run_folder_linked_outside_the_results_is_failed_and_never_written(results, tmp_path, capsys):
    suite, res, (natural, at) = results
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_dir(res, natural), elsewhere)
    run_dir(res, natural).symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / records.EVAL).unlink()
    before = sorted(p.name for p in elsewhere.iterdir())
    code, out, _ = run(["run", "--suite", suite, "--results", res, "--no-progress"], capsys)
    assert code == 1 and "outside the results directory" in out
    assert sorted(p.name for p in elsewhere.iterdir()) == before and state(res, natural) == "failed"


# 8. What was used is what is recorded, and said

def test_n_train_above_the_split_records_what_was_used(tmp_path, capsys):
    assert resolve_config("at", "mnist-mini", 0.3, n_train=100000)["n_train"] == 10000
    assert resolve_config("at", "mnist", 0.3, n_train=100000)["n_train"] == 55000  # mnist_challenge skips 5000
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, _, err = run(with_option("--n-train", "100000") + ["--out", a_file], capsys)
    assert "note: --n-train 100000 is more than the 10000 training images" in err


def test_n_examples_above_the_test_set_records_what_was_used(results, capsys):
    _, res, (_, at) = results
    code, _, err = run(["eval", run_dir(res, at), "--attacks", "natural", "--n-examples", "5000", "--no-progress"],
                       capsys)
    assert code == 0 and "note: --n-examples 5000 is more than the 2000 test examples" in err
    assert records.read_json(run_dir(res, at) / records.EVAL)["key"]["n_examples"] == 2000


def with_option(flag, value):
    argv = list(TRAIN)
    argv[argv.index(flag) + 1] = value
    return argv


# 9. Networks that do not fit the data are refused; hours on a CPU are announced

def test_an_architecture_that_does_not_fit_the_images_exits_2(tmp_path, capsys):
    code, _, err = run(["train", "--method", "at", "--dataset", "cifar10", "--eps", "8/255", "--arch", "smallcnn",
                        "--out", tmp_path / "r"], capsys)
    assert code == 2 and "'smallcnn' takes 28x28 images, not 32x32" in err and "preact-resnet18" in err


def test_a_cpu_run_of_hours_is_announced(tmp_path, capsys, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    code, _, err = run(["train", "--method", "at", "--dataset", "mnist", "--eps", "0.3", "--arch", "wrn-34-10",
                        "--device", "cpu", "--data-root", tmp_path / "data", "--out", tmp_path / "r", "--yes"], capsys)
    assert code == 2 and "WARNING: this run is estimated at" in err and "hours on a CPU" in err  # then no data


# 14. Values that go into a job script are checked; printed commands are shell-quoted

@pytest.mark.parametrize("partition", ["gpu\n#SBATCH --wrap=rm", "gpu; rm -rf x", "a b"])
def test_a_partition_that_is_not_a_name_exits_2(partition, tmp_path, capsys):
    code, _, err = run(["run", "--suite", "smoke", "--results", tmp_path, "--executor", "slurm", "--partition",
                        partition], capsys)
    assert code == 2 and "is not a partition name" in err


def test_printed_commands_are_shell_quoted(tmp_path, capsys):
    res = tmp_path / "my results; rm -rf ~"
    code, _, err = run(["results", "--suite", "smoke", "--results", res], capsys)
    assert code == 2 and f"cat-bench run --suite smoke --results '{res}'" in err


# 13. A suite file whose name is no name never writes into the results root

@pytest.mark.parametrize("name", [".toml", "..toml", "...toml"])
def test_a_suite_named_with_dots_is_refused(name, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(TINY)
    res = tmp_path / "results"
    res.mkdir()
    code, _, err = run(["report", "--suite", path, "--results", res], capsys)
    assert code == 2 and "is not a suite name" in err
    assert list(res.iterdir()) == [] and not (tmp_path / "index.html").exists()


# 15. A diverged loss stops the run before it is recorded

def test_a_diverged_loss_stops_train_with_exit_1(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run(with_option("--method", "trades") + ["--set", "beta=1e308", "--out", out], capsys)
    assert code == 1 and "training diverged in epoch 1" in err and "Traceback" not in err
    assert records.read_jsonl(out / records.HISTORY) == [] and not (out / records.DONE).exists()


def test_a_diverged_run_fails_alone_in_a_suite(tmp_path):
    path = tmp_path / "diverges.toml"
    path.write_text(TINY.replace('methods = ["natural", "at"]', 'methods = ["trades"]\nhparams = {beta = 1e308}')
                    + '\n[[runs]]\nmethods = ["natural"]\n')
    trades, natural = load_suite(str(path)).runs
    assert run_local(tmp_path / "r", [trades, natural], **QUIET) == {trades.name: "failed", natural.name: "done"}
    failed = records.read_json(run_dir(tmp_path / "r", trades) / records.FAILED)
    assert "diverged in epoch 1" in failed["reason"] and "change the settings" in failed["fix"]
