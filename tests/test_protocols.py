"""Pixel-domain protocols (docs/method.md s4) and each method's official protocol, end to end on CPU.

"paper": each official script's own domain (CAT's MNIST code never clips x + delta or x + M*delta to
[0,1], in training, selection or test); "valid": inputs always in [0,1]. The tests watch every
input the classifier sees, in training, in per-epoch selection and in evaluation.
"""

from unittest import mock

import pytest
import torch

from cat_bench import records
from cat_bench.errors import UsageError
from cat_bench.evaluate import evaluate
from cat_bench.methods import protocol_for
from cat_bench.methods.base import lr_at
from cat_bench.models.classifier import Classifier
from cat_bench.networks import resolve_device
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train

QUIET = dict(settings=Settings("cpu", progress=False), log=lambda m: None)
SMALL = dict(epochs=1, n_train=100, batch_size=50, select_n=20)


class InputRange:
    """Min and max of every input a Classifier (f) receives while active."""

    def __enter__(self):
        self.lo, self.hi = float("inf"), float("-inf")

        def hook(module, args):
            if isinstance(module, Classifier):
                self.lo, self.hi = min(self.lo, args[0].min().item()), max(self.hi, args[0].max().item())

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_clip_settings_per_protocol():
    paper = resolve_config("cat-cent", "mnist", 0.4)
    valid = resolve_config("cat-cent", "mnist", 0.4, protocol="valid")
    assert paper["protocol"] == "paper" and not paper["train_attack"]["clip"]
    assert not paper["selection"]["attack"]["clip"]
    assert valid["train_attack"]["clip"] and valid["selection"]["attack"]["clip"]
    assert records.run_name(paper) != records.run_name(valid)  # part of the run's identity
    # The baselines' MNIST scripts clip (mnist_challenge, TRADES); every CIFAR script clips.
    assert resolve_config("at", "mnist", 0.3)["train_attack"]["clip"]
    assert resolve_config("trades", "mnist", 0.3)["train_attack"]["clip"]
    assert resolve_config("cat-cw", "cifar10", 8 / 255)["train_attack"]["clip"]
    with pytest.raises(UsageError, match="'clipped'.*paper, valid"):
        resolve_config("cat-cent", "mnist", 0.3, protocol="clipped")
    with pytest.raises(UsageError, match="'authors'.*official, uniform"):
        resolve_config("cat-cent", "mnist", 0.3, schedule="authors")


@pytest.mark.parametrize("protocol", ["paper", "valid"])
def test_cat_on_mnist_clips_only_under_the_valid_protocol(tmp_path, protocol):
    """Paper protocol: f sees inputs outside [0,1] in training, selection and evaluation; valid: never."""
    config = resolve_config("cat-cent", "mnist-mini", 0.4, protocol=protocol, **SMALL)
    with InputRange() as during_training:
        train(config, tmp_path, **QUIET)
    # The attacks' inputs only: the setup checks feed other ranges on purpose (the input-range check).
    with InputRange() as during_eval, mock.patch("cat_bench.evaluate.run_checks", return_value=[]):
        result = evaluate(tmp_path, "natural,pgd20", n_examples=20, device=resolve_device("cpu"), progress=False,
                          log=lambda m: None)
    assert result["attacks"]["pgd20"]["settings"]["clip"] == (protocol == "valid")
    for seen in (during_training, during_eval):
        if protocol == "paper":
            assert seen.lo < -0.05 and seen.hi > 1.05
        else:
            assert 0.0 <= seen.lo and seen.hi <= 1.0


def test_lr_schedules_follow_the_scripts():
    """Milestones count completed epochs (CAT's `t == 30` drops after 31); Rice et al. set the lr per batch
    from epoch + (i+1)/n, so the last batch of epoch 100 already trains at lr/10."""
    cat = protocol_for("cat-cent", "mnist", "smallcnn").as_dict()
    assert [lr_at(cat, e, 0, 600) for e in (30, 31)] == [1e-3, pytest.approx(1e-4)]
    at = protocol_for("at", "cifar10", "preact-resnet18").as_dict()
    assert lr_at(at, 99, 389, 391) == 0.1 and lr_at(at, 99, 390, 391) == pytest.approx(0.01)
    assert lr_at(at, 149, 390, 391) == pytest.approx(0.001)
    trades = protocol_for("trades", "cifar10", "preact-resnet18").as_dict()
    assert [lr_at(trades, e, 0, 391) for e in (73, 74, 75)] == [0.1, pytest.approx(0.01), pytest.approx(0.01)]


def test_max_steps_and_final_selection(tmp_path):
    """Madry et al.'s AT stops after max_steps optimiser steps, mid-epoch, and keeps the last epoch."""
    config = resolve_config("at", "mnist-mini", 0.3, epochs=3, n_train=100, select_n=10)
    config["schedule"]["max_steps"] = 3  # 2 batches of 50 an epoch: epochs 1 (2 steps) and 2 (1 step)
    config["train_attack"]["steps"] = 2
    summary = train(config, tmp_path, **QUIET)
    rows = records.read_jsonl(tmp_path / records.HISTORY)
    assert [r["epoch"] for r in rows] == [1, 2] and summary["epochs"] == 2
    assert summary["best_epoch"] == 2 and summary["selection"] == "final"
    assert records.load_checkpoint(tmp_path / records.BEST)["epoch"] == 2


def test_stop_after_epoch_is_a_budget_and_the_mask_is_traced(tmp_path):
    """--stop-after-epoch leaves a resumable run without `done` (same identity); trace.jsonl holds CAT's
    mask every `trace_every` batches, and a resumed run ends as an uninterrupted one."""
    config = resolve_config("cat-cent", "mnist-mini", 0.3, epochs=2, n_train=100, batch_size=25, select_n=10)
    first = train(config, tmp_path / "a", Settings("cpu", progress=False, stop_after_epoch=1), trace_every=2,
                  log=lambda m: None)
    assert first == {"done": False, "epochs_trained": 1, "epochs": 2}
    assert not (tmp_path / "a" / records.DONE).exists()
    trace = records.read_jsonl(tmp_path / "a" / records.TRACE)
    assert [(r["epoch"], r["batch"], r["step"]) for r in trace] == [(1, 1, 1), (1, 3, 3)]
    assert all(0 <= r["mask_mean"] <= 1 and r["mask_std"] >= 0 and "loss_g" in r for r in trace)
    train(config, tmp_path / "a", resume=True, trace_every=2, **QUIET)
    train(config, tmp_path / "b", trace_every=2, **QUIET)
    for name in (records.TRACE, records.DONE):
        a, b = (records.read_jsonl if name == records.TRACE else records.read_json)(tmp_path / "a" / name), \
            (records.read_jsonl if name == records.TRACE else records.read_json)(tmp_path / "b" / name)
        if name == records.DONE:
            a, b = {k: v for k, v in a.items() if "seconds" not in k}, {k: v for k, v in b.items() if "seconds" not in k}
        assert a == b


def test_rice_schedule_scales_with_epochs_as_train_cifar_does_and_fixed_schedules_do_not():
    """train_cifar.py's piecewise schedule: lr_max while t / epochs < 0.5, /10 while < 0.75, then /100,
    t = epoch + (i+1)/n; other scripts drop at fixed epochs (TRADES) whatever --epochs says."""
    from cat_bench.methods.base import lr_at
    from cat_bench.config import resolve_config

    def official(t, epochs, lr_max=0.1):
        return lr_max if t / epochs < 0.5 else lr_max / 10 if t / epochs < 0.75 else lr_max / 100

    for epochs in (200, 100, 30, 7):
        schedule = resolve_config("at", "cifar10", 8 / 255, epochs=epochs)["schedule"]
        n = 13
        for epoch in range(epochs):
            for i in range(n):
                assert lr_at(schedule, epoch, i, n) == pytest.approx(official(epoch + (i + 1) / n, epochs), rel=1e-12)
    assert resolve_config("at", "cifar10", 8 / 255)["schedule"]["milestones"] == [100, 150]  # identity unchanged
    fixed = resolve_config("trades", "cifar10", 8 / 255)["schedule"]["milestones"]
    assert resolve_config("trades", "cifar10", 8 / 255, epochs=30)["schedule"]["milestones"] == fixed


def test_mnist_rows_share_one_harness_the_baselines_train_with_their_scripts_clip():
    """Under the paper protocol every MNIST run is selected (and evaluated, presets.clips) without the
    [0,1] clip, as CAT's Train_MNIST.py tests; AT and TRADES still train clipped as their scripts do."""
    for method, trains_clipped in (("at", True), ("trades", True), ("cat-cw", False)):
        paper = resolve_config(method, "mnist", 0.3)
        assert paper["train_attack"]["clip"] is trains_clipped
        assert paper["selection"]["attack"]["clip"] is False
        valid = resolve_config(method, "mnist", 0.3, protocol="valid")
        assert valid["train_attack"]["clip"] is True and valid["selection"]["attack"]["clip"] is True


def test_list_methods_says_where_the_network_is_the_papers_and_how_each_family_is_evaluated(capsys):
    from cat_bench.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "the script itself builds WRN-34-10" in out and "the script itself builds a standard ResNet-18" in out
    assert "evaluation, mnist: every method selected and evaluated as Train_MNIST.py tests: no [0,1] clip" in out


def test_table_captions_state_the_evaluation_harness_and_the_script_networks():
    """The report's Table 1 says its rows share Train_MNIST.py's unclipped harness, as presets.clips does;
    the CIFAR tables name each method whose script builds another network than the table's."""
    from cat_bench.presets import EVALUATION_NOTE, clips
    from cat_bench.report.tables import caption

    assert clips("mnist", "paper") is False and clips("cifar", "paper") is True
    assert EVALUATION_NOTE["mnist"] in caption("1", "mnist")
    assert "Networks:" not in caption("1", "mnist")
    table2 = caption("2", "cifar10")
    assert EVALUATION_NOTE["cifar"] in table2
    for method in ("trades", "mart", "fat"):
        assert f"{method}: its script builds" in table2
    assert "cat-cent: its script" not in table2
