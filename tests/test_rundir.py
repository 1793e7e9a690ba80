"""Folders cat-bench writes (cat_bench/rundir.py): only its own, one writer at a time, the umask's modes,
no stale temp files; records it cannot trust are refused, never silently used or cut short."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cat_bench import records
from cat_bench.cli import main
from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.rundir import RunLock, claim, owner

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "1", "--n-train", "60",
         "--select-n", "20", "--no-progress"]


def run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("rundir") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


@pytest.fixture()
def copy(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. Only folders that are new, empty or cat-bench's own

@pytest.mark.parametrize("files,needle", [
    ({"history.jsonl": "my own log\n", "notes.txt": "mine"}, "would overwrite history.jsonl"),
    ({"config.json": '{"lr": 0.1}'}, "would overwrite config.json"),  # another tool's config: was a KeyError
    ({"done": "yes"}, "would overwrite done"),  # was a FileNotFoundError
    ({"notes.txt": "mine"}, "holds 1 file(s) cat-bench did not write (notes.txt)"),
])
def test_train_refuses_a_folder_of_other_files(files, needle, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = snapshot(out)
    code, err = run(TRAIN + ["--out", out], capsys)
    assert code == 2 and needle in err and "Traceback" not in err
    assert snapshot(out) == before


def test_report_refuses_a_folder_of_other_files(tmp_path, capsys):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("<h1>my homepage</h1>")
    (out / "style.css").write_text("h1 {}")
    before = snapshot(out)
    code, err = run(["report", "--suite", "smoke", "--results", ROOT / "results" / "smoke", "--out", out], capsys)
    assert code == 2 and "would overwrite index.html, style.css" in err
    assert snapshot(out) == before


def test_new_folders_are_marked_and_earlier_ones_recognised(trained, tmp_path):
    assert owner(trained) == "run" and (trained / ".cat-bench").is_file()
    assert claim(tmp_path / "new", "report") == tmp_path / "new" and owner(tmp_path / "new") == "report"
    with pytest.raises(Exception, match="is a cat-bench report folder, not a run folder"):
        claim(tmp_path / "new", "run")
    # folders made before the marker: committed run records and reports keep working
    for run_dir in (ROOT / "results" / "smoke" / "runs").iterdir():
        assert owner(run_dir) == "run" and not (run_dir / ".cat-bench").exists()
    assert owner(ROOT / "reports" / "smoke") == "report"


# 2 and 10. One writer per run directory: train, eval, a suite and a group's ranks share one lock

@pytest.fixture()
def held(copy):
    """Another process holding the run's lock."""
    code = ("import sys, time\nfrom cat_bench.rundir import RunLock\nRunLock(sys.argv[1]).acquire()\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(copy)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_of_a_run_exits_2_naming_the_holder(copy, held, capsys):
    before = snapshot(copy)
    for argv in (["eval", copy, "--attacks", "natural", "--n-examples", "20", "--no-progress"],
                 TRAIN + ["--out", copy, "--resume"]):
        code, err = run(argv, capsys)
        assert code == 2 and f"{copy} is in use by pid {held.pid}" in err
    assert snapshot(copy) == before


def test_the_lock_is_reentrant_and_refuses_another_process(copy, tmp_path):
    with RunLock(copy), RunLock(copy):  # a suite's job holds it while train and eval take it again
        probe = subprocess.run([sys.executable, "-c", "import sys\nfrom cat_bench.rundir import RunLock\n"
                                "RunLock(sys.argv[1]).acquire()", str(copy)], capture_output=True, text=True)
        assert probe.returncode != 0 and "RunBusy" in probe.stderr and str(os.getpid()) in probe.stderr
    with RunLock(copy):  # released: free again
        pass


def _ignores_sigint(ready: str) -> None:
    """A rank that does not act on SIGINT (as one deep in a collective whose peer is gone never returns
    to Python to raise KeyboardInterrupt): torch's own SIGINT on the parent's death cannot stop it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    (Path(ready) / str(os.getpid())).touch()
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the ranks' state from /proc")
def test_killing_a_launcher_kills_its_ranks(tmp_path):
    ready = tmp_path / "ready"
    ready.mkdir()
    code = (f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom test_rundir import _ignores_sigint\n"
            f"from cat_bench import distributed\ndistributed.launch(_ignores_sigint, ({str(ready)!r},), 2)\n")
    launcher = subprocess.Popen([sys.executable, "-c", code])
    ranks: list[int] = []
    try:
        deadline = time.time() + 300
        while len(ranks) < 2:
            assert launcher.poll() is None and time.time() < deadline
            time.sleep(0.2)
            ranks = [int(p.name) for p in ready.iterdir()]
        launcher.kill()
        launcher.wait()
        deadline = time.time() + 60
        while any(map(_alive, ranks)):
            assert time.time() < deadline, "the ranks outlived their launcher"
            time.sleep(0.2)
    finally:
        launcher.kill()
        for pid in ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# 3. Modes follow the umask

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_records_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        records.write_json(tmp_path / "eval.json", {"a": 1})
        records.save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    finally:
        os.umask(old)
    for name in ("eval.json", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


# 11 and 12. Records that cannot be read are CorruptRecords; a damaged history is never cut short

@pytest.mark.parametrize("content", [bytes(range(256))[::-3] + b"\xff\xfe", b"null", b"[1, 2]", b'"text"'],
                         ids=["binary", "null", "list", "string"])
def test_an_unreadable_record_is_a_corrupt_record(tmp_path, content):
    (tmp_path / "eval.json").write_bytes(content)
    with pytest.raises(CorruptRecord, match="corrupt record .*eval.json"):
        records.read_json(tmp_path / "eval.json")


def test_a_garbage_line_inside_a_history_is_refused_naming_the_line(copy, capsys):
    path = copy / records.HISTORY
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], "garbage{", *rows[1:]]) + "\n")
    with pytest.raises(CorruptRecord, match=f"{path}: line 2 is not a JSON object"):
        records.read_jsonl(path)
    before = path.read_bytes()
    (copy / records.DONE).unlink()
    code, err = run(TRAIN + ["--out", copy, "--resume"], capsys)
    assert code == 2 and "line 2" in err
    assert path.read_bytes() == before  # not rewritten without the damaged lines


def test_a_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "history.jsonl"
    records.append_jsonl(path, {"epoch": 1})
    with open(path, "a") as fh:
        fh.write('{"epoch": 2, "lo')  # a kill mid-append
    assert records.read_jsonl(path) == [{"epoch": 1}]
    records.append_jsonl(path, {"epoch": 2})
    assert records.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


# 13. Temp files of killed writes are removed by the next writer; reused attacks keep their provenance

def test_the_lock_holder_removes_stale_temp_files(copy, capsys):
    stale = [copy / "checkpoints" / ".last.pt.k1ll3d.tmp", copy / ".eval.json.abc123.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    assert main(["eval", str(copy), "--attacks", "natural", "--n-examples", "20", "--no-progress"]) == 0
    assert not any(path.exists() for path in stale)


def _users_project(tmp_path: Path) -> Path:
    """A user's folder with hidden temp-like files, a subfolder and a `.lock` of their own beside it."""
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / ".draft.tmp").write_text("d")
    (proj / "sub" / ".cache.tmp").write_text("c")
    (proj / "notes.txt").write_text("mine")
    (tmp_path / "proj.lock").write_text("keep")
    return proj


@pytest.mark.parametrize("command", ["train", "report", "eval"])
def test_a_refused_command_touches_none_of_the_users_files(command, tmp_path, capsys):
    """Refusing a user's folder deletes nothing in it and never truncates a `.lock` cat-bench did not make."""
    proj = _users_project(tmp_path)
    if command == "eval":
        (proj / "config.json").write_text('{"lr": 0.1}')
    before = snapshot(tmp_path)
    argv = {"train": TRAIN + ["--out", proj], "report": ["report", "--results", tmp_path, "--out", proj],
            "eval": ["eval", proj, "--attacks", "natural"]}[command]
    code, out = run(argv, capsys)
    assert code == 2 and "proj" in out, out
    assert snapshot(tmp_path) == before


def test_a_lock_that_is_a_link_is_refused_and_not_written_through(copy, tmp_path, capsys):
    target = tmp_path / "outside.txt"
    target.write_text("theirs")
    lock = tmp_path / "run.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(target)
    code, out = run(["eval", copy, "--attacks", "natural", "--n-examples", "20", "--no-progress"], capsys)
    assert code == 2 and "is a link" in out and target.read_text() == "theirs"


@pytest.mark.parametrize("linked", ["examples", "eval.json"])
def test_an_evaluation_does_not_write_through_a_link(linked, copy, tmp_path, capsys):
    """A record or a records folder of the run that is a link to elsewhere is refused, the target untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "theirs.json" if linked == "eval.json" else outside
    if linked == "eval.json":
        target.write_text("{}")
    shutil.rmtree(copy / linked, ignore_errors=True)
    (copy / linked).unlink(missing_ok=True)
    (copy / linked).symlink_to(target)
    before = snapshot(outside)
    code, out = run(["eval", copy, "--attacks", "fgsm", "--n-examples", "20", "--no-progress"], capsys)
    assert code == 2 and "is a link" in out and "does not write through links" in out, out
    assert snapshot(outside) == before


def test_appending_to_a_history_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / "theirs.jsonl"
    target.write_text("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sessions.jsonl").symlink_to(target)
    with pytest.raises(UsageError, match="is a link"):
        records.append_jsonl(tmp_path / "run" / "sessions.jsonl", {"start_epoch": 0})
    assert target.read_text() == ""


def test_the_lock_holder_leaves_temp_files_of_folders_it_does_not_own(copy, tmp_path, capsys):
    """A run directory nested in another run's folder is not the lock holder's: its in-flight writes stay."""
    nested = copy / "nested-run"
    shutil.copytree(copy, nested, ignore=shutil.ignore_patterns("nested-run"))
    in_flight = [nested / ".history.jsonl.x1.tmp", nested / "checkpoints" / ".last.pt.x2.tmp"]
    for path in in_flight:
        path.write_bytes(b"being written")
    run(["eval", copy, "--attacks", "natural", "--n-examples", "20", "--no-progress"], capsys)
    assert all(path.exists() for path in in_flight)


def test_an_evaluation_that_reuses_every_attack_keeps_their_provenance(copy, capsys):
    argv = ["eval", str(copy), "--attacks", "natural", "--n-examples", "20", "--no-progress"]
    assert main(argv) == 0
    ev = records.read_json(copy / records.EVAL)
    ev["provenance"]["hardware"]["cpu"] = "the machine that ran the attacks"
    records.write_json(copy / records.EVAL, ev)
    assert main(argv) == 0
    assert records.read_json(copy / records.EVAL)["provenance"]["hardware"]["cpu"] == "the machine that ran the attacks"


@pytest.mark.parametrize("command", ["train", "report"])
def test_a_refused_command_leaves_no_lock_and_no_folder(command, tmp_path, capsys):
    """A command refused after it took a folder's lock removes the lock file and the parents it made."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    before = snapshot(tmp_path)
    out = {"train": tmp_path / "mine", "report": tmp_path / "mine"}[command]
    argv = {"train": TRAIN + ["--out", out], "report": ["report", "--results", tmp_path, "--out", out]}[command]
    code, err = run(argv, capsys)
    assert code == 2 and "mine" in err, err
    assert snapshot(tmp_path) == before


def test_a_hand_edited_config_of_a_run_named_by_out_is_refused(copy, capsys):
    """A run named by `--out` (not by its hash) still knows the identity it trained with: an edited
    config.json is named as such, never evaluated or resumed as the run it claims to be."""
    config = json.loads((copy / "config.json").read_text())
    config["identity"]["eps"] = 0.1
    (copy / "config.json").write_text(json.dumps(config))
    for argv in (["eval", copy, "--attacks", "natural", "--n-examples", "20", "--no-progress"],
                 [*TRAIN, "--eps", "0.1", "--out", copy, "--resume"]):
        code, out = run(argv, capsys)
        assert code == 2 and "edited by hand" in out and "config.json" in out, out


def test_resume_without_a_checkpoint_says_it_starts_at_epoch_1(tmp_path, capsys):
    code, out = run([*TRAIN, "--out", tmp_path / "new", "--resume"], capsys)
    assert code == 0 and "holds no checkpoint" in out and "training starts at epoch 1" in out, out


def _damage(copy: Path, damage: str) -> None:
    if damage in ("no schedule", "no settings"):
        name, key = ("config.json", "identity") if damage == "no schedule" else ("eval.json", "attacks")
        record = json.loads((copy / name).read_text())
        if damage == "no schedule":
            del record["identity"]["schedule"]
        else:
            del record["attacks"]["natural"]["settings"]
        (copy / name).write_text(json.dumps(record))
    else:
        rows = (copy / "history.jsonl").read_text().splitlines()
        row = json.loads(rows[0])
        if damage == "no epoch":
            del row["epoch"]
        else:
            row["epoch"] = str(row["epoch"])
        (copy / "history.jsonl").write_text("\n".join([json.dumps(row), *rows[1:]]) + "\n")


@pytest.mark.parametrize("damage", ["no schedule", "no settings", "no epoch", "string epoch"])
def test_a_damaged_record_is_named_and_every_command_goes_on(damage, copy, tmp_path, capsys):
    """A record without what its readers index by (an identity's schedule, an attack's settings, a
    history row's epoch) is that run's named problem: never a traceback in eval, results or report."""
    assert main(["eval", str(copy), "--attacks", "natural", "--n-examples", "20", "--no-progress"]) == 0
    capsys.readouterr()
    _damage(copy, damage)
    with pytest.raises(CorruptRecord, match="corrupt record"):
        records.verify_run(copy)
    for argv in (["results", "--results", tmp_path], ["report", "--results", tmp_path, "--out", tmp_path / "rep"]):
        code, out = run(argv, capsys)
        assert code in (0, 2) and "Traceback" not in out, out
    code, out = run(["eval", copy, "--attacks", "natural", "--n-examples", "20", "--no-progress"], capsys)
    expected = (2, True) if damage in ("no schedule", "no settings") else (0, False)  # eval reads no history
    assert (code, "corrupt record" in out) == expected, out
