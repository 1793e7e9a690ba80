"""The planner's prices (cat_bench.costs): measured rates from the committed records, the stated rule for the
networks not measured on a device kind, and the refusals."""

import json
from pathlib import Path

import pytest

from cat_bench import costs
from cat_bench.errors import UsageError
from cat_bench.config import resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_the_rates_asset_is_what_the_committed_records_give():
    """cat_bench/assets/throughput.json is scripts/throughput_rates.py's output for the records of SOURCES."""
    assert json.loads(costs.RATES.read_text()) == json.loads(json.dumps(costs.rates_from_records(REPO)))


def test_a_run_directorys_rate_is_its_median_images_per_s_times_the_counted_flops(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    identity = resolve_config("cat-cw", "mnist", 0.4)
    hardware = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "cpu": "x", "threads": 16}
    (run / "config.json").write_text(json.dumps({"identity": identity, "provenance": {"hardware": hardware}}))
    (run / "history.jsonl").write_text("".join(json.dumps({"images_per_s": v}) + "\n" for v in (100.0, 300.0, 200.0)))
    rates = costs.rates_from_records(tmp_path, sources=("run",))
    assert rates["h100"]["smallcnn"]["tflops"] == pytest.approx(200.0 * costs.train_flops_per_image(identity) / 1e12)


@pytest.mark.parametrize("kind, arch, dataset, basis, stand_in", [
    ("h100", "smallcnn", "mnist", "measured", None),
    ("h100", "madry-cnn", "mnist", "assumed", "smallcnn's on h100"),  # nearest of its family, this kind
    ("h100", "wrn-34-10", "cifar10", "assumed", "wrn-34-10's on h200"),  # the same network on another GPU
    ("h200", "smallcnn", "mnist", "assumed", "smallcnn's on h100"),
    ("cpu", "preact-resnet18", "cifar10", "assumed", "smallcnn's on cpu"),  # a CPU never borrows a GPU's rate
])
def test_each_network_is_priced_measured_or_by_the_stated_rule(kind, arch, dataset, basis, stand_in):
    table = json.loads(costs.RATES.read_text())
    config = resolve_config("at" if arch == "madry-cnn" else "cat-cent", dataset, 0.3, arch=arch)
    rate = costs.Pricer(kind).rate(config)
    assert rate.basis == basis and rate.detail.startswith(f"{arch}: ")
    if stand_in is None:
        assert rate.tflops == table[kind][arch]["tflops"] and table[kind][arch]["source"] in rate.detail
    else:
        other, other_kind = stand_in.split("'s on ")
        assert rate.tflops == table[other_kind][other]["tflops"] and stand_in in rate.detail


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(UsageError, match=r"--price-on 'tpu'.*allowed: cpu, h100, h200"):
        costs.Pricer("tpu")
