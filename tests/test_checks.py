"""Setup checks before attacking (cat_bench.checks) on planted faults: a BatchNorm model in train mode,
normalisation left outside the model, a dropout forward and non-finite gradients; each planted fault
fails its check, a sound model passes every check, and `attack_all` records, flags, switches
AutoAttack to `rand`, and refuses under strict.

The models are tiny and untrained except the nearest-centroid classifiers, whose "training" is the
mean image of each class of mnist-mini (no optimiser, a few milliseconds).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cat_bench.evaluate as ev
from cat_bench import records
from cat_bench.checks import USUAL_STATS, as_flags, run_checks, wrong_range
from cat_bench.data import load_split
from cat_bench.errors import UsageError

CPU = torch.device("cpu")
MEAN, STD = USUAL_STATS["mnist"]


def by_name(checks):
    return {c["check"]: c for c in checks}


@pytest.fixture(scope="module")
def digits():
    """The first 100 mnist-mini test digits in [0, 1] and the mean image of each class of its training split."""
    x, y = load_split("mnist-mini", "test")
    xt, yt = load_split("mnist-mini", "train")
    xt = xt.float() / 255
    centroids = torch.stack([xt[yt == k].mean(0) for k in range(10)])
    return x[:100].float() / 255, y[:100], centroids


class Centroids(nn.Module):
    """Nearest class mean: logits are minus the squared distances of the (optionally normalised) input to them."""

    def __init__(self, centroids, normalise_inside=False):
        super().__init__()
        self.register_buffer("c", centroids.flatten(1))
        self.normalise_inside = normalise_inside

    def forward(self, x):
        if self.normalise_inside:
            x = (x - MEAN[0]) / STD[0]
        return -torch.cdist(x.flatten(1), self.c) ** 2 / 100


def sound(digits):
    return Centroids(digits[2])


def normalisation_outside(digits):
    """Trained on normalised digits, its normalisation left to the caller (it wants (x - mean) / std)."""
    return Centroids((digits[2] - MEAN[0]) / STD[0])


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class Dropout(nn.Module):
    """A randomised defence: dropout on the input in every forward, in eval mode too."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(F.dropout(x, 0.3, training=True))


class SqrtInput(nn.Module):
    """sqrt of the pixels first: the gradient at a black pixel (0) is infinite."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.sqrt())


def test_a_sound_model_passes_every_check(digits):
    checks = run_checks(sound(digits), digits[0], digits[1], family="mnist", clip=True)
    assert [c["status"] for c in checks] == ["passed"] * 5, checks
    assert as_flags(checks) == []


def test_batchnorm_in_train_mode_fails_eval_mode_and_keeps_its_statistics(digits):
    model = BatchNormNet().train()
    before = model.bn.running_mean.clone()
    checks = by_name(run_checks(model, digits[0], digits[1], family="mnist", clip=True))
    assert checks["eval-mode"]["status"] == "failed"
    assert "model.eval()" in checks["eval-mode"]["detail"]
    assert torch.equal(model.bn.running_mean, before) and model.training  # the check left it as it was
    assert by_name(run_checks(model.eval(), digits[0], digits[1], family="mnist", clip=True))["eval-mode"]["status"] == "passed"


def test_normalisation_outside_the_model_fails_input_range(digits):
    x, y, _ = digits
    check = by_name(run_checks(normalisation_outside(digits), x, y, family="mnist", clip=True))["input-range"]
    assert check["status"] == "failed"
    assert "mean/std normalised" in check["detail"]
    inside = Centroids((digits[2] - MEAN[0]) / STD[0], normalise_inside=True)  # the same model, normalising inside
    assert by_name(run_checks(inside, x, y, family="mnist", clip=True))["input-range"]["status"] == "passed"


@pytest.mark.parametrize("base, best, expected", [
    (0.90, 0.99, True),  # a 9-point gap is most of the error: normalisation left outside
    (0.50, 0.65, True),  # more than 10 points
    (0.97, 0.99, False),  # 2 of 100 examples: noise
    (0.60, 0.68, False),  # 8 points of a 40-point error
    (0.10, 0.22, False),  # chance level (10 classes): no alarm, however the conventions scatter
    (0.05, 0.28, False),
])
def test_the_input_range_rule_sees_a_small_gap_at_high_accuracy_and_no_alarm_at_chance(base, best, expected):
    assert wrong_range(base, best, 10) is expected


def test_dropout_forward_is_handled_with_autoattack_rand(digits):
    checks = by_name(run_checks(Dropout(sound(digits)), digits[0], digits[1], family="mnist", clip=True))
    assert checks["deterministic"]["status"] == "handled"
    assert "rand" in checks["deterministic"]["detail"]
    assert checks["eps-zero"]["status"] == "passed"  # compared as accuracies for a stochastic forward


class BatchNormDropout(nn.Module):
    """A small CNN with BatchNorm and dropout: left in train mode, its forward is stochastic and batch-dependent."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 26 * 26, 10)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.fc(self.drop(F.relu(self.bn(self.conv(x))).flatten(1)))


def test_batchnorm_and_dropout_in_train_mode_fail_eval_mode_though_the_forward_is_stochastic(digits):
    checks = by_name(run_checks(BatchNormDropout().train(), digits[0], digits[1], family="mnist", clip=True))
    assert checks["deterministic"]["status"] == "handled"
    assert checks["eval-mode"]["status"] == "failed" and "averaged over 16 forwards" in checks["eval-mode"]["detail"]
    assert {"setup check eval-mode failed", "setup check deterministic handled"} <= {f["flag"] for f in
                                                                                      as_flags(checks.values())}


def test_a_randomised_defence_in_eval_mode_passes_eval_mode(digits):
    checks = by_name(run_checks(Dropout(sound(digits)), digits[0], digits[1], family="mnist", clip=True))
    assert checks["eval-mode"]["status"] == "passed", checks["eval-mode"]


def test_a_check_that_cannot_run_is_not_run_and_a_flag(digits):
    checks = by_name(run_checks(sound(digits), digits[0][:6], digits[1][:6], family="mnist", clip=True))
    assert checks["eval-mode"]["status"] == "not run" and "too few" in checks["eval-mode"]["detail"]
    assert "setup check eval-mode not run" in {f["flag"] for f in as_flags(checks.values())}


@pytest.mark.parametrize("kind", ["torch-export", "torchscript"])
def test_a_program_exported_in_train_mode_is_flagged(kind, digits, tmp_path):
    """Exported or traced in train mode, BatchNorm and dropout are baked into the program: .eval() cannot undo
    them, and the evaluation records the failed check as a flag."""
    from cat_bench.external import evaluate_external

    model, x = BatchNormDropout().train(), digits[0][:8]
    path = tmp_path / ("model.pt2" if kind == "torch-export" else "model.ts")
    if kind == "torch-export":
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    else:
        torch.jit.save(torch.jit.trace(model, x, check_trace=False), path)
    run_dir, result = evaluate_external(str(path), "natural", dataset="mnist-mini", results=tmp_path / "r",
                                        n_examples=100, device=CPU, progress=False, log=lambda m: None)
    checks = by_name(result["checks"])
    assert checks["eval-mode"]["status"] == "failed", checks["eval-mode"]
    assert "setup check eval-mode failed" in {f["flag"] for f in as_flags(result["checks"])}
    from cat_bench.results import run_row

    assert run_row(run_dir)["setup_flags"] >= 1  # the results table counts it


def test_non_finite_gradients_are_flagged(digits):
    check = by_name(run_checks(SqrtInput(sound(digits)), digits[0], digits[1], family="mnist", clip=True))
    assert check["finite-gradients"]["status"] == "failed"
    assert by_name(run_checks(sound(digits), digits[0], digits[1], family="mnist",
                              clip=True))["finite-gradients"]["status"] == "passed"


def test_eps_zero_catches_an_attack_path_that_changes_predictions(digits, monkeypatch):
    """PGD at eps 0 must leave the predictions alone; a random start outside the ball (planted) does not."""
    import cat_bench.attacks as attacks

    monkeypatch.setattr(attacks, "feasible_box", lambda x, eps, clip=True: (torch.zeros_like(x), torch.ones_like(x)))
    monkeypatch.setattr(attacks, "random_init", lambda x, kind, scale, shard=None: torch.rand_like(x))
    check = by_name(run_checks(sound(digits), digits[0], digits[1], family="mnist", clip=True))["eps-zero"]
    assert check["status"] == "failed"


def attack(run_dir, model, digits, names, **kwargs):
    x, y, _ = digits
    key = {"checkpoint": "planted", "n_examples": len(y), "eps": 0.3}
    return ev.attack_all(run_dir, model, x, y, names, key=key, dataset="mnist-mini", seed=0, clip=True,
                         eps_override=False, batch_size=50, device=CPU, progress=False, log=lambda m: None, **kwargs)


def test_attack_all_records_checks_and_strict_refuses_before_writing(digits, tmp_path):
    logs = []
    result = ev.attack_all(tmp_path, BatchNormNet().train(), digits[0], digits[1], ["natural"],
                           key={"checkpoint": "planted", "n_examples": 100, "eps": 0.3}, dataset="mnist-mini", seed=0,
                           clip=True, eps_override=False, batch_size=50, device=CPU, progress=False, log=logs.append)
    stored = json.loads((tmp_path / records.EVAL).read_text())
    assert by_name(stored["checks"])["eval-mode"]["status"] == "failed" == by_name(result["checks"])["eval-mode"]["status"]
    assert any(m.startswith("WARNING, setup check eval-mode failed") for m in logs)

    strict = tmp_path / "strict"
    strict.mkdir()
    with pytest.raises(UsageError, match="eval-mode"):
        attack(strict, BatchNormNet().train(), digits, ["natural"], strict=True)
    assert list(strict.iterdir()) == []


def test_a_stochastic_model_gets_autoattack_rand(digits, tmp_path, monkeypatch):
    seen = {}

    def fake(model, x, y, eps, attacks, robust, *, version="standard", on_attack_done, **kwargs):
        seen.update(version=version, attacks=list(attacks))
        return robust

    monkeypatch.setattr(ev, "run_autoattack", fake)
    result = attack(tmp_path, Dropout(sound(digits)), digits, ["autoattack"])
    assert seen == {"version": "rand", "attacks": ["apgd-ce", "apgd-dlr"]}
    assert result["attacks"]["autoattack"]["settings"]["version"] == "rand"
    attack(tmp_path / "det", sound(digits), digits, ["autoattack"])
    assert seen == {"version": "standard", "attacks": ev.AUTOATTACK_STANDARD}


def test_cli_strict_exits_2_and_writes_nothing_without_strict_it_flags(tmp_path, monkeypatch, capsys):
    """An entry point whose BatchNorm keeps using batch statistics in eval mode (track_running_stats=False)."""
    from cat_bench.cli import main

    (tmp_path / "planted_models.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def batch_stats():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),\n"
        "                         nn.Linear(4 * 26 * 26, 10))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["eval", "planted_models:batch_stats", "--dataset", "mnist-mini", "--attacks", "natural", "--n-examples",
            "100", "--results", str(tmp_path / "results"), "--device", "cpu", "--no-progress"]
    assert main(argv + ["--strict"]) == 2
    assert "--strict: setup check(s) eval-mode failed" in capsys.readouterr().err
    assert not (tmp_path / "results" / "external").exists() or not any((tmp_path / "results" / "external").iterdir())
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "flag: setup check eval-mode failed" in out
