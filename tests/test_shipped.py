"""Shipped models (cat_bench.shipped): `cat-bench export` of a real tiny CATcw run on mnist-mini, `cat-bench eval`
of the folder, refusals, and the check of every model folder committed under results/models/ (offline: on the
folder's own check examples)."""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cat_bench import external, records, shipped
from cat_bench.cli import _parser, main
from cat_bench.evaluate import evaluate
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "results" / "models"
TRAINED_WITH = "cat-bench train --method cat-cw --dataset mnist-mini --eps 0.3 --epochs 1 (the fixture's train())"


def assert_card_check(folder: Path, data_root=None) -> None:
    """A shipped model folder's weights are the card's (SHA-256), and natural and PGD-20 accuracy on the first
    500 test examples (the folder's own; the dataset's under `data_root`), measured here from the card's identity
    and the weights, are the numbers its card records."""
    card = shipped.read_card(folder)
    digest = shipped.sha256(folder / card["weights"]["file"])
    assert digest == card["weights"]["sha256"], f"{folder}: the weights' SHA-256 is not the card's"
    check = card["check"]
    assert check["key"]["n_examples"] == shipped.CHECK_N and set(check["attacks"]) == set(shipped.CHECK_ATTACKS)
    got = shipped.measure_folder(folder, card, list(shipped.CHECK_ATTACKS), n_examples=shipped.CHECK_N, eps=None,
                                 batch_size=check["batch_size"], device=torch.device("cpu"), data_root=data_root,
                                 progress=False)
    assert got["key"] == check["key"]
    for name in shipped.CHECK_ATTACKS:
        assert got["attacks"][name]["settings"] == check["attacks"][name]["settings"], name
        assert got["attacks"][name]["correct"] == check["attacks"][name]["correct"], name
        assert got["attacks"][name]["accuracy"] == check["attacks"][name]["accuracy"], name


def committed_models() -> list[Path]:
    return sorted(p for p in MODELS.iterdir() if shipped.is_model_folder(p)) if MODELS.is_dir() else []


@pytest.mark.parametrize("folder", committed_models(), ids=lambda p: p.name)
def test_committed_model_gives_its_card_numbers(folder):
    """Every committed model folder: its weights are the card's and give the card's check numbers on its own
    check examples (no dataset needed)."""
    assert_card_check(folder)


@pytest.mark.parametrize("folder", [p for p in committed_models()
                                    if shipped.read_card(p)["identity"]["dataset"] == "mnist"], ids=lambda p: p.name)
def test_committed_mnist_model_examples_are_the_first_test_digits(folder, mnist_root):
    """A committed MNIST model's check examples are MNIST's first 500 test digits, byte for byte."""
    assert_examples_are_the_datasets(folder, mnist_root)


def assert_examples_are_the_datasets(folder: Path, data_root) -> None:
    from cat_bench.data import load_split

    card = shipped.read_card(folder)
    x, y = load_split(card["identity"]["dataset"], "test", data_root)  # unpacks the root's .gz files, offline
    with np.load(folder / card["check"]["examples"]["file"], allow_pickle=False) as data:
        assert data["x"].dtype == np.uint8 and data["y"].dtype == np.int64
        assert np.array_equal(data["x"], x[:shipped.CHECK_N].numpy())
        assert np.array_equal(data["y"], y[:shipped.CHECK_N].numpy())


# ---------------------------------------------------------------------------------------------
# A real tiny run, exported


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """CATcw on 100 mnist-mini digits for one epoch, evaluated (natural, PGD-20) on its first 100 test digits."""
    config = resolve_config("cat-cw", "mnist-mini", 0.3, epochs=1, n_train=100, batch_size=50, select_n=20)
    out = tmp_path_factory.mktemp("ship") / records.run_name(config)
    train(config, out, Settings("cpu", progress=False), log=lambda m: None)
    evaluate(out, "natural,pgd20", n_examples=100, progress=False, log=lambda m: None, device=torch.device("cpu"))
    return out


@pytest.fixture(scope="module")
def model(run):
    folder = run.parent / "models" / "tiny-cw"
    assert main(["export", str(run), "--name", "tiny-cw", "--out", str(folder), "--device", "cpu", "--no-progress",
                 "--trained-with", TRAINED_WITH]) == 0
    return folder


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir()
    for p in folder.iterdir():
        (to / p.name).write_bytes(p.read_bytes())
    return to


def _snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_export_writes_weights_sha256_and_card(run, model):
    assert sorted(p.name for p in model.iterdir()) == ["README.md", "card.json", "check-examples.npz", "weights.pt",
                                                       "weights.pt.sha256"]
    weights = torch.load(model / "weights.pt", weights_only=True)
    best = records.load_checkpoint(run / records.BEST)
    assert set(weights) == {"f", "g"}
    for net in ("f", "g"):
        assert weights[net].keys() == best["nets"][net].keys()
        assert all(torch.equal(weights[net][k], best["nets"][net][k]) for k in weights[net])
    digest = hashlib.sha256((model / "weights.pt").read_bytes()).hexdigest()
    assert (model / "weights.pt.sha256").read_text() == f"{digest}  weights.pt\n"

    card = json.loads((model / "card.json").read_text())
    assert card["weights"]["sha256"] == digest and card["weights"]["epoch"] == best["epoch"]
    assert card["identity"] == records.read_identity(run) and card["run"] == run.name
    assert card["sources"] == records.read_json(run / records.CONFIG)["sources"]
    assert card["evaluation"] == records.read_json(run / records.EVAL)
    assert card["training"]["sessions"] == records.read_jsonl(run / records.SESSIONS)
    history = records.read_jsonl(run / records.HISTORY)
    assert card["training"]["wall_seconds"] == pytest.approx(sum(h["seconds"] for h in history))
    assert card["training"]["provenance"] == records.read_json(run / records.CONFIG)["provenance"]
    assert card["training"]["trained_with"] == TRAINED_WITH
    assert card["check"]["key"] == {"n_examples": 500, "eps": 0.3}
    examples = card["check"]["examples"]
    assert examples["sha256"] == hashlib.sha256((model / examples["file"]).read_bytes()).hexdigest()
    assert_examples_are_the_datasets(model, None)
    assert card["check"]["attacks"]["pgd20"]["settings"]["clip"] is False  # the paper protocol: CAT's MNIST code
    readme = (model / "README.md").read_text()
    assert digest in readme and card["training"]["command"] in readme and "## Identity" in readme
    hardware = card["training"]["provenance"]["hardware"]
    assert f"{hardware['threads']} threads, kernels {hardware['kernels']};" in readme  # what a repeat must match


def test_the_card_counts_only_the_sessions_since_the_last_start_from_scratch(run, model, tmp_path):
    """Sessions before the run started again from epoch 0 (a killed first start, lost checkpoints) trained
    nothing the weights hold: the card lists the sessions from the last start, and says how many came before."""
    copy = Path(shutil.copytree(run, tmp_path / run.name))
    sessions = records.read_jsonl(run / records.SESSIONS)
    (copy / records.SESSIONS).write_text("".join(json.dumps(s) + "\n" for s in (
        {"pid": 1, "start_epoch": 0, "started": 1.0}, {"pid": 2, "start_epoch": 1, "started": 2.0}, *sessions)))
    ckpt = records.load_checkpoint(copy / records.BEST)
    card = shipped.model_card(copy, "tiny-cw", ckpt, "0" * 64, 1)
    assert card["training"]["sessions"] == sessions and card["training"]["sessions_before_restart"] == 2
    assert card["training"]["started"] == shipped._utc(sessions[0]["started"])
    card["check"] = json.loads((model / "card.json").read_text())["check"]
    assert "1 training session(s)" in shipped.readme(card) and "; 2 earlier session(s)" in shipped.readme(card)


def test_the_readme_lists_attacks_in_the_papers_column_order(model):
    """eval.json keeps its attacks by name (pgd100 before pgd20); the card for people shows Table 1's order."""
    card = json.loads((model / "card.json").read_text())
    attacks = card["evaluation"]["attacks"]
    card["evaluation"]["attacks"] = {name: attacks["pgd20"] for name in ("natural", "pgd100", "pgd20", "my-attack")}
    evaluation = shipped.readme(card).split("## Evaluation")[1].split("Attacks as")[0]
    rows = [line.split(" | ")[0].lstrip("| ") for line in evaluation.splitlines() if line.startswith("| ")][1:]
    assert rows == ["natural", "pgd20", "pgd100", "my-attack"]

def test_the_cards_command_trains_the_same_run(run, model):
    """card.json's `cat-bench train` command, parsed by the CLI, resolves to the run's config hash."""
    command = json.loads((model / "card.json").read_text())["training"]["command"]
    args = _parser().parse_args(shlex.split(command)[1:])
    from cat_bench.cli import parse_sets
    from cat_bench.presets import parse_eps

    config = resolve_config(args.method, args.dataset, parse_eps(args.eps), arch=args.arch, epochs=args.epochs,
                            seed=args.seed, overrides=parse_sets(args.set), select_on=args.select_on,
                            select_n=args.select_n, batch_size=args.batch_size, n_train=args.n_train,
                            protocol=args.protocol, schedule=args.schedule, precision=args.precision)
    assert records.run_name(config) == run.name
    assert "--epochs 1" in command and "--n-train 100" in command and "--set" not in command


def test_eval_of_the_folder_prints_the_cards_numbers_and_keeps_them_in_the_results(run, model, tmp_path, capsys):
    """The folder is left as it is; the evaluation goes to RESULTS/external with per-example records, under the
    card's protocol and seed, so `compare` can pair it with the run it was exported from."""
    before = _snapshot(model)
    results = tmp_path / "results"
    code, _, err = run_cli(["compare", run, model, "--results", results], capsys)
    assert code == 2 and "not yet evaluated" in err and f"cat-bench eval {model} --results {results}" in err, err
    code, out, err = run_cli(["eval", model, "--attacks", "natural,pgd20", "--n-examples", 100, "--device", "cpu",
                              "--no-progress", "--results", results], capsys)
    assert code == 0, err
    assert "SHA-256 verified" in err
    evaluation = records.read_json(run / records.EVAL)["attacks"]
    for name in ("natural", "pgd20"):
        acc = 100 * evaluation[name]["accuracy"]
        assert f"{name:<7}  {acc:6.2f}%  card {acc:6.2f}%  same" in out
    assert "(check-examples.npz (the model folder's))" in out
    assert _snapshot(model) == before
    [kept] = external.external_runs(results)
    card = shipped.read_card(model)
    assert external.folder_run(results, card) == kept and f"record: {kept / records.EVAL}" in out
    identity = records.read_identity(kept)
    assert identity["protocol"] == card["identity"]["protocol"] and identity["seed"] == card["identity"]["seed"]
    assert identity["external"]["kind"] == "model-folder" and identity["external"]["label"] == card["name"]
    stored = records.read_json(kept / records.EVAL)["attacks"]
    assert {name: stored[name]["accuracy"] for name in stored} == {n: evaluation[n]["accuracy"] for n in stored}
    code, out, err = run_cli(["compare", run, model, "--results", results, "--n-boot", 100], capsys)
    assert code == 0 and "pgd20" in out, err


def test_eval_record_adds_the_evaluation_to_the_card(run, model, tmp_path, capsys, monkeypatch):
    """`--record` keeps the evaluation in card.json (with the examples each attack got wrong) and README.md,
    merges a second one of the same examples, and leaves the weights and the export's numbers alone."""
    folder = _copy(model, tmp_path / "folder")
    before = shipped.read_card(folder)
    argv = ["eval", folder, "--n-examples", 100, "--device", "cpu", "--no-progress", "--record",
            "--results", tmp_path / "results"]
    assert run_cli([*argv, "--attacks", "natural,pgd20"], capsys)[0] == 0
    assert run_cli([*argv, "--attacks", "fgsm"], capsys)[0] == 0
    card = shipped.read_card(folder)
    kept = (shipped.EVALUATIONS, shipped.CONTENT_KEY)  # the card's own hash follows its new content
    assert {k: v for k, v in card.items() if k not in kept} == {k: v for k, v in before.items() if k not in kept}
    [entry] = card[shipped.EVALUATIONS]
    assert entry["key"] == {"n_examples": 100, "eps": 0.3} and set(entry["attacks"]) == {"natural", "pgd20", "fgsm"}
    for name, a in entry["attacks"].items():
        assert a["correct"] == 100 - len(a["wrong"]) and a["accuracy"] == a["correct"] / 100, name
    evaluation = records.read_json(run / records.EVAL)["attacks"]  # the run's own evaluation, same 100 digits
    assert entry["attacks"]["pgd20"]["accuracy"] == evaluation["pgd20"]["accuracy"]
    assert entry["command"].endswith("--attacks fgsm --n-examples 100 --record") and entry["flags"] == []
    text = (folder / "README.md").read_text()
    assert "### Beyond the paper: the first 100 test examples" in text and "| fgsm |" in text
    assert text == shipped.readme(card)
    code, out, err = run_cli(["eval", folder, "--attacks", "fgsm", "--n-examples", 100, "--no-progress",
                              "--results", tmp_path / "results"], capsys)
    assert code == 0 and "card" in out and "same" in out and "fgsm: " in err and "already evaluated" in err, err


def test_recorded_autoattack_is_compared_with_pgd100_on_the_same_examples(run, model, tmp_path):
    """AutoAttack beside PGD-100: the README counts the examples each breaks that the other leaves, and the
    report's Table 1 column reads the card (before the evaluation: "not measured", with its command)."""
    from cat_bench.report.tables import attack_checks

    folder = _copy(model, tmp_path / "folder")
    card = shipped.read_card(folder)
    identities = {run.name: records.read_identity(run)}
    [before] = attack_checks([run.name], [0], identities, tmp_path)
    assert before.verdict == "not measured" and before.command.endswith("--attacks pgd100,autoattack "
                                                                        "--n-examples 1000 --record")
    settings = {"clip": False}
    result = {"key": {"n_examples": 10, "eps": 0.3}, "examples": "x", "attacks": {
        "pgd100": {"accuracy": 0.7, "correct": 7, "settings": settings, "seconds": 1.0, "wrong": [0, 1, 2]},
        "autoattack": {"accuracy": 0.4, "correct": 4, "settings": {"clip": True}, "seconds": 9.0,
                       "wrong": [1, 2, 3, 4, 5, 6]}}}
    entry = shipped.record_evaluation(folder, card, result, device=torch.device("cpu"), batch_size=10, command="c")
    assert [f["flag"] for f in entry["flags"]] == ["PGD overstates robustness"]
    assert shipped.attack_disagreement(entry, "autoattack", "pgd100") == (4, 1)
    text = (folder / "README.md").read_text()
    assert "it breaks 4 examples that PGD-100 leaves, and PGD-100 breaks 1 that it leaves" in text
    assert "PGD overstates robustness" in text
    [check] = attack_checks([run.name], [0], identities, tmp_path)
    assert (check.verdict, check.n, check.autoattack, check.pgd100) == ("PGD overstates robustness", 10, 40.0, 70.0)
    assert (check.only_autoattack, check.only_pgd100, check.model) == (4, 1, "folder")


def test_record_is_refused_for_a_run_directory(run, capsys):
    files = lambda: {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}  # noqa: E731
    before = files()
    code, out, err = run_cli(["eval", run, "--attacks", "natural", "--record"], capsys)
    assert code == 2 and "--record is for model folders" in err and files() == before


def test_the_folder_gives_its_check_numbers(model):
    assert_card_check(model)


def test_the_dataset_gives_the_same_check_numbers(model, tmp_path, capsys):
    """--data-root reads the dataset's test split instead of the folder's examples: the same numbers."""
    assert_card_check(model, data_root="unused-by-mnist-mini")
    code, out, err = run_cli(["eval", model, "--attacks", "natural", "--n-examples", 500, "--no-progress",
                              "--data-root", "unused-by-mnist-mini", "--results", tmp_path], capsys)
    assert code == 0 and "(mnist-mini's test split)" in out and "same" in out, err


def test_tampered_examples_exit_2(model, tmp_path, capsys):
    bad = _copy(model, tmp_path / "bad")
    with np.load(bad / "check-examples.npz", allow_pickle=False) as data:
        x, y = data["x"].copy(), data["y"].copy()
    x[0, 0, 0, 0] ^= 1
    np.savez_compressed(bad / "check-examples.npz", x=x, y=y)
    code, out, err = run_cli(["eval", bad, "--attacks", "natural", "--n-examples", 10], capsys)
    assert code == 2 and "check-examples.npz has SHA-256" in err and out == ""


def test_tampered_weights_exit_2_before_evaluating(model, tmp_path, capsys):
    bad = _copy(model, tmp_path / "bad")
    data = bytearray((bad / "weights.pt").read_bytes())
    data[-200] ^= 1
    (bad / "weights.pt").write_bytes(bytes(data))
    code, out, err = run_cli(["eval", bad, "--attacks", "natural", "--n-examples", 10], capsys)
    assert code == 2 and "has SHA-256" in err and "the card records" in err and out == ""
    with pytest.raises(AssertionError):
        assert_card_check(bad)


def test_figure2_draws_from_the_model_folder_when_the_checkpoint_is_not_on_disk(run, model, tmp_path):
    """Checkpoints are not committed, model folders are: a copy of the run without its checkpoints draws the
    report's Figure 2 from the folder exported from its configuration, with the folder's weights; another
    configuration finds no folder, and a folder whose weights are not the card's is refused."""
    from cat_bench.errors import UsageError
    from cat_bench.report.figures import figure2, figure2_networks
    from cat_bench.report.runs import RunRecord
    from cat_bench.suite import RunSpec

    bare = tmp_path / run.name
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("checkpoints"))
    identity = records.read_identity(bare)
    rec = RunRecord(RunSpec(identity, ("natural",), 100, ("Figure 2",)), bare, "done", identity=identity,
                    provenance={}, done=records.read_json(bare / records.DONE),
                    evaluation=records.read_json(bare / records.EVAL))
    name, text = figure2([rec], tmp_path / "figure2.png", models=model.parent)
    assert name == run.name and str(model) in text and (tmp_path / "figure2.png").is_file()

    nets, source = figure2_networks(bare / records.BEST, run.name, identity, model.parent, "cpu")
    weights = torch.load(model / "weights.pt", weights_only=True)
    assert all(torch.equal(v, weights["g"][k]) for k, v in nets.extra["g"].state_dict().items())
    assert f"the shipped model {model}, epoch {shipped.read_card(model)['weights']['epoch']}" in source
    assert figure2_networks(bare / records.BEST, run.name, {**identity, "seed": 1}, model.parent, "cpu") is None
    assert figure2([rec], tmp_path / "none.png", models=tmp_path / "no-models")[0] is None

    models = tmp_path / "models"
    models.mkdir()
    bad = _copy(model, models / model.name)
    state = torch.load(bad / "weights.pt", weights_only=True)
    state["g"] = {k: v + 1 for k, v in state["g"].items()}
    torch.save(state, bad / "weights.pt")
    with pytest.raises(UsageError, match="not the exported ones"):
        figure2_networks(bare / records.BEST, run.name, identity, models, "cpu")


def test_export_refusals_exit_2_and_write_nothing(run, model, tmp_path, capsys):
    out = tmp_path / "m"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in (records.CONFIG, records.HISTORY):
        (unfinished / name).write_bytes((run / name).read_bytes())
    unevaluated = tmp_path / "unevaluated"
    unevaluated.mkdir()
    for name in (records.CONFIG, records.HISTORY, records.DONE):
        (unevaluated / name).write_bytes((run / name).read_bytes())
    cases = [([run, "--name", "bad name"], "is not a folder name"),
             ([run, "--name", "x", "--out", model], "already exists"),
             ([tmp_path / "nothing", "--name", "x", "--out", out], "not a run directory"),
             ([unfinished, "--name", "x", "--out", out], "has not finished training"),
             ([unevaluated, "--name", "x", "--out", out], "is not evaluated")]
    for argv, needle in cases:
        code, _, err = run_cli(["export", *argv], capsys)
        assert code == 2 and needle in err, (argv, err)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_warns_when_git_would_not_commit_the_weights(run, tmp_path, capsys):
    """An export into a git work tree that ignores *.pt says so, naming the file: a model's weights exist nowhere
    else."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("*.pt\n")
    code, _, err = run_cli(["export", run, "--name", "m", "--out", tmp_path / "models" / "m", "--device", "cpu",
                            "--no-progress"], capsys)
    assert code == 0 and "warning: git ignores weights.pt in" in err


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_this_repository_commits_every_file_of_a_model_folder():
    """.gitignore ignores checkpoints (*.pt) but no file of a folder under results/models/."""
    assert shipped.git_ignored(MODELS / "any-model") == []
    assert shipped.git_ignored(REPO / "results" / "fidelity" / "runs" / "r", ("checkpoints/best.pt",)) == ["best.pt"]


def test_mnist_mini_test_digits_are_not_the_first_of_mnist():
    """Why a model folder ships its own check examples, and a check on more of them reads the MNIST test file:
    mnist-mini's test digits are a class-balanced draw from MNIST's test set, not its first 500 (the shipped
    asset's own index says so)."""
    from importlib import resources

    with resources.as_file(resources.files("cat_bench") / "assets" / "mnist_mini.npz") as path, np.load(path) as npz:
        index = npz["test_index"]
    assert len(index) == 2000 and not np.array_equal(index[:500], np.arange(500))
    assert np.isin(np.arange(500), index).sum() < 500


def test_export_removes_the_build_folders_of_killed_exports_and_only_those(run, tmp_path):
    """A killed export leaves its hidden build folder; the next export of that name removes it (its
    process is gone), never one whose process still runs, and git ignores both."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    killed = tmp_path / f".again.{host}-{gone}.k1ll3d.tmp"
    running = tmp_path / f".again.{host}-{os.getpid()}.running.tmp"
    for folder in (killed, running):
        folder.mkdir()
        (folder / "weights.pt").write_bytes(b"half")
    assert main(["export", str(run), "--name", "again", "--out", str(tmp_path / "again"), "--device", "cpu",
                 "--no-progress", "--trained-with", TRAINED_WITH]) == 0
    assert not killed.exists() and running.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["again", running.name])
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "results/models/.x.h-1.abc.tmp/weights.pt"],
                             cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert ignored.returncode == 0


@pytest.mark.parametrize("edit", ["summary", "method", "evaluation", "weights-outside"])
def test_an_edited_card_is_refused_not_verified(edit, model, tmp_path, capsys):
    """A card edited after export (its numbers, its method, its summary) or pointing at weights outside
    its folder is refused; it never prints "SHA-256 verified" and "same"."""
    folder = _copy(model, tmp_path / "edited")
    card = json.loads((folder / "card.json").read_text())
    if edit == "summary":
        card["summary"] = "the best model ever"
    elif edit == "method":
        card["identity"]["method"] = "trades"
    elif edit == "evaluation":
        card["evaluation"]["attacks"]["pgd20"]["accuracy"] = 0.99
    else:
        (tmp_path / "outside.pt").write_bytes((folder / "weights.pt").read_bytes())
        card["weights"]["file"] = "../outside.pt"
        card[shipped.CONTENT_KEY] = shipped._content_sha256(card)  # even with the card's hash made to match
    (folder / "card.json").write_text(json.dumps(card))
    code, out, err = run_cli(["eval", folder, "--attacks", "natural", "--n-examples", "20", "--device", "cpu",
                              "--no-progress"], capsys)
    assert code == 2 and "verified" not in out + err and "same" not in out, out + err
    assert ("edited after" in err) if edit != "weights-outside" else ("'../outside.pt'" in err), err


def test_a_damaged_card_does_not_hide_the_other_model_folders(run, model, tmp_path):
    """Figure 2 and Table 1 look models up by run: one unreadable card leaves the others found."""
    models = tmp_path / "models"
    _copy(model, models.mkdir() or models / "good")
    (models / "broken").mkdir()
    (models / "broken" / "card.json").write_text('{"format": "cat-bench model car')
    found = shipped.exported_from(run.name, records.read_identity(run), models)
    assert [folder.name for folder, _ in found] == ["good"]
    said = []
    shipped.readable_cards(models, log=said.append)
    assert len(said) == 1 and "broken" in said[0] and "corrupt record" in said[0]


def test_an_export_to_a_full_disk_ends_with_a_message_and_no_folder(run, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):  # torch's zip writer on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 114304 vs 114256")

    monkeypatch.setattr(records.torch, "save", full)
    code, out, err = run_cli(["export", run, "--name", "full", "--out", tmp_path / "full", "--device", "cpu",
                              "--no-progress", "--trained-with", TRAINED_WITH], capsys)
    assert code == 1 and "disk full" in err and "weights.pt" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_an_autoattack_state_that_is_not_one_is_named(run, tmp_path, capsys):
    """A damaged AutoAttack state (a list where the flags were) is that record's problem, named, not a traceback."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "eval_state").mkdir(exist_ok=True)
    torch.save([1, 2, 3], copy / "eval_state" / "autoattack.pt")
    code, out, err = run_cli(["eval", copy, "--attacks", "autoattack", "--n-examples", "10", "--device", "cpu",
                              "--no-progress"], capsys)
    assert code == 2 and "not an AutoAttack state" in err and "autoattack.pt" in err, err
