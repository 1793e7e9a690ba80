"""External models (cat_bench.external): a trained run's classifier given as a state dict, a torch.export
program, a TorchScript file and a module:function entry point evaluates to exactly that run's numbers in
an external run directory of its own (external.json with the SHA-256), which `cat-bench results` and the
report list beside trained runs; RobustBench models load from a local model directory (a locally
registered entry, never a download); bad sources and options exit 2 naming what is allowed.

The run: natural, mnist-mini, valid protocol (inputs clipped to [0,1], as external evaluation does),
1 epoch on 500 images, evaluated with natural, FGSM and PGD-20 at eps 0.1 on 100 test digits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from cat_bench import per_example, records
from cat_bench.cli import main
from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.evaluate import evaluate
from cat_bench.external import INFO, evaluate_external
from cat_bench.models import build_classifier
from cat_bench.settings import Settings
from cat_bench.shipped import sha256
from cat_bench.config import resolve_config
from cat_bench.train import train

CPU = torch.device("cpu")
ATTACKS = "natural,fgsm,pgd20"
N = 100
EPS = 0.1  # below the test eps 0.3, so that FGSM and PGD-20 leave something to compare
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, its eval.json, its classifier f in eval mode, a file with f's state dict)."""
    base = tmp_path_factory.mktemp("external")
    run = base / "run"
    config = resolve_config("natural", "mnist-mini", 0.3, epochs=1, n_train=500, select_n=100, batch_size=10,
                            protocol="valid")
    train(config, run, Settings("cpu", progress=False), log=lambda m: None)
    result = evaluate(run, ATTACKS, n_examples=N, eps=EPS, device=CPU, progress=False, log=lambda m: None)
    state = records.load_checkpoint(run / records.BEST)["nets"]["f"]
    info = dataset_info("mnist-mini")
    f = build_classifier(config["arch"], info.num_classes, info.shape[0])
    f.load_state_dict(state)
    torch.save(state, base / "f.pt")
    return run, result, f.eval(), base / "f.pt", config["arch"]


def same_numbers(result, run_result):
    assert set(result["attacks"]) == set(run_result["attacks"])
    for name, entry in run_result["attacks"].items():
        assert result["attacks"][name]["accuracy"] == entry["accuracy"], name
    assert result["worst-case"]["accuracy"] == run_result["worst-case"]["accuracy"]


def cli_eval(source, results, *extra):
    return main(["eval", str(source), "--attacks", ATTACKS, "--n-examples", str(N), "--results", str(results),
                 "--eps", str(EPS), "--device", "cpu", "--no-progress", *extra])


def external_dirs(results):
    return sorted(p for p in (results / "external").iterdir() if p.is_dir())  # not the lock files beside them


def test_state_dict_of_a_trained_run_gives_exactly_its_numbers(trained, tmp_path, capsys):
    run, run_result, _, weights, arch = trained
    assert cli_eval(weights, tmp_path, "--arch", arch, "--dataset", "mnist-mini") == 0
    (ext,) = external_dirs(tmp_path)
    info = json.loads((ext / INFO).read_text())
    assert info["kind"] == "state-dict" and info["sha256"] == sha256(weights) and "torch.load" in info["how"]
    result = json.loads((ext / records.EVAL).read_text())
    same_numbers(result, run_result)
    for name, entry in run_result["attacks"].items():  # example by example, too
        assert (per_example.read(ext / result["attacks"][name]["examples"])[1]
                == per_example.read(run / entry["examples"])[1]).all()
    assert [c["status"] for c in result["checks"]] == ["passed"] * 5
    assert "worst-case" in capsys.readouterr().out


def entry_point(folder, monkeypatch, module, arch, weights) -> str:
    """A `module:function` in `folder` (importable, the working directory) returning `arch` with the
    weights it loads from the file `weights` each time it is called."""
    (folder / f"{module}.py").write_text(
        "import torch\nfrom cat_bench.models import build_classifier\n\n"
        f"def model():\n    f = build_classifier({arch!r}, 10, 1)\n"
        f"    f.load_state_dict(torch.load({str(weights)!r}, weights_only=True))\n    return f\n")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    return f"{module}:model"


def test_torch_export_torchscript_and_entry_point_give_the_same_numbers(trained, tmp_path, monkeypatch):
    _, run_result, f, weights, arch = trained
    x = torch.rand(2, 1, 28, 28)
    torch.export.save(torch.export.export(f, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      tmp_path / "f.pt2")
    sources = {"torch-export": tmp_path / "f.pt2"}
    try:
        torch.jit.save(torch.jit.trace(f, x), tmp_path / "f_scripted.pt")
        sources["torchscript"] = tmp_path / "f_scripted.pt"
    except Exception as err:  # a torch without TorchScript
        pytest.skip(f"torch.jit cannot save here: {err}")
    sources["entry-point"] = entry_point(tmp_path, monkeypatch, "my_models", arch, weights)
    for kind, source in sources.items():
        results = tmp_path / f"results-{kind}"
        run_dir, result = evaluate_external(str(source), ATTACKS, dataset="mnist-mini", results=results,
                                            n_examples=N, eps=EPS, device=CPU, progress=False, log=lambda m: None)
        assert json.loads((run_dir / INFO).read_text())["kind"] == kind
        same_numbers(result, run_result)


class _Payload:
    """A pickle that writes a file when it is loaded without restriction."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "ran"))


def test_a_pt2_archive_whose_pickle_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
    import zipfile

    good = tmp_path / "good.pt2"
    f = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    torch.export.save(torch.export.export(f, (torch.zeros(2, 1, 28, 28),)), good)
    target = tmp_path / "pwned.txt"
    payload = tmp_path / "payload.pt"
    torch.save(_Payload(target), payload)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for member in src.infolist():
            data = src.read(member)
            dst.writestr(member, payload.read_bytes() if member.filename.endswith("sample_inputs/model.pt") else data)
    code = main(["eval", str(bad), "--dataset", "mnist-mini", "--attacks", "natural", "--n-examples", "10",
                 "--results", str(tmp_path / "results"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "sample_inputs/model.pt" in err and "not plain data" in err
    assert not target.exists()


def test_evaluating_again_reuses_the_directory_and_a_changed_file_gets_another(trained, tmp_path):
    _, _, _, weights, arch = trained
    logs = []
    options = dict(arch=arch, dataset="mnist-mini", results=tmp_path, n_examples=N, device=CPU, progress=False)
    first, _ = evaluate_external(str(weights), "natural", log=lambda m: None, **options)
    again, _ = evaluate_external(str(weights), "natural", log=logs.append, **options)
    assert first == again and any("already evaluated" in m for m in logs)
    changed = tmp_path / "changed.pt"
    state = torch.load(weights, weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, changed)
    other, _ = evaluate_external(str(changed), "natural", log=lambda m: None, **options)
    assert other != first and len(external_dirs(tmp_path)) == 2


def test_new_weights_behind_an_entry_point_are_a_new_evaluation(trained, tmp_path, monkeypatch):
    """The module's source is unchanged, the weights it loads are not: the numbers are the new weights'."""
    _, _, _, weights, arch = trained
    mine = tmp_path / "mine.pt"
    shutil.copy(weights, mine)
    source = entry_point(tmp_path, monkeypatch, "loads_weights", arch, mine)
    options = dict(dataset="mnist-mini", results=tmp_path / "r", n_examples=N, device=CPU, progress=False)
    first_dir, first = evaluate_external(source, "natural", log=lambda m: None, **options)
    state = torch.load(weights, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, mine)  # a constant model: chance level
    logs = []
    second_dir, second = evaluate_external(source, "natural", log=logs.append, **options)
    assert second_dir != first_dir and not any("already evaluated" in m for m in logs)
    assert first["attacks"]["natural"]["accuracy"] > 0.5 > second["attacks"]["natural"]["accuracy"]
    info = json.loads((second_dir / INFO).read_text())
    assert info["sha256"] == json.loads((first_dir / INFO).read_text())["sha256"]  # the same source file


def test_external_runs_appear_in_results_and_the_report(trained, tmp_path, capsys):
    from cat_bench.report import read_cells, render_report
    from cat_bench.suite import load_suite

    _, _, _, weights, arch = trained
    results = shutil.copytree(REPO / "results" / "smoke", tmp_path / "smoke")
    assert cli_eval(weights, results, "--arch", arch, "--dataset", "mnist-mini") == 0
    (ext,) = external_dirs(results)
    capsys.readouterr()
    assert main(["results", "--suite", "smoke", "--results", str(results)]) == 0
    table = capsys.readouterr().out
    assert "external:f.pt" in table and "| natural " in table
    assert "worst-case" in table.splitlines()[0]  # the worst case over the attacks run, a column of its own
    index = render_report(load_suite("smoke"), results, tmp_path / "report")
    html = index.read_text()
    assert ext.name in html and not (tmp_path / "report" / "runs" / f"{ext.name}.html").exists()
    cell = read_cells(html)[f"leaderboard/{ext.name}/external"]
    assert str(weights) in cell["text"] and sha256(weights)[:12] in cell["text"]
    grid = html.split('<section id="grid">')[1].split("</section>")[0]
    assert "external:f.pt" in grid  # the over-seeds table lists what `results` lists


def test_robustbench_model_from_a_local_model_dir(tmp_path, synthetic_cifar):
    """A RobustBench zoo entry registered locally (as `submit --verify` does) loads from --model-dir, no download."""
    from cat_bench import robustbench_compat as compat

    if not compat.available():
        pytest.skip("the robustbench extra is not installed")
    root = synthetic_cifar("cifar10", n_test=20)

    def tiny():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    model_dir = tmp_path / "models"
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(tiny().state_dict(), model_dir / "cifar10" / "Linf" / "CatBenchTiny.pt")
    with compat.register("cifar10", "CatBenchTiny", {"model": tiny, "gdrive_id": "local-only"}):
        run_dir, result = evaluate_external("robustbench:CatBenchTiny", "natural,fgsm", model_dir=model_dir,
                                            results=tmp_path / "results", data_root=root, device=CPU,
                                            progress=False, log=lambda m: None)
    info = json.loads((run_dir / INFO).read_text())
    assert info["kind"] == "robustbench" and info["sha256"] == sha256(model_dir / "cifar10" / "Linf" / "CatBenchTiny.pt")
    assert "robustbench.utils.load_model" in info["how"] and result["key"]["n_examples"] == 20
    assert result["key"]["eps"] == pytest.approx(8 / 255)


def test_a_robustbench_checkpoint_holding_a_pickle_is_refused_unloaded(tmp_path):
    """RobustBench's load_model unpickles without restriction: a checkpoint that is not plain data is refused first,
    and its pickle never runs."""
    import pickle

    from cat_bench import robustbench_compat as compat

    if not compat.available():
        pytest.skip("the robustbench extra is not installed")
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    model_dir = tmp_path / "models"
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    (model_dir / "cifar10" / "Linf" / "Standard.pt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(UsageError, match="not a plain checkpoint"):
        evaluate_external("robustbench:Standard", "natural", model_dir=model_dir, results=tmp_path / "results",
                          device=CPU, progress=False, log=lambda m: None)
    assert not ran.exists() and not (tmp_path / "results").exists()


def test_a_wrong_arch_message_is_cut_between_words_and_points_to_module_function(trained, tmp_path, capsys):
    weights = trained[3]
    code = main(["eval", str(weights), "--arch", "preact-resnet18", "--dataset", "mnist-mini", "--results",
                 str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "MODULE:FUNCTION" in err
    cut = err.split("RuntimeError: ", 1)[1].split(" ... (")[0]
    model = build_classifier("preact-resnet18", 10, 1, *(dataset_info("mnist-mini").mean,
                                                          dataset_info("mnist-mini").std))
    with pytest.raises(RuntimeError) as full:
        model.load_state_dict(torch.load(weights, weights_only=True))
    assert str(full.value).startswith(cut) and str(full.value)[len(cut)] in " \n"  # cut between words


@pytest.mark.parametrize("argv, expected", [
    (["{weights}", "--dataset", "mnist-mini"], "give --arch"),
    (["{weights}", "--arch", "smallcnn"], "give --dataset"),
    (["{weights}", "--arch", "smallcnn", "--dataset", "imagenet"], "imagenet"),
    (["{weights}", "--arch", "nonet", "--dataset", "mnist-mini"], "nonet"),
    (["robustbench:Standard"], "give --model-dir"),
    (["robustbench:"], "robustbench:NAME"),
    (["no_such_module_xyz:make", "--dataset", "mnist-mini"], "cannot import module 'no_such_module_xyz'"),
    (["{weights}", "--arch", "preact-resnet18", "--dataset", "mnist-mini"], "does not load into --arch preact-resnet18"),
])
def test_bad_external_inputs_exit_2_naming_the_value(trained, tmp_path, capsys, argv, expected):
    weights = trained[3]
    argv = [a.format(weights=weights) for a in argv]
    assert main(["eval", *argv, "--results", str(tmp_path), "--device", "cpu"]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "external").exists() or not any((tmp_path / "external").iterdir())


def test_external_options_with_a_run_directory_are_refused(trained, capsys):
    assert main(["eval", str(trained[0]), "--arch", "smallcnn"]) == 2
    assert "--arch: for external models only" in capsys.readouterr().err
