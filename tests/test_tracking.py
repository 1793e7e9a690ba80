"""TensorBoard curves (`--log tensorboard`): the event files hold the run's own records, also across a resume."""

import pytest

from cat_bench import records
from cat_bench.cli import main
from cat_bench.tracking import TENSORBOARD_DIR

pytest.importorskip("tensorboard")

TRAIN = ["train", "--method", "cat-cent", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "2", "--n-train",
         "100", "--batch-size", "50", "--select-n", "20", "--no-progress", "--log", "tensorboard"]


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_curves_are_the_records_and_survive_a_resume(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--stop-after-epoch", "1"]) == 0
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    scalars = _scalars(out / TENSORBOARD_DIR)
    history = records.read_jsonl(out / records.HISTORY)
    assert scalars["epoch/nat_acc"] == [(2, pytest.approx(history[0]["nat_acc"])),
                                        (4, pytest.approx(history[1]["nat_acc"]))]  # 2 batches an epoch
    assert [v for _, v in scalars["train/loss_f"]] == pytest.approx([h["train"]["loss_f"] for h in history])
    trace = records.read_jsonl(out / records.TRACE)
    assert [s for s, _ in scalars["trace/mask_mean"]] == [r["step"] for r in trace]


def test_an_unknown_tracker_exits_2_before_training(tmp_path, capsys):
    assert main([*TRAIN[:-1], "wandb-typo", "--out", str(tmp_path / "run")]) == 2
    assert "--log 'wandb-typo'; allowed: tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_suite_log_key_writes_tensorboard_for_every_run(tmp_path):
    """`log = ["tensorboard"]` at the top of a suite file: `cat-bench run` writes each run's event files
    without --log; a malformed value is refused with the file and the key."""
    suite = tmp_path / "mine.toml"
    suite.write_text('description = "mine"\nlog = ["tensorboard"]\n[[runs]]\nmethods = ["at"]\n'
                     'dataset = "mnist-mini"\neps = [0.3]\nepochs = 1\nn_train = 100\nbatch_size = 50\n'
                     'select_n = 20\nattacks = ["natural"]\nn_examples = 20\n')
    results = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results", str(results), "--no-progress"]) == 0
    (run,) = [p for p in (results / "runs").iterdir() if p.is_dir()]
    assert _scalars(run / TENSORBOARD_DIR)["epoch/nat_acc"]
    suite.write_text(suite.read_text().replace('log = ["tensorboard"]', 'log = "tensorboard"'))
    assert main(["results", "--suite", str(suite), "--results", str(results)]) == 2


def test_wandb_gets_the_same_curves_without_the_network(tmp_path, monkeypatch):
    """`--log wandb` with a stand-in `wandb` module (no network, no account): one W&B run per run directory,
    id = its name, resumed with it; the epoch rows are history.jsonl's and steps only grow across a resume."""
    import sys
    import types

    logged, inits = [], []

    class Run:
        def log(self, scalars, step):
            logged.append((step, dict(scalars)))

        def finish(self):
            pass

    def init(**kwargs):
        inits.append(kwargs)
        return Run()

    fake = types.ModuleType("wandb")
    fake.init = init
    fake.__spec__ = types.SimpleNamespace(name="wandb")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "wandb" else None)
    out = tmp_path / "run"
    argv = [*TRAIN[:-1], "wandb", "--out", str(out)]
    assert main([*argv, "--stop-after-epoch", "1"]) == 0
    assert main([*argv, "--resume"]) == 0
    assert [i["id"] for i in inits] == ["run", "run"] and all(i["resume"] == "allow" for i in inits)
    steps = [s for s, _ in logged]
    assert steps == sorted(steps)
    history = records.read_jsonl(out / records.HISTORY)
    epochs = [(s, v["epoch/nat_acc"]) for s, v in logged if "epoch/nat_acc" in v]
    assert epochs == [(2, pytest.approx(history[0]["nat_acc"])), (4, pytest.approx(history[1]["nat_acc"]))]
    assert not (out / TENSORBOARD_DIR).exists()


def test_wandb_not_installed_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert main([*TRAIN[:-1], "wandb", "--out", str(tmp_path / "run")]) == 2
    assert "--log wandb needs the wandb package: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
