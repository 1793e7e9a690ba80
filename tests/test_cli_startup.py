"""`--help`, `list`, `status` and every error on bad arguments answer without importing torch.

Each case runs the CLI in a fresh interpreter and asserts on `sys.modules`, not on a time: torch's
import is what made these answers take seconds.
"""

import json
import subprocess
import sys

import pytest

from cat_bench import lazy, records

PROBE = """
import json, sys
from cat_bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.stderr)
"""

TRAIN = ["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3"]

CASES = {
    "help": (["--help"], 0, "usage: cat-bench"),
    "list methods": (["list", "methods"], 0, "cat-cw: CAT with the C&W margin PGD"),
    "list datasets": (["list", "datasets"], 0, "mnist-mini"),
    "list attacks": (["list", "attacks"], 0, "pgd20"),
    "list architectures": (["list", "architectures"], 0, "wrn-34-10"),
    "status": (["status", "--suite", "smoke", "--results", "res"], 0, "0 done"),
    "train method": (["train", "--method", "catt", "--dataset", "mnist", "--eps", "0.3"], 2, "unknown method 'catt'"),
    "train dataset": (["train", "--method", "at", "--dataset", "svhn", "--eps", "0.3"], 2, "unknown dataset 'svhn'"),
    "train eps": (TRAIN[:-1] + ["2"], 2, "eps 2.0 is outside (0, 1]"),
    "train arch": (TRAIN + ["--arch", "wrn-5-1"], 2, "WideResNet depth 5"),
    "train set": (TRAIN + ["--set", "gamma=1"], 2, "unknown hyperparameter 'gamma'"),
    "train device": (TRAIN + ["--device", "gpu"], 2, "unknown device 'gpu'"),
    "train budget": (TRAIN + ["--stop-after-epoch", "0"], 2, "'0' must be a positive integer"),
    "train other run": (TRAIN + ["--out", "other"], 2, "holds a different run"),
    "eval no run": (["eval", "missing"], 2, "missing is not a run directory"),
    "eval unfinished": (["eval", "unfinished"], 2, "has not finished training"),
    "eval attack": (["eval", "finished", "--attacks", "pgd7"], 2, "pgd7"),
    "eval eps": (["eval", "finished", "--eps", "2"], 2, "eps 2.0 is outside (0, 1]"),
    "run suite": (["run", "--suite", "nope"], 2, "unknown suite 'nope'"),
    "run filter": (["run", "--suite", "smoke", "--only", "method=catt"], 2, "matches none"),
    "dry-run filter": (["run", "--suite", "smoke", "--only", "method=catt", "--dry-run"], 2, "matches none"),
    "results suite": (["results", "--suite", "nope"], 2, "unknown suite 'nope'"),
    "report suite": (["report", "--suite", "nope"], 2, "unknown suite 'nope'"),
    "submit name": (["submit", "finished", "--name", "x"], 2, "not a RobustBench model name"),
    "export name": (["export", "finished", "--name", "a/b"], 2, "--name 'a/b' is not a folder name"),
    "export unfinished": (["export", "unfinished", "--name", "x"], 2, "has not finished training"),
    "eval model sha256": (["eval", "model", "--attacks", "natural"], 2, "has SHA-256"),
    "eval model attack": (["eval", "model", "--attacks", "pgd7"], 2, "pgd7"),
    "eval external arch": (["eval", "robustbench:Standard", "--arch", "smallcnn"], 2, "--arch 'smallcnn' is for"),
    "eval external dataset": (["eval", "pkg.mod:make", "--dataset", "svhn"], 2, "unknown dataset 'svhn'"),
    "compare no run": (["compare", "missing", "finished"], 2, "missing has no eval.json"),
    "compare n-boot": (["compare", "finished", "finished", "--n-boot", "0"], 2, "'0' must be a positive integer"),
}


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    """A working directory with a finished-looking run, an unfinished one, a run of another config and a model
    folder whose weights are not the card's."""
    root = tmp_path_factory.mktemp("startup")
    identity = {"dataset": "mnist-mini", "method": "at", "arch": "smallcnn", "eps": 0.3, "seed": 0, "n_train": 100,
                "hparams": {}, "schedule": {"epochs": 1}}  # what a reader of an identity needs, nothing more
    for name in ("finished", "unfinished", "other"):
        records.write_json(root / name / records.CONFIG, {"identity": identity})
    (root / "finished" / records.DONE).write_text("{}")
    from cat_bench import shipped

    (root / "model").mkdir()
    (root / "model" / shipped.WEIGHTS).write_bytes(b"not the exported weights")
    (root / "model" / shipped.SHA256).write_text(f"{'0' * 64}  {shipped.WEIGHTS}\n")
    records.write_json(root / "model" / shipped.CARD, {
        "format": shipped.CARD_FORMAT, "identity": {"dataset": "mnist-mini", "method": "at"},
        "weights": {"file": shipped.WEIGHTS, "sha256": "0" * 64}})
    return root


@pytest.mark.parametrize("case", CASES)
def test_answers_without_importing_torch(case, cwd):
    argv, code, says = CASES[case]
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    outcome = json.loads(proc.stderr.strip().splitlines()[-1])
    assert outcome["code"] == code, proc.stderr
    assert says in proc.stdout + proc.stderr
    assert not outcome["torch"], f"`cat-bench {' '.join(argv)}` imported torch"


def test_training_imports_torch_when_it_needs_it(cwd):
    """The probe can fail: a command that builds a network does import torch."""
    proc = subprocess.run([sys.executable, "-c", PROBE, "run", "--suite", "smoke", "--only", "method=at",
                           "--dry-run"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"code": 0, "torch": True}


def test_lazy_modules_are_torch_itself():
    import torch
    import torch.nn.functional as F

    assert lazy.torch.Tensor is torch.Tensor and lazy.torch.float32 is torch.float32
    assert lazy.F.cross_entropy is F.cross_entropy
    assert lazy.nn.Module is torch.nn.Module
    assert lazy.torch.__name__ == "torch"
