"""Atomic records: a write killed halfway leaves the previous file intact and no temp file."""

import json

import pytest
import torch

from cat_bench import records


class _DiesHalfway:
    """A file whose first write puts half of its bytes on disk and then dies (a kill mid-write)."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(bytes(data)[: max(1, len(data) // 2)])
        self.fh.flush()
        raise KeyboardInterrupt

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def __getattr__(self, name):
        return getattr(self.fh, name)


def die_halfway(monkeypatch):
    """From now on, every atomic write dies halfway through its first write."""
    real = records.os.fdopen
    monkeypatch.setattr(records.os, "fdopen", lambda fd, mode: _DiesHalfway(real(fd, mode)))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_write_json_killed_halfway_keeps_the_previous_record(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    records.write_json(path, {"accuracy": 0.5})
    die_halfway(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        records.write_json(path, {"accuracy": 0.9, "padding": "x" * 1000})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert leftovers(tmp_path) == []


def test_save_checkpoint_killed_halfway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    first = {"epoch": 1, "w": torch.arange(1000.0)}
    records.save_checkpoint(path, first)
    die_halfway(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        records.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    monkeypatch.undo()
    loaded = records.load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], first["w"])
    assert leftovers(path.parent) == []


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "best.pt"
    records.save_checkpoint(path, {"epoch": 1, "w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(records.CorruptRecord, match=f"corrupt checkpoint {path}"):
        records.load_checkpoint(path)


def test_an_identity_recorded_before_later_keys_reads_with_the_values_those_runs_had(tmp_path):
    """A config.json from before precision, pixel protocols and schedules: its directory name still
    verifies, and every reader gets the keys filled in with what those runs did."""
    old = {"method": "at", "dataset": "mnist-mini", "arch": "smallcnn", "eps": 0.3, "seed": 0, "n_train": 100,
           "hparams": {}, "schedule": {"epochs": 1, "batch_size": 50}}
    run = tmp_path / records.run_name(old)
    run.mkdir()
    records.write_json(run / records.CONFIG, {"identity": old})
    identity = records.read_identity(run)
    assert (identity["precision"], identity["protocol"], identity["schedule"]["name"]) == ("fp32", "valid", "official")
    assert {k: v for k, v in identity.items() if k in old and k != "schedule"} == {k: v for k, v in old.items()
                                                                                  if k != "schedule"}
    assert identity["schedule"]["epochs"] == 1
    recorded = {**old, "protocol": "paper", "schedule": {**old["schedule"], "name": "uniform"}}
    assert records.normalised(recorded)["protocol"] == "paper"  # a recorded value is never replaced
    assert records.normalised(recorded)["schedule"]["name"] == "uniform"


def test_training_sessions_start_at_the_last_start_from_epoch_0(tmp_path):
    """Sessions before a start from scratch trained nothing the run holds: they are counted, not listed."""
    starts = [0, 2, 0, 0, 3, 5]  # a first attempt, a resume, a start killed before its checkpoint, the run
    for n, start in enumerate(starts):
        records.append_jsonl(tmp_path / records.SESSIONS, {"pid": n, "start_epoch": start})
    sessions, earlier = records.training_sessions(tmp_path)
    assert [s["pid"] for s in sessions] == [3, 4, 5] and earlier == 3
    assert records.training_sessions(tmp_path / "none") == ([], 0)


def test_a_copy_without_git_records_the_commit_it_was_sent_with(tmp_path, monkeypatch):
    """An offline GPU machine runs a copy of the tree without .git: the sender names the commit."""
    monkeypatch.setattr(records, "__file__", str(tmp_path / "records.py"))  # git finds no repository here
    monkeypatch.delenv("CAT_BENCH_GIT_COMMIT", raising=False)
    assert records.git_commit() is None
    monkeypatch.setenv("CAT_BENCH_GIT_COMMIT", "4d86886")
    assert records.git_commit() == "4d86886"
