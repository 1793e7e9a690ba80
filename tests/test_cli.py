"""Every bad input named in the CLI's contract: exit status 2 and a message naming the bad value."""

import pytest

from cat_bench import records
from cat_bench.cli import main

TRAIN = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "1", "--n-train", "100",
         "--select-n", "20", "--no-progress"]


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    return code, capsys.readouterr().err


def with_option(flag, value):
    argv = list(TRAIN)
    argv[argv.index(flag) + 1] = value
    return argv


@pytest.mark.parametrize("flag,value,needle", [
    ("--method", "cat", "'cat'"), ("--dataset", "svhn", "svhn"), ("--eps", "0", "0"),
    ("--eps", "1.5", "1.5"), ("--eps", "-0.1", "-0.1"), ("--eps", "eight", "eight"), ("--eps", "8/0", "8/0"),
])
def test_bad_train_options_exit_2(flag, value, needle, capsys, tmp_path):
    code, err = run(with_option(flag, value) + ["--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert needle in err
    assert any(hint in err for hint in ("allowed", "(0, 1]", "e.g."))  # says what is allowed
    assert not (tmp_path / "r").exists()  # nothing half-written


@pytest.mark.parametrize("sets,needle", [
    (["gamma=1"], "gamma"), (["beta=abc"], "abc"), (["beta"], "KEY=VALUE"), (["pgd_loss=l2"], "l2"),
])
def test_bad_set_exits_2(sets, needle, capsys, tmp_path):
    argv = with_option("--method", "cat-cent") + ["--set", *sets, "--out", str(tmp_path / "r")]
    code, err = run(argv, capsys)
    assert code == 2 and needle in err
    assert not (tmp_path / "r").exists()


def test_unknown_architecture_and_list_target_exit_2(capsys, tmp_path):
    code, err = run(TRAIN + ["--arch", "vgg16", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "vgg16" in err and "smallcnn" in err
    code, err = run(["list", "models"], capsys)
    assert code == 2 and "models" in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def test_train_eval_and_list_work(trained, capsys):
    assert (trained / records.DONE).exists()
    assert main(["eval", str(trained), "--attacks", "natural,fgsm", "--n-examples", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "natural" in out and "fgsm" in out
    for what in ("methods", "datasets", "attacks", "architectures"):
        assert main(["list", what]) == 0
    listing = capsys.readouterr().out
    assert "cat-cent" in listing and "mnist-mini" in listing and "pgd100" in listing


def test_eval_bad_inputs_exit_2(trained, tmp_path, capsys):
    code, err = run(["eval", str(trained), "--attacks", "natural,pgd7"], capsys)
    assert code == 2 and "pgd7" in err and "pgd20" in err
    code, err = run(["eval", str(tmp_path), "--attacks", "natural"], capsys)
    assert code == 2 and str(tmp_path) in err
    code, err = run(["eval", str(trained), "--eps", "2"], capsys)
    assert code == 2 and "2" in err


def test_missing_and_corrupt_checkpoints_exit_2(trained, tmp_path, capsys):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / records.BEST).unlink()
    code, err = run(["eval", str(broken), "--attacks", "natural"], capsys)
    assert code == 2 and "missing checkpoint" in err and "best.pt" in err
    (broken / records.BEST).write_bytes(b"not a checkpoint")
    code, err = run(["eval", str(broken), "--attacks", "natural"], capsys)
    assert code == 2 and "corrupt checkpoint" in err
    (broken / records.DONE).unlink()
    (broken / records.LAST).write_bytes(b"\x00garbage")
    code, err = run(TRAIN + ["--out", str(broken), "--resume"], capsys)
    assert code == 2 and "corrupt checkpoint" in err and "last.pt" in err


def test_existing_run_without_resume_exits_2(trained, tmp_path, capsys):
    import shutil
    partial = tmp_path / "partial"
    shutil.copytree(trained, partial)
    (partial / records.DONE).unlink()
    code, err = run(TRAIN + ["--out", str(partial)], capsys)
    assert code == 2 and "--resume" in err
