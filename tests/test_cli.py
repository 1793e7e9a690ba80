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
    ("--method", "cat", "'cat'"), ("--dataset", "svhn", "svhn"), ("--eps", "0", "eps 0.0 is outside (0, 1]"),
    ("--eps", "1.5", "eps 1.5 is outside (0, 1]"), ("--eps", "-0.1", "eps -0.1 is outside (0, 1]"),
    ("--eps", "eight", "eps 'eight' is not a number"), ("--eps", "8/0", "eps '8/0' is not a number"),
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
    assert code == 2 and "eps 2.0 is outside (0, 1]" in err


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


@pytest.mark.parametrize("suite,only,needle", [
    ("smoke", ["method=catt"], "method = at, cat-cent, cat-cw, fat, mart, natural, trades"),
    ("smoke", ["eps=0.2"], "eps = 0.1"),
    ("smoke", ["method=at", "ablation=A1"], "--only 'ablation=A1' matches none of the suite's 7 runs; its runs have "
                                            "ablation = none"),
    ("mnist-fidelity", ["loss_reduction=sum"], "(none: no run has this hyperparameter)"),
    ("smoke", ["method=at", "beta=6"], "--only method=at beta=6 matches none of the suite's 7 runs (each filter"),
])
@pytest.mark.parametrize("command", [["run", "--dry-run"], ["run"], ["status"], ["results"]])
def test_suite_filter_matching_nothing_exits_2(command, suite, only, needle, capsys, tmp_path):
    """a filter that keeps no run is refused, naming it and the values the runs have."""
    code, err = run([*command, "--suite", suite, "--results", str(tmp_path / "res"), "--only", *only], capsys)
    assert code == 2
    assert needle in err
    assert not (tmp_path / "res").exists()


def test_train_with_missing_data_writes_nothing(capsys, tmp_path, monkeypatch):
    """no run directory and no empty dataset folders when the data cannot be had."""
    from urllib.error import URLError

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    argv = with_option("--dataset", "mnist") + ["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "r")]
    code, err = run(argv, capsys)
    assert code == 2 and "dataset mnist" in err and "--data-root" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "data").exists()


def test_report_defaults_to_the_results_directory(capsys, tmp_path, monkeypatch):
    """`cat-bench report` without --out writes beside the records, never into ./reports."""
    import shutil
    from pathlib import Path

    results = tmp_path / "my-results"
    shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "smoke", results)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--suite", "smoke", "--results", str(results)]) == 0
    assert str(results / "reports" / "smoke" / "index.html") in capsys.readouterr().out
    assert (results / "reports" / "smoke" / "index.html").is_file()
    assert not (tmp_path / "reports").exists()


def test_results_is_concise_and_says_what_is_missing(capsys, tmp_path):
    """the default table has no nan columns; runs not in it are counted; --wide has every column."""
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "results" / "smoke" / "runs"
    runs = sorted(src.iterdir())
    for run_dir in runs[:2]:
        shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name)
    (tmp_path / "runs" / runs[2].name).mkdir()  # a run that started and has nothing yet
    assert main(["results", "--suite", "smoke", "--results", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split("|")[1:-1] == [" method   ", "   seeds ", " natural   ", " fgsm   ", " pgd20   ",
                                                    " avg   ", " worst-case   ", "   mask flags "]
    assert "nan" not in out and len(out.splitlines()) == 2 + 2
    assert "not in the table: 1 partial, 0 failed, 4 not started, of 7 runs" in err
    assert main(["results", "--suite", "smoke", "--results", str(tmp_path), "--wide"]) == 0
    assert "hp.beta" in capsys.readouterr().out


def test_status_shows_epochs_and_eta_and_distinguishing_hparams(capsys):
    """status has epochs done/total, an ETA for partial runs only, the hparams that differ."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results" / "fidelity"
    assert main(["status", "--suite", "mnist-fidelity", "--results", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0].split(), [line.split() for line in lines[1:-1]]
    assert header[-3:] == ["labels", "epochs", "eta"] and "hparams" in header
    assert {row[header.index("hparams")] for row in rows} == {
        "g_kl_reduction=batchmean", "g_kl_reduction=sum"}
    states = set()
    for row in rows:
        state, epochs = row[1], next(t for t in row if t.count("/") == 1 and "=" not in t)
        done, total = map(int, epochs.split("/"))
        assert total == 40 and 0 <= done <= total
        if state == "partial":  # an ETA such as "18.7 h"
            assert done >= 1 and row[-1] == "h" and float(row[-2]) > 0
        else:
            assert row[-1] == "-" and done == (total if state == "done" else 0)
        states.add(state)
    assert {"done", "partial"} <= states


def test_every_command_and_flag_has_help(capsys):
    """top-level --help lists every command; every option of every command has help text."""
    from cat_bench.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    top = parser.format_help()
    for name, command in sub.choices.items():
        assert name in top
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_a_different_run_in_out_names_the_keys_that_differ(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([*TRAIN, "--out", str(out), "--stop-after-epoch", "1"]) == 0
    code, err = run([*with_option("--eps", "0.2"), "--out", str(out), "--resume"], capsys)
    assert code == 2 and "holds a different" in err
    assert "eps: 0.3 there vs 0.2 asked" in err and "train_attack.eps: 0.3 there vs 0.2 asked" in err
    assert "seed" not in err  # only the keys that differ


def test_eval_uses_the_data_root_the_run_trained_with(tmp_path):
    from cat_bench.evaluate import trained_data_root

    out = tmp_path / "r"
    assert main([*TRAIN, "--out", str(out), "--data-root", str(tmp_path / "data")]) == 0
    recorded = records.read_json(out / records.CONFIG)["data_root"]
    assert recorded == str((tmp_path / "data").resolve())
    (tmp_path / "data").mkdir(exist_ok=True)
    assert trained_data_root(out) == recorded
    assert trained_data_root(out, tmp_path / "other") == tmp_path / "other"  # the one given wins
    (tmp_path / "data").rmdir()
    assert trained_data_root(out) is None  # gone: the default roots


@pytest.mark.parametrize("command,hint", [("eval", "finish evaluating: finished attacks are kept"),
                                          ("train", "with --resume"), ("run", "finished runs are skipped")])
def test_an_interrupted_command_says_how_to_continue_it(command, hint, monkeypatch, capsys, tmp_path):
    import cat_bench.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"_{command}", interrupted)
    argv = {"eval": ["eval", str(tmp_path)], "train": TRAIN, "run": ["run", "--suite", "smoke"]}[command]
    code, err = run(argv, capsys)
    assert code == 130 and hint in err
    assert command == "train" or "--resume" not in err


@pytest.mark.parametrize("text,line", [('description = "x"\n[[runs]]\nmethods = ["at"\n', "line 3, the last"),
                                       ('description = "x"\n[[runs]]\nmethods = = 1\neps = [0.3]\n', "line 3")])
def test_a_toml_syntax_error_names_its_line(text, line, tmp_path, capsys):
    suite = tmp_path / "broken.toml"
    suite.write_text(text)
    code, err = run(["status", "--suite", str(suite)], capsys)
    assert code == 2 and "not a valid TOML file" in err and line in err


@pytest.mark.parametrize("argv", [
    ["train", "--method", "at", "--dataset", "mnist", "--arch", "preact-resnet18", "--eps", "0.3"],
    ["run", "--suite", "mnist"],
])
def test_a_cpu_plan_of_days_asks_for_yes_or_a_budget(argv, tmp_path, capsys):
    """New CPU training the cost model puts over a day starts only with --yes or a budget, and says so."""
    where = ["--out", tmp_path / "run"] if argv[0] == "train" else ["--results", tmp_path / "results"]
    code = main([*map(str, argv + where), "--device", "cpu", "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "hours on this CPU" in err and "--yes" in err and "--stop-after-minutes" in err, err
    assert sorted(tmp_path.iterdir()) == []
