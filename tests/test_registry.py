"""Every registered method, through every part of cat-bench that takes a method (DomainBed's test_models).

A method is one file in methods/ plus its line in the registry; these tests run each registered
method through config resolution, one training update on mnist-mini, a checkpoint and a resume,
the planner's price, `cat-bench list methods` and a rendered report. A method that leaves out a
piece (its cost, its label or colour, a source for a hyperparameter, state a resume needs) fails.
"""

import contextlib
import io
import math
import re

import pytest
import torch

from cat_bench import records
from cat_bench.methods import METHODS
from cat_bench.settings import Settings
from cat_bench.config import config_sources, resolve_config
from cat_bench.train import train

QUIET = dict(settings=Settings(progress=False), log=lambda m: None)
NAMES = list(METHODS)


def tiny_config(name: str, epochs: int = 2) -> dict:
    """A run of `name` on 40 shipped digits: 2-step attacks, batches of 20, selection on 10 images."""
    config = resolve_config(name, "mnist-mini", 0.3, epochs=epochs, n_train=40, batch_size=20, select_n=10)
    config["train_attack"].update(steps=2, alpha=0.15)
    config["selection"]["attack"]["steps"] = 2
    return config


@pytest.mark.parametrize("name", NAMES)
def test_resolves_a_config_with_a_source_for_every_default(name):
    config = resolve_config(name, "mnist-mini", 0.3)
    cls = METHODS[name]
    assert config["method"] == name and set(config["hparams"]) == set(cls.HPARAMS)
    sources = config_sources(config)
    assert sources["protocol"] and all(sources["hparams"][k] for k in cls.HPARAMS)
    assert records.run_name(config).startswith(f"{name}-mnist-mini-")


@pytest.mark.parametrize("name", NAMES)
def test_one_update_moves_f_and_reports_finite_losses(name):
    from cat_bench.networks import Networks

    config = tiny_config(name)
    torch.manual_seed(0)
    nets = Networks(config, torch.device("cpu"))
    method = nets.adapter()
    optimizers = method.configure_optimizers(config["schedule"])
    assert set(optimizers) == set(method.modules()) and "f" in optimizers
    method.set_lr(0.05)
    assert all(g["lr"] == 0.05 for o in optimizers.values() for g in o.param_groups)
    before = [p.detach().clone() for p in nets.f.parameters()]
    x, y = _digits(20)
    for net in method.modules().values():
        net.train()
    losses = method.update(x, y, optimizers, 1)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, nets.f.parameters()))
    means = method.epoch_means({k: v.item() for k, v in losses.items()})
    assert all(math.isfinite(v) for v in means.values())
    for key, _, warning in method.check_health(means):
        assert key in method.HEALTH_FLAGS and warning


@pytest.mark.parametrize("name", NAMES)
def test_resume_continues_to_the_same_weights(name, tmp_path):
    """Two epochs in one go, and one epoch, a stop and a resume: the same weights and method state."""
    config = tiny_config(name)
    train(config, tmp_path / "full", **QUIET)
    stopped = train(config, tmp_path / "resumed", Settings(progress=False, stop_after_epoch=1), log=lambda m: None)
    assert stopped["done"] is False
    train(config, tmp_path / "resumed", resume=True, **QUIET)
    full = records.load_checkpoint(tmp_path / "full" / records.LAST)
    resumed = records.load_checkpoint(tmp_path / "resumed" / records.LAST)
    assert set(full["nets"]) == {"f", *METHODS[name].extra_networks("mnist", 1)}
    _assert_equal(full["nets"], resumed["nets"])
    for key in set(full) - {"nets", "rng", "epoch", "best"}:  # the method's own state (optimisers, extra)
        _assert_equal(full[key], resumed[key])


@pytest.mark.parametrize("name", NAMES)
def test_priced_by_the_planner(name):
    from cat_bench.costs import run_gpu_hours

    cls = METHODS[name]
    config = resolve_config(name, "mnist-mini", 0.3)
    passes = cls.passes(config["train_attack"]["steps"], config["hparams"])
    assert "f" in passes and set(passes) <= {"f", *cls.extra_networks("mnist", 1)}
    hours = run_gpu_hours(config, ("natural", "pgd20"), None)
    assert math.isfinite(hours) and hours > 0


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS[n].mask_figure])
def test_a_mask_method_gives_figure_2s_rows(name):
    """A method the report draws Figure 2 for gives a mask in [0, 1] and calibrated examples of the input's
    shape from its own networks: x_cal = x + M delta (Eq. 11), unclipped as the paper protocol's MNIST code."""
    cls = METHODS[name]
    torch.manual_seed(0)
    extra = {k: net.eval() for k, net in cls.extra_networks("mnist", 1).items()}
    x = torch.rand(3, 1, 28, 28)
    x_adv = (x + 0.3 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        mask, x_cal = cls.mask_rows(extra, x, x_adv, clip=False)
    assert mask.shape == x.shape and x_cal.shape == x.shape and 0 <= mask.min() and mask.max() <= 1
    assert torch.allclose(x_cal, x + mask * (x_adv - x))


@pytest.mark.parametrize("name", NAMES)
def test_listed_with_its_sources(name):
    from cat_bench.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", "methods"]) in (0, None)
    text = out.getvalue()
    cls = METHODS[name]
    assert re.search(rf"^{re.escape(name)}: \S", text, re.M)
    assert all(hp.source in text for hp in cls.HPARAMS.values())
    assert all(p.source in text for p in cls.PROTOCOLS.values())


def test_every_method_is_rendered_in_a_report(tmp_path, write_run_records):
    """One finished, evaluated run of each method: its page, its leaderboard row and its line in Figure 3."""
    from cat_bench.report import render_report
    from cat_bench.suite import load_suite

    suite_file = tmp_path / "every-method.toml"
    methods = ", ".join(f'"{name}"' for name in NAMES)
    suite_file.write_text(f'description = "every method"\n[[runs]]\nlabel = "Figure 3"\nmethods = [{methods}]\n'
                          f'dataset = "mnist-mini"\neps = [0.3]\nepochs = 1\nattacks = ["natural", "pgd20"]\n')
    suite = load_suite(str(suite_file))
    for i, spec in enumerate(suite.runs):
        write_run_records(tmp_path / "results", spec, history=[{"epoch": 1, "lr": 0.1, "nat_acc": 0.9, "rob_acc": 0.5}],
                          accuracies={"natural": 90.0 - i, "pgd20": 50.0 + i})
    index = render_report(suite, tmp_path / "results", tmp_path / "report")
    html = index.read_text()
    assert (index.parent / "figures" / "figure3.png").is_file()
    for spec in suite.runs:
        assert records.run_name(spec.config) in html
    for name, cls in METHODS.items():
        assert cls.label and re.fullmatch(r"#[0-9a-f]{6}", cls.color), name


def _digits(n: int):
    from cat_bench.data import load_split

    x, y = load_split("mnist-mini", "train")
    return x[:n].float() / 255, y[:n]


def _assert_equal(a, b) -> None:
    """Nested state dicts equal to the bit (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_equal(u, v)
    else:
        assert a == b
