"""The training core: run directory contents, resume equivalence, selection split, CIFAR path."""

import json
import re

import pytest
import torch

from cat_bench import records
from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train

QUIET = dict(settings=Settings(progress=False), log=lambda m: None)


def small_config(method="cat-cent", **kw):
    """A resolved config cut down for CPU tests: 200 images, 4-step attacks."""
    args = dict(epochs=2, n_train=200, select_n=50, batch_size=50)
    args.update(kw)
    config = resolve_config(method, "mnist-mini", 0.3, **args)
    config["train_attack"].update(steps=4, alpha=0.1)
    config["selection"]["attack"]["steps"] = 4
    return config


def stable(rows):
    """History rows without wall-clock fields."""
    drop = {"seconds", "train_seconds", "images_per_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def nets_equal(a, b):
    return all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "full"
    train(small_config(), out, **QUIET)
    return out


def test_run_directory_holds_config_history_checkpoints_and_done(uninterrupted):
    out = uninterrupted
    stored = records.read_json(out / records.CONFIG)
    assert stored["identity"] == small_config()
    prov = stored["provenance"]
    assert {"torch", "torchvision", "git_commit", "hardware", "cat_bench"} <= set(prov)
    assert stored["identity"]["seed"] == 0
    assert stored["identity"]["hparams"]["beta"] == 1.0  # MNIST default a (docs/method.md s1)
    preset = resolve_config("cat-cent", "mnist-mini", 0.3)
    assert preset["train_attack"] == {"eps": 0.3, "alpha": pytest.approx(0.015), "steps": 20, "clip": False}
    assert preset["schedule"]["optimizer"] == "adam" and preset["schedule"]["epochs"] == 40
    rows = records.read_jsonl(out / records.HISTORY)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"loss_f", "loss_g", "mask_mean", "mask_std"} <= set(rows[0]["train"])
    assert stored["sources"]["protocol"].startswith("TienjinHuang/Calibrated-adversarial-training Codes/Train_MNIST.py")
    assert "Train_MNIST.py" in stored["sources"]["hparams"]["b"]
    assert all(0 <= r["nat_acc"] <= 1 and 0 <= r["rob_acc"] <= 1 for r in rows)
    done = records.read_json(out / records.DONE)
    assert done["best_epoch"] == max(rows, key=lambda r: r["score"])["epoch"]
    best = records.load_checkpoint(out / records.BEST)
    assert set(best["nets"]) == {"f", "g"} and best["epoch"] == done["best_epoch"]
    last = records.load_checkpoint(out / records.LAST)
    assert set(last["optimizers"]) == {"f", "g"} and last["epoch"] == 2


def test_resume_after_a_kill_gives_the_same_numbers(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real_save = records.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1 was checkpointed

    monkeypatch.setattr(records, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(), out, **QUIET)
    assert not (out / records.DONE).exists()
    monkeypatch.setattr(records, "save_checkpoint", real_save)
    with pytest.raises(UsageError, match="--resume"):
        train(small_config(), out, **QUIET)
    train(small_config(), out, resume=True, **QUIET)

    assert stable(records.read_jsonl(out / records.HISTORY)) == stable(records.read_jsonl(uninterrupted / records.HISTORY))
    for name in (records.LAST, records.BEST):
        assert nets_equal(records.load_checkpoint(out / name)["nets"],
                          records.load_checkpoint(uninterrupted / name)["nets"])


def test_a_torn_history_line_is_dropped_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "torn"
    real_save = records.save_checkpoint

    def die_after_epoch_1(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == 1:
            with open(path.parents[1] / records.HISTORY, "a") as fh:
                fh.write('{"epoch": 2, "trunc')  # a kill in the middle of the next append
            raise KeyboardInterrupt

    monkeypatch.setattr(records, "save_checkpoint", die_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(small_config("at"), out, **QUIET)
    monkeypatch.setattr(records, "save_checkpoint", real_save)
    train(small_config("at"), out, resume=True, **QUIET)
    lines = (out / records.HISTORY).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def _killed_after_epoch_1(out, monkeypatch, method="at"):
    """A run killed in epoch 2, after its epoch-1 checkpoint: history and trace hold rows of epoch 2."""
    real_save = records.save_checkpoint

    def die_in_epoch_2(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == 1:
            records.append_jsonl(path.parents[1] / records.TRACE, {"epoch": 2, "batch": 1, "mask_mean": 0.5})
            records.append_jsonl(path.parents[1] / records.HISTORY, {"epoch": 2, "interrupted": True})
            raise KeyboardInterrupt

    monkeypatch.setattr(records, "save_checkpoint", die_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(method), out, **QUIET)
    monkeypatch.setattr(records, "save_checkpoint", real_save)


def test_a_kill_while_resuming_loses_no_history_or_trace_row(uninterrupted, tmp_path, monkeypatch):
    """Dropping an interrupted epoch's rows replaces each file whole: a kill in the middle leaves every row."""
    out = tmp_path / "run"
    _killed_after_epoch_1(out, monkeypatch, "cat-cent")
    kept = lambda name: [r for r in records.read_jsonl(out / name) if r["epoch"] == 1]  # noqa: E731
    before = {name: kept(name) for name in (records.HISTORY, records.TRACE)}
    assert all(before.values())

    class DiesOnTheSecondRow:
        calls = 0
        loads = staticmethod(json.loads)

        @classmethod
        def dumps(cls, *args, **kwargs):
            cls.calls += 1
            if cls.calls == 2:
                raise KeyboardInterrupt  # killed while the kept rows are written again
            return json.dumps(*args, **kwargs)

    monkeypatch.setattr(records, "json", DiesOnTheSecondRow)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(), out, resume=True, **QUIET)
    monkeypatch.setattr(records, "json", json)
    assert {name: kept(name) for name in before} == before  # epoch 1's rows, the ones the checkpoint holds
    assert not list(out.glob(".*.tmp"))
    train(small_config(), out, resume=True, **QUIET)
    assert stable(records.read_jsonl(out / records.HISTORY)) == stable(records.read_jsonl(uninterrupted / records.HISTORY))
    trace = records.read_jsonl(out / records.TRACE)
    assert [r["epoch"] for r in trace] == sorted(r["epoch"] for r in trace) and "interrupted" not in str(trace)


@pytest.mark.parametrize("damage, held", [
    (lambda rows: [], "none"),  # an emptied history beside a checkpoint
    (lambda rows: rows[:1] * 2, "[1, 1]"),  # a duplicated line
])
def test_a_history_that_disagrees_with_its_checkpoint_is_named(damage, held, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _killed_after_epoch_1(out, monkeypatch)
    rows = damage(records.read_jsonl(out / records.HISTORY))
    (out / records.HISTORY).write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(CorruptRecord, match=rf"disagrees with the checkpoint .* holds epochs {re.escape(held)}"):
        train(small_config("at"), out, resume=True, **QUIET)


def test_another_config_in_the_same_directory_is_refused(uninterrupted):
    with pytest.raises(UsageError, match="different"):
        train(small_config(seed=1), uninterrupted, **QUIET)


def test_selection_on_a_validation_split(tmp_path, monkeypatch):
    """select_on="val": the selection images are held out of the 200 training images, and none is trained on."""
    import cat_bench.train as tr

    seen = {}
    real_loader, real_correct = tr.TensorLoader, tr.correct_under

    def loader(x, y, *args, **kwargs):
        seen["train"] = x.clone()
        return real_loader(x, y, *args, **kwargs)

    def correct(model, x, *args, **kwargs):
        seen["select"] = x.clone()
        return real_correct(model, x, *args, **kwargs)

    monkeypatch.setattr(tr, "TensorLoader", loader)
    monkeypatch.setattr(tr, "correct_under", correct)
    config = small_config(method="at", epochs=1, select_on="val", select_n=None)
    assert config["selection"]["on"] == "val"
    train(config, tmp_path / "val", **QUIET)
    assert records.read_jsonl(tmp_path / "val" / records.HISTORY)[0]["epoch"] == 1
    assert (len(seen["train"]), len(seen["select"])) == (180, 20)  # a tenth of the 200 held out
    train_images = {bytes(im.numpy()) for im in seen["train"]}
    held_out = [bytes((im * 255).round().to(torch.uint8).numpy()) if im.is_floating_point() else bytes(im.numpy())
                for im in seen["select"]]
    assert not train_images & set(held_out)
    from cat_bench.data import load_split
    x, _ = load_split("mnist-mini", "train")
    assert set(held_out) <= {bytes(im.numpy()) for im in x[:200]}  # from the training split, not the test split


@pytest.mark.parametrize("kwargs,needle", [
    (dict(eps=0.0), "0.0"), (dict(eps=1.5), "1.5"), (dict(method="pgd-at"), "pgd-at"),
    (dict(dataset="svhn"), "svhn"), (dict(arch="resnet50"), "resnet50"), (dict(select_on="train"), "train"),
    (dict(precision="fp16"), "'fp16'; allowed: fp32, tf32, bf16"),
])
def test_bad_configs_are_named(kwargs, needle):
    args = dict(method="at", dataset="mnist-mini", eps=0.3)
    args.update(kwargs)
    with pytest.raises(UsageError, match=needle):
        resolve_config(args.pop("method"), args.pop("dataset"), args.pop("eps"), **args)


def test_precision_is_part_of_the_identity_and_changes_training(uninterrupted, tmp_path):
    """fp32 (the official scripts') is the default and keeps the name runs had before precision was
    recorded; bf16 is another run, trained under autocast (also on CPU)."""
    fp32 = small_config()
    assert fp32["precision"] == "fp32"
    before = {k: v for k, v in fp32.items() if k != "precision"}  # an identity recorded before precision was
    assert records.config_hash(before) == records.config_hash(fp32)
    bf16 = small_config(precision="bf16")
    assert records.run_name(bf16) != records.run_name(fp32)
    train(bf16, tmp_path / "bf16", **QUIET)
    assert records.read_identity(tmp_path / "bf16")["precision"] == "bf16"
    loss = [r["train"]["loss_f"] for r in records.read_jsonl(tmp_path / "bf16" / records.HISTORY)]
    assert loss != [r["train"]["loss_f"] for r in records.read_jsonl(uninterrupted / records.HISTORY)]
    old = tmp_path / "old"  # a run directory from before: its identity has no precision key
    records.write_json(old / records.CONFIG, {"identity": before})
    assert records.read_identity(old) == fp32


def test_cifar_path_on_synthetic_cifar_files(synthetic_cifar, tmp_path):
    root = synthetic_cifar("cifar10", n_train=40, n_test=20)
    config = resolve_config("trades", "cifar10", 8 / 255, arch="wrn-10-1", epochs=1, batch_size=20)
    assert config["schedule"]["optimizer"] == "sgd" and config["train_attack"]["steps"] == 10
    assert config["train_attack"]["eps"] == 0.031 and config["train_attack"]["alpha"] == 0.007  # as the script writes
    assert config["selection"]["attack"]["random_start"] == "uniform" and config["selection"]["rule"] == "final"
    assert not config["schedule"]["normalize"] and config["schedule"]["augment"] == "crop-flip"
    train(config, tmp_path / "cifar", Settings(data_root=str(root), progress=False), log=lambda m: None)
    row = records.read_jsonl(tmp_path / "cifar" / records.HISTORY)[0]
    assert row["epoch"] == 1 and 0 <= row["nat_acc"] <= 1
