"""Data-parallel training: two gloo processes on CPU train what one process trains.

CAT is the method under test because it steps two networks (f and g, both synchronised); the
optimiser is switched to SGD because Adam, CAT's MNIST optimiser, is blind to a gradient's scale
and would not see gradients summed instead of averaged.
"""

import os
import subprocess
import sys

import pytest
import torch

from cat_bench import distributed, records
from cat_bench.cli import main
from cat_bench.distributed import Group
from cat_bench.errors import GroupFailed, UsageError
from cat_bench.methods.base import Method
from cat_bench.networks import Networks
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train, train_group

QUIET = dict(settings=Settings(progress=False), log=lambda m: None)
TOL = 1e-4  # relative to each network's update: float32 sums in another order stay below 1e-5


def config(epochs=2, **kw):
    c = resolve_config("cat-cent", "mnist-mini", 0.3, epochs=epochs, n_train=150, select_n=40, batch_size=50, **kw)
    c["train_attack"].update(steps=3, alpha=0.1)
    c["selection"]["attack"]["steps"] = 3
    c["schedule"].update(optimizer="sgd", lr=0.05)
    return c


def initial_weights(cfg):
    """The weights `train` starts from (seeded like it)."""
    torch.manual_seed(cfg["seed"])
    return Networks(cfg, torch.device("cpu")).state()


def max_diff(a, b, cfg=None):
    """The largest difference of the two runs' weight updates, relative to the update's size, per network.

    Relative, because g's update is small (its mask barely moves in 6 steps): an absolute bound
    fine enough for f would miss an unsynchronised g."""
    start = initial_weights(cfg or config())
    a = records.load_checkpoint(a / records.LAST)["nets"]
    b = records.load_checkpoint(b / records.LAST)["nets"]
    assert a.keys() == b.keys() == start.keys()
    worst = 0.0
    for n in a:
        da = torch.cat([(a[n][k].float() - start[n][k].float()).flatten() for k in a[n]])
        db = torch.cat([(b[n][k].float() - start[n][k].float()).flatten() for k in a[n]])
        assert da.abs().max() > 0
        worst = max(worst, ((db - da).norm() / da.norm()).item())
    return worst


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "one"
    train(config(), out, **QUIET)
    return out


def test_two_ranks_take_the_step_of_one_process(one_process, tmp_path):
    train_group(config(), tmp_path / "two", 2, Settings(progress=False))
    assert max_diff(one_process, tmp_path / "two") < TOL
    one, two = (records.read_jsonl(d / records.HISTORY) for d in (one_process, tmp_path / "two"))
    assert len(two) == 2  # rank 0 alone writes
    for a, b in zip(one, two):
        # mask_std = sqrt(E[M^2] - E[M]^2) cancels to a few digits; its float32 and float64 sums differ there
        assert b["train"] == pytest.approx(a["train"], rel=1e-5, abs=1e-4)
        assert (b["nat_acc"], b["rob_acc"]) == (a["nat_acc"], a["rob_acc"])
    assert [s["ranks"] for s in records.read_jsonl(tmp_path / "two" / records.SESSIONS)] == [2]
    assert records.read_identity(tmp_path / "two") == config()  # the group is not part of the identity


def test_three_ranks_on_uneven_shards_then_one_process_resumes(one_process, tmp_path):
    """50 rows over 3 ranks (17, 17, 16): the weighted sum is the batch mean; then 1 process finishes it."""
    out = tmp_path / "three-then-one"
    train_group(config(), out, 3, Settings(progress=False, stop_after_epoch=1))
    assert not (out / records.DONE).exists() and len(records.read_jsonl(out / records.HISTORY)) == 1
    train(config(), out, resume=True, **QUIET)
    assert max_diff(one_process, out) < TOL


def _dies_in_epoch_2(config_, out, settings):
    """A rank entry point whose rank 1 is killed (os._exit) at its first optimiser step of epoch 2."""
    if distributed.from_env().rank == 1:
        real, calls = Method.apply, []

        def apply(self, optimizer):
            calls.append(1)
            if len(calls) > 2 * 3:  # f and g, 3 batches per epoch
                os._exit(9)
            real(self, optimizer)

        Method.apply = apply
    train(config_, out, settings)


def test_a_killed_rank_stops_the_group_and_the_rerun_resumes(one_process, tmp_path):
    out = tmp_path / "killed"
    with pytest.raises(GroupFailed, match="rank 1 of 2 exited with code 9.*--resume"):
        distributed.launch(_dies_in_epoch_2, (config(), out, Settings(progress=False)), 2)
    assert not (out / records.DONE).exists()
    assert [r["epoch"] for r in records.read_jsonl(out / records.HISTORY)] == [1]
    train_group(config(), out, 2, Settings(progress=False), resume=True)
    assert max_diff(one_process, out) < TOL
    assert [s["start_epoch"] for s in records.read_jsonl(out / records.SESSIONS)] == [0, 1]


def test_cli_nproc_trains_a_group(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "1", "--n-train", "100",
            "--select-n", "20", "--schedule", "uniform", "--nproc", "2", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert "done: selected epoch 1" in capsys.readouterr().out
    assert records.read_jsonl(out / records.SESSIONS)[0]["ranks"] == 2


def test_torchrun_starts_the_same_group(tmp_path):
    """torchrun sets RANK / WORLD_SIZE; `train` joins that group and only rank 0 speaks and writes."""
    out = tmp_path / "torchrun"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "cat_bench.cli",
                           "train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "1",
                           "--n-train", "60", "--select-n", "20", "--schedule", "uniform", "--no-progress", "--out",
                           str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done: selected epoch 1") == 1 and proc.stderr.count("run directory:") == 1
    assert [s["ranks"] for s in records.read_jsonl(out / records.SESSIONS)] == [2]


def test_what_a_group_cannot_train_like_one_process_is_refused(tmp_path):
    with pytest.raises(UsageError, match="single-process only.*g_kl_reduction=sum"):
        train(config(overrides={"g_kl_reduction": "sum"}), tmp_path / "sum", group=Group(0, 2), **QUIET)
    bn = resolve_config("at", "mnist-mini", 0.3, arch="preact-resnet18", epochs=1, n_train=20, select_n=10)
    with pytest.raises(UsageError, match="BatchNorm needs CUDA"):
        train_group(bn, tmp_path / "bn", 2, Settings(progress=False))


def test_augmentation_and_a_random_start_selection_split_like_one_process(tmp_path):
    """AT with the batch augmented (crop + flip) before it is split, and a selection PGD with a random
    start split across the ranks (the CIFAR protocols' settings, here on MNIST's network)."""
    cfg = resolve_config("at", "mnist-mini", 0.3, schedule="uniform", epochs=2, n_train=60, select_n=45,
                         batch_size=30)
    cfg["train_attack"]["steps"] = 2
    cfg["selection"]["attack"].update(steps=2, random_start="uniform")
    cfg["schedule"].update(augment="crop-flip", optimizer="sgd", lr=0.05)
    train(cfg, tmp_path / "one", **QUIET)
    train_group(cfg, tmp_path / "two", 2, Settings(progress=False))
    assert max_diff(tmp_path / "one", tmp_path / "two", cfg) < TOL
    one, two = (records.read_jsonl(tmp_path / d / records.HISTORY) for d in ("one", "two"))
    assert [(r["nat_acc"], r["rob_acc"]) for r in two] == [(r["nat_acc"], r["rob_acc"]) for r in one]


def test_shards_cover_the_batch_once():
    for n, world in ((50, 2), (50, 3), (7, 4)):
        shards = [distributed.shard(n, Group(r, world)) for r in range(world)]
        rows = torch.cat([s.take(torch.arange(n)) for s in shards])
        assert rows.tolist() == list(range(n))
        assert sum(s.weight for s in shards) == pytest.approx(1.0)


def test_a_failed_group_exits_1_and_a_suite_marks_the_run_failed(tmp_path, monkeypatch, capsys):
    import cat_bench.orchestrate as orchestrate
    import cat_bench.train as train_module
    from cat_bench.suite import load_suite

    def killed(*args, **kwargs):
        raise GroupFailed("training rank 1 of 2 exited with code 9 and the group stopped; rerun ... --resume")

    monkeypatch.setattr(train_module, "train_group", killed)
    argv = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--nproc", "2", "--out",
            str(tmp_path / "cli")]
    assert main(argv) == 1
    assert "rank 1 of 2 exited with code 9" in capsys.readouterr().err
    monkeypatch.setattr(orchestrate, "train_group", killed)
    spec = load_suite("smoke").runs[0]
    outcome = orchestrate.run_local(tmp_path / "r", [spec], Settings("cpu", progress=False), log=lambda m: None,
                                    nproc=2)
    assert outcome == {spec.name: "failed"}
    failed = records.read_json(orchestrate.run_dir(tmp_path / "r", spec) / records.FAILED)
    assert "rank 1 of 2" in failed["reason"] and "resumes" in failed["fix"]
