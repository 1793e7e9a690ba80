"""`cat-bench submit`: RobustBench-format export, verified by RobustBench's own loader and benchmark.

A tiny WRN-10-1 is trained on synthetic CIFAR-10-format data (the real CIFAR-10 is not on the
test machines), evaluated with the standard AutoAttack on a few points, exported, and checked with
robustbench 1.1.1 (`load_model` from the export folder, `eval.benchmark` on the synthetic data
root). The RobustBench part is skipped when the `robustbench` extra is not installed.
"""

import json
import runpy
import shutil

import pytest
import torch

from cat_bench import records
from cat_bench import robustbench_compat as compat
from cat_bench.cli import main
from cat_bench.evaluate import evaluate
from cat_bench.models import build_classifier
from cat_bench.settings import Settings
from cat_bench.submit import check_robustbench_name, robustbench_architecture
from cat_bench.config import resolve_config
from cat_bench.train import train

CPU = torch.device("cpu")
NAME = "Huang2021Calibrated_WRN-10-1"
PAPER = ["--title", "A tiny natural model", "--authors", "A. Tester", "--venue", "Unpublished",
         "--link", "https://example.org/tiny"]
needs_robustbench = pytest.mark.skipif(not compat.available(), reason="the robustbench extra is not installed")


def quiet(_msg):
    pass


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_cifar_run(root, out, n_eval=None):
    """A WRN-10-1 trained for one epoch on the synthetic CIFAR-10 under `root`; evaluated when n_eval is given."""
    config = resolve_config("natural", "cifar10", 8 / 255, arch="wrn-10-1", epochs=1, batch_size=32, n_train=64,
                            select_n=8)
    train(config, out, Settings("cpu", data_root=str(root), progress=False), log=quiet)
    if n_eval is not None:
        evaluate(out, "natural,autoattack", n_examples=n_eval, batch_size=n_eval, data_root=root, device=CPU,
                 progress=False, log=quiet)
    return out


@pytest.mark.parametrize("name", ["Huang2021Calibrated", "Huang2021Calibrated_PRN18", "Moosavi-Dezfooli2019Robustness",
                                  "Cui2023Decoupled_WRN-28-10", "Jia2022LAS-AT_34_10"])
def test_robustbench_style_names_are_accepted(name):
    assert check_robustbench_name(name) == name


def test_architecture_names_as_robustbench_writes_them():
    assert robustbench_architecture("preact-resnet18") == "PreActResNet-18"
    assert robustbench_architecture("wrn-34-10") == "WideResNet-34-10"


def test_refusals_exit_2_with_a_clear_message(synthetic_cifar, tmp_path, capsys):
    root = synthetic_cifar("cifar10", n_train=64, n_test=16)
    run = tiny_cifar_run(root, tmp_path / "run")
    evaluate(run, "natural", n_examples=8, data_root=root, device=CPU, progress=False, log=quiet)
    out = tmp_path / "sub"

    for bad in ("huang2021calibrated", "Huang_2021", "Calibrated", "Huang2021calibrated", "Huang2021Cal/ibrated",
                "Huang2021Calibrated_" + "x" * 80):
        code, _, err = run_cli(["submit", str(run), "--name", bad, "--out", str(out)] + PAPER, capsys)
        assert code == 2 and repr(bad) in err and "Surname + year + keyword" in err, err

    code, _, err = run_cli(["submit", str(run), "--name", NAME, "--out", str(out)] + PAPER, capsys)
    assert code == 2 and "no finished AutoAttack" in err
    assert f"cat-bench eval {run} --attacks natural,autoattack" in err  # the command that produces one

    unfinished = shutil.copytree(run, tmp_path / "unfinished")
    (unfinished / records.DONE).unlink()
    code, _, err = run_cli(["submit", str(unfinished), "--name", NAME, "--out", str(out)] + PAPER, capsys)
    assert code == 2 and "unfinished" in err and "--resume" in err

    code, _, err = run_cli(["submit", str(run), "--name", NAME, "--out", str(out)], capsys)
    assert code == 2 and "--title" in err and "not CAT" in err  # a baseline's paper is not cat-bench's

    mnist = tmp_path / "mnist"
    train(resolve_config("natural", "mnist-mini", 0.3, epochs=1, n_train=64, select_n=8, batch_size=32), mnist,
          Settings("cpu", progress=False), log=quiet)
    code, _, err = run_cli(["submit", str(mnist), "--name", NAME, "--out", str(out)] + PAPER, capsys)
    assert code == 2 and "mnist-mini" in err and "RobustBench does not host" in err
    assert "cifar10, cifar100 and imagenet" in err

    unclipped = shutil.copytree(run, tmp_path / "unclipped")  # as a run whose inputs left [0,1] would record
    stored = records.read_json(unclipped / records.CONFIG)
    stored["identity"]["train_attack"]["clip"] = False
    stored["run_name"] = records.run_name(stored["identity"])  # recorded as a run that trained so
    records.write_json(unclipped / records.CONFIG, stored)
    code, _, err = run_cli(["submit", str(unclipped), "--name", NAME, "--out", str(out)] + PAPER, capsys)
    assert code == 2 and "leave [0,1]" in err and "--protocol valid" in err

    code, _, err = run_cli(["submit", str(tmp_path / "nothing"), "--name", NAME] + PAPER, capsys)
    assert code == 2 and "not a run directory" in err
    assert not out.exists()  # no refusal wrote anything


@needs_robustbench
def test_submit_exports_and_robustbench_verifies_it(synthetic_cifar, tmp_path, capsys):
    root = synthetic_cifar("cifar10", n_train=64, n_test=16)
    run = tiny_cifar_run(root, tmp_path / "run", n_eval=8)
    result = records.read_json(run / records.EVAL)
    out = tmp_path / "sub"

    # AutoAttack on 8 of CIFAR-10's 10000 test points: refused unless the user asks for that
    code, _, err = run_cli(["submit", str(run), "--name", NAME, "--out", str(out)] + PAPER, capsys)
    assert code == 2 and "first 8 of the 10000" in err and "--n-examples 8" in err
    code, _, err = run_cli(["submit", str(run), "--name", "Rice2020Overfitting", "--n-examples", "8", "--verify",
                            "--out", str(tmp_path / "taken"), "--data-root", str(root), "--device", "cpu"] + PAPER,
                           capsys)
    assert code == 2 and "already has a model named 'Rice2020Overfitting'" in err

    argv = ["submit", str(run), "--name", NAME, "--n-examples", "8", "--reported", "12.5", "--out", str(out),
            "--verify", "--verify-n", "16", "--batch-size", "16", "--data-root", str(root), "--device", "cpu"] + PAPER
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "verified with robustbench 1.1.1" in stdout

    info = json.loads((out / "model_info" / "cifar10" / "Linf" / f"{NAME}.json").read_text())
    assert list(info) == ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable"]
    assert info["eps"] == "8/255" and info["dataset"] == "cifar10" and info["architecture"] == "WideResNet-10-1"
    assert info["clean_acc"] == f"{100 * result['attacks']['natural']['accuracy']:.2f}"
    assert info["autoattack_acc"] == f"{100 * result['attacks']['autoattack']['accuracy']:.2f}"
    assert info["reported"] == "12.5" and info["additional_data"] is False and info["number_forward_passes"] == 1
    assert "first 8 of the 10000 test points" in info["footnote"]
    assert "'paper' protocol (inputs in [0,1])" in info["footnote"]
    assert info["unreliable"] is bool(result["flags"])
    assert info["name"] == "A tiny natural model" and info["link"] == "https://example.org/tiny"

    state = torch.load(out / "models" / "cifar10" / "Linf" / f"{NAME}.pt", weights_only=True)
    assert not [k for k in state if "model." in k or "module." in k]
    assert "normalize.mean" in state  # normalization inside the model: inputs in [0,1]
    entry = runpy.run_path(str(out / "model_zoo_entry.py"))["ENTRY"]
    assert entry[0] == NAME and "wrn-10-1" in (out / "model_zoo_entry.py").read_text()
    entry[1]["model"]().load_state_dict(state, strict=True)
    assert (out / "autoattack.log").read_text() == (run / "autoattack.log").read_text()

    check = json.loads((out / "verification.json").read_text())
    assert check["passed"] and check["inputs_equal"] and check["max_abs_logit_diff"] <= 1e-5
    assert check["n_examples"] == 16 and check["clean_acc_cat_bench"] == check["clean_acc_robustbench"]
    assert check["clean_acc_robustbench"] > 0  # so AutoAttack had points to attack
    assert check["autoattack_acc_robustbench"] <= check["clean_acc_robustbench"]
    assert "running apgd-ce" in (out / "robustbench_autoattack.log").read_text()  # log_path was honoured

    # the runtime zoo entry and the download guard are gone again
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.model_zoo.models import model_dicts
    import robustbench.utils

    assert NAME not in model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]
    assert robustbench.utils.download_gdrive_new.__module__ == "robustbench.utils"


@needs_robustbench
def test_compat_adapts_the_old_autoattack_api(tmp_path):
    """robustbench's calls: AutoAttack(..., log_path=), run_standard_evaluation(x, y, bs=, state_path=) -> x_adv."""
    compat.install()
    compat.install()  # idempotent
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState

    torch.manual_seed(0)
    model = build_classifier("wrn-10-1", 10, 3).eval()
    x, y = torch.rand(3, 3, 32, 32), torch.randint(0, 10, (3,))
    adversary = AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", device=CPU,
                           log_path=str(tmp_path / "aa.log"))
    adversary.attacks_to_run = ["apgd-ce"]
    adversary.apgd.n_iter = 5
    x_adv = adversary.run_standard_evaluation(x, y, bs=3, state_path=str(tmp_path / "state.json"))
    assert torch.is_tensor(x_adv) and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    flags = EvaluationState.from_disk(tmp_path / "state.json").robust_flags
    with torch.no_grad():
        assert flags.float().mean().item() == (model(x_adv).argmax(1) == y).float().mean().item()
    assert "apgd-ce" in (tmp_path / "aa.log").read_text()


@needs_robustbench
def test_compat_stands_in_for_a_missing_pkg_resources(monkeypatch):
    """With setuptools >= 81 (no pkg_resources), robustbench/loaders.py still finds its helper files."""
    import sys

    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # `import pkg_resources` now fails
    compat.install()
    import pkg_resources

    path = pkg_resources.resource_filename("robustbench.loaders", "helper_files/imagenet_test_image_ids.txt")
    assert path.endswith("robustbench/helper_files/imagenet_test_image_ids.txt")
    assert open(path).readline().strip()
