"""Weight averaging (`--ema DECAY`): resumed equals uninterrupted, best.pt holds the average, names kept."""

import pytest
import torch

from cat_bench import records
from cat_bench.errors import UsageError
from cat_bench.settings import Settings
from cat_bench.suite import load_suite
from cat_bench.config import resolve_config
from cat_bench.train import train

QUIET = dict(settings=Settings(progress=False), log=lambda m: None)


def ema_config(epochs: int = 2, decay: float | None = 0.9) -> dict:
    """AT on 40 shipped digits in batches of 20 (2 steps an epoch), 2-step attacks, with an EMA."""
    config = resolve_config("at", "mnist-mini", 0.3, epochs=epochs, n_train=40, batch_size=20, select_n=10, ema=decay)
    config["train_attack"].update(steps=2, alpha=0.15)
    config["selection"]["attack"]["steps"] = 2
    return config


def states_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_an_average_equals_an_uninterrupted_run(tmp_path):
    config = ema_config()
    train(config, tmp_path / "full", **QUIET)
    assert train(config, tmp_path / "resumed", Settings(progress=False, stop_after_epoch=1), log=lambda m: None)["done"] is False
    train(config, tmp_path / "resumed", resume=True, **QUIET)
    full = records.load_checkpoint(tmp_path / "full" / records.LAST)
    resumed = records.load_checkpoint(tmp_path / "resumed" / records.LAST)
    assert int(full["ema"]["n_averaged"]) == 4  # every step of both epochs, across the resume
    assert states_equal(full["ema"], resumed["ema"])
    assert states_equal(full["nets"]["f"], resumed["nets"]["f"])
    scores = [(r["nat_acc"], r["rob_acc"]) for r in records.read_jsonl(tmp_path / "full" / records.HISTORY)]
    assert scores == [(r["nat_acc"], r["rob_acc"]) for r in records.read_jsonl(tmp_path / "resumed" / records.HISTORY)]


def test_best_checkpoint_holds_the_average_not_f(tmp_path):
    config = ema_config(epochs=1)
    train(config, tmp_path / "run", **QUIET)
    best = records.load_checkpoint(tmp_path / "run" / records.BEST)["nets"]["f"]
    last = records.load_checkpoint(tmp_path / "run" / records.LAST)
    average = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert states_equal(best, average)
    assert not states_equal(best, last["nets"]["f"])


def test_runs_without_an_average_keep_their_names():
    plain = resolve_config("at", "mnist-mini", 0.3)
    assert "ema" not in plain
    assert records.run_name(plain) == records.run_name(resolve_config("at", "mnist-mini", 0.3, ema=None))
    assert records.run_name(plain) != records.run_name(resolve_config("at", "mnist-mini", 0.3, ema=0.999))


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_a_decay_outside_zero_one_is_refused_by_name(decay):
    with pytest.raises(UsageError, match=r"--ema .*outside \(0, 1\)"):
        resolve_config("at", "mnist-mini", 0.3, ema=decay)


def test_a_suite_block_takes_an_average(tmp_path):
    path = tmp_path / "ema.toml"
    path.write_text('description = "an average"\n[[runs]]\nmethods = ["at"]\ndataset = "mnist-mini"\n'
                    'eps = [0.3]\nema = 0.999\nattacks = ["natural"]\n')
    assert [run.config["ema"] for run in load_suite(str(path)).runs] == [0.999]
    path.write_text(path.read_text().replace("ema = 0.999", 'ema = "fast"'))
    with pytest.raises(UsageError, match="ema"):
        load_suite(str(path))
