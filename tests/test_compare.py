"""Per-example records and `cat-bench compare` on two small real runs (natural, mnist-mini, 2 epochs on 2,000
images at batch 20, seeds 0 and 1, evaluated with natural and FGSM at eps 0.1 on 200 test digits; after one
epoch on 500 images two seeds still differ significantly, 59.5% vs 70% natural accuracy: training has not
settled, so the seeds are not yet "the same training").

The records reproduce each accuracy in eval.json exactly and the worst case is their conjunction;
`compare` finds a planted difference (40 examples turned wrong) significant and the two seeds of the
same training not; committed records without per-example files get the command that makes them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cat_bench import per_example, records
from cat_bench.cli import main
from cat_bench.compare import compare_correct, compare_runs, mcnemar_exact, paired_bootstrap
from cat_bench.errors import UsageError
from cat_bench.evaluate import evaluate
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train

CPU = torch.device("cpu")
ATTACKS = "natural,fgsm"
N = 200
SMOKE = Path(__file__).resolve().parents[1] / "results" / "smoke" / "runs"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Two evaluated runs of the same training with seeds 0 and 1."""
    out = []
    for seed in (0, 1):
        run = tmp_path_factory.mktemp("compare") / f"seed{seed}"
        config = resolve_config("natural", "mnist-mini", 0.3, epochs=2, n_train=2000, select_n=100, batch_size=20,
                                seed=seed)
        train(config, run, Settings("cpu", progress=False), log=lambda m: None)
        evaluate(run, ATTACKS, n_examples=N, eps=0.1, device=CPU, progress=False, log=lambda m: None)
        out.append(run)
    return out


def test_records_reproduce_each_accuracy_exactly(seeds):
    for run in seeds:
        ev = json.loads((run / records.EVAL).read_text())
        worst = np.ones(N, dtype=bool)
        for name, entry in ev["attacks"].items():
            rec, correct = per_example.read(run / entry["examples"])
            assert rec["key"] == ev["key"] and rec["indices"] == {"split": "test", "start": 0, "stop": N}
            assert correct.sum() / len(correct) == entry["accuracy"]  # exactly, not approximately
            worst &= correct
        assert ev["worst-case"]["accuracy"] == worst.sum() / N
        assert ev["worst-case"]["accuracy"] <= min(e["accuracy"] for e in ev["attacks"].values())


def test_planted_difference_is_significant(seeds, tmp_path):
    """B = A with 40 of A's correct natural examples turned wrong: difference -20 points, interval below 0, p tiny."""
    a = seeds[0]
    b = shutil.copytree(a, tmp_path / "planted")
    ev = json.loads((b / records.EVAL).read_text())
    entry = ev["attacks"]["natural"]
    rec, correct = per_example.read(b / entry["examples"])
    flip = np.flatnonzero(correct)[:40]
    correct[flip] = False
    per_example.write(b, "natural", rec["key"], rec["dataset"], correct)
    entry["accuracy"] = correct.sum() / N
    records.write_json(b / records.EVAL, ev)

    result = compare_runs(a, b, ["natural"])["attacks"]["natural"]
    assert result["difference"] == pytest.approx(-40 / N)
    assert result["interval"][1] < 0 and result["p_value"] < 1e-6
    assert (result["only_a"], result["only_b"]) == (40, 0)


def test_two_seeds_of_the_same_training_are_not_significantly_different(seeds):
    result = compare_runs(*seeds)
    assert set(result["attacks"]) == {"natural", "fgsm", "worst-case"}
    for name, r in result["attacks"].items():
        assert r["p_value"] > 0.05, name
        assert r["interval"][0] <= r["difference"] <= r["interval"][1]


def test_compare_cli_prints_difference_interval_and_p_value(seeds, capsys):
    assert main(["compare", str(seeds[0]), str(seeds[1]), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "95% interval (paired bootstrap)" in out and "McNemar p" in out
    for name in ("natural", "fgsm", "worst-case"):
        assert any(line.startswith(name) and "[" in line for line in out.splitlines())
    assert main(["compare", str(seeds[0]), str(seeds[1]), "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attacks"]["natural"]["p_value"] <= 1


def test_bootstrap_is_seeded_and_mcnemar_is_exact():
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.6
    b = a.copy()
    b[:20] = ~b[:20]
    assert paired_bootstrap(a, b, seed=1) == paired_bootstrap(a, b, seed=1)
    p, only_a, only_b = mcnemar_exact(np.array([True] * 6 + [False] * 4), np.array([False] * 6 + [False] * 4))
    assert (only_a, only_b) == (6, 0) and p == pytest.approx(2 * 0.5 ** 6)  # binomial(6, 1/2), both tails
    assert compare_correct(a, a)["p_value"] == 1.0 and compare_correct(a, a)["interval"] == [0.0, 0.0]


def test_committed_smoke_runs_without_records_say_how_to_create_them(capsys):
    a, b = SMOKE / "at-mnist-mini-57b6217d720e", SMOKE / "trades-mnist-mini-8012f1d6de5f"
    if (a / per_example.FOLDER).is_dir():
        assert main(["compare", str(a), str(b)]) == 0
        assert "McNemar p" in capsys.readouterr().out
        return
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert f"cat-bench eval {a}" in err and "--retrain" in err


def test_different_examples_or_no_common_attack_are_refused(seeds, tmp_path):
    other = shutil.copytree(seeds[1], tmp_path / "other")
    evaluate(other, "natural", n_examples=2 * N, eps=0.1, device=CPU, progress=False, log=lambda m: None)
    with pytest.raises(UsageError, match="not evaluated on the same examples"):
        compare_runs(seeds[0], other, ["natural"])
    with pytest.raises(UsageError, match=r"--attacks cw: not evaluated in both runs"):
        compare_runs(seeds[0], seeds[1], ["cw"])
    assert main(["compare", str(seeds[0]), str(tmp_path / "nothing")]) == 2


def test_unequal_threat_models_are_refused_or_compared_with_the_difference_printed(seeds, tmp_path, capsys):
    """The same run evaluated clipped and unclipped (planted in the record): refused by default; with
    --allow-different, compared with the difference printed; equal sides print their shared threat model."""
    other = shutil.copytree(seeds[1], tmp_path / "unclipped")
    ev = json.loads((other / records.EVAL).read_text())
    clip = ev["attacks"]["fgsm"]["settings"]["clip"]
    for entry in ev["attacks"].values():
        entry["settings"]["clip"] = not clip
    (other / records.EVAL).write_text(json.dumps(ev))
    with pytest.raises(UsageError, match=rf"not measured under the same threat model \(clip: {clip} vs {not clip}"):
        compare_runs(seeds[0], other)
    assert main(["compare", str(seeds[0]), str(other), "--allow-different"]) == 0
    out = capsys.readouterr().out
    assert f"DIFFERENT: clip: {clip} vs {not clip}" in out and "DIFFERENT: fgsm settings:" in out
    assert main(["compare", str(seeds[0]), str(seeds[1])]) == 0
    out = capsys.readouterr().out
    assert "DIFFERENT" not in out and "  eps       0.1 (both)" in out and "  network   smallcnn (both)" in out


@pytest.mark.parametrize("option,value,needle", [
    ("--seed", "-1", "--seed -1: allowed: a non-negative integer"),
    ("--n-boot", "10000000000", "--n-boot 10000000000: allowed: 100"),
    ("--n-boot", "99", "--n-boot 99: allowed: 100"),
])
def test_bootstrap_options_out_of_range_are_named(seeds, capsys, option, value, needle):
    """A negative seed (numpy's ValueError) and a billion resamples (a MemoryError) are refused at the edge."""
    a, b = seeds
    code = main(["compare", str(a), str(b), option, value])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
