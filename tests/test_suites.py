"""Suite files: the shipped suites load, expand to the runs the paper needs, and match METHOD.md s3-s5."""

from __future__ import annotations

import functools
from collections import defaultdict

import pytest

from cat_bench.errors import UsageError
from cat_bench.presets import eval_attack
from cat_bench.suite import SUITES, filter_runs, load_suite

load = functools.cache(load_suite)  # shipped files do not change during the session
CAT = ("cat-cent", "cat-cw")
BASELINES = ("at", "trades", "mart", "fat")

# Run counts, reasoned from the blocks (duplicates across blocks merged):
MNIST = 1 + 2 + 2 * 2 * 5  # Table 1: AT at 0.3; TRADES at 0.3, 0.4; 2 CAT x 2 eps x 5 seeds (Figure 2 reuses them)
TABLE2 = 4 + 2 * 3 * 5  # 4 baselines; 2 CAT x b in {0.05, 0.1, 0.3} x 5 seeds (Table 4 reuses them)
PREACT = (TABLE2
          + 2 * 5  # Table 8: 2 CAT x (a in 5..1 at b 0.05 + b in 0.05..0.3 at a 5 = 8 settings) - 3 in Table 2
          + 3 * 4  # Figure 3: AT, TRADES, CATcent x 4 new eps_train (8/255 is Table 2's)
          + 2  # Figure 4: A1, A2 (the full CATcent is Table 2's)
          + 2 * 2  # Figure 5: KL and CW PGD loss x b in {0.05, 0.1} (CE is Table 2's)
          + 2 * 2)  # Figure 6: 2 CAT x b in {0.001, 0.01} (the other four b are Table 8's)
COUNTS = {"smoke": 7, "mnist": MNIST, "cifar10-preact": PREACT, "cifar10-wrn": TABLE2, "cifar100": 1 + 2 * 2 * 5}


def test_shipped_suites_load_with_the_run_counts_their_blocks_imply():
    assert set(SUITES) == {*COUNTS, "paper"}
    assert (MNIST, PREACT, TABLE2) == (23, 66, 34)
    for name, count in COUNTS.items():
        suite = load(name)
        assert suite.name == name and suite.description and suite.path.is_file()
        assert len(suite.runs) == count, name
        assert len({r.name for r in suite.runs}) == count  # merged: no two runs share a directory


def test_smoke_has_one_short_run_per_method_on_mnist_mini():
    runs = load("smoke").runs
    assert sorted(r.config["method"] for r in runs) == sorted(["natural", *BASELINES, *CAT])
    for r in runs:
        c = r.config
        assert (c["dataset"], c["eps"], c["seed"], c["n_train"]) == ("mnist-mini", 0.3, 0, 2000)
        assert (c["schedule"]["epochs"], c["schedule"]["batch_size"], c["selection"]["n"]) == (2, 50, 300)
        assert r.attacks == ("natural", "fgsm", "pgd20") and r.n_examples == 500


def test_paper_is_the_union_of_the_dataset_suites():
    parts = [load(n) for n in ("mnist", "cifar10-preact", "cifar10-wrn", "cifar100")]
    paper = load("paper")
    names = [r.name for r in paper.runs]
    assert len(names) == len(set(names)) == sum(len(p.runs) for p in parts) == 144
    by_name = {r.name: r for p in parts for r in p.runs}
    assert set(names) == set(by_name)
    assert all(r == by_name[r.name] for r in paper.runs)


def test_runs_shared_by_several_blocks_merge():
    runs = filter_runs(load("cifar10-preact").runs,
                       ["method=cat-cent", "eps=8/255", "seed=0", "beta=5", "b=0.05", "pgd_loss=ce", "ablation=none"])
    assert len(runs) == 1
    run = runs[0]
    assert run.labels == ("Table 2", "Table 4", "Table 8", "Figure 3", "Figure 4", "Figure 5", "Figure 6")
    assert run.attacks == ("natural", "fgsm", "pgd20", "pgd100", "cw", "autoattack", "square")
    assert run.n_examples is None
    # Table 2's b=0.3 rows are not Table 4 rows: no Square attack there.
    b03 = filter_runs(load("cifar10-preact").runs, ["label=Table 2", "b=0.3"])
    assert len(b03) == 10 and all("square" not in r.attacks and "Table 4" not in r.labels for r in b03)


def _schedule_checks(c: dict) -> None:
    s, sel, attack = c["schedule"], c["selection"], c["train_attack"]
    assert (sel["on"], sel["n"], c["n_train"]) == ("test", None, None)
    if c["dataset"] == "mnist":  # METHOD.md s3, MNIST
        assert (s["optimizer"], s["lr"], s["epochs"], s["milestones"], s["batch_size"]) == ("adam", 1e-3, 40, [30], 100)
        assert attack["steps"] == 20 and attack["alpha"] == pytest.approx(c["eps"] / 20)
        assert c["eps"] in (0.3, 0.4)
        assert sel["attack"] == {"kind": "pgd", "steps": 20, "alpha": 0.015, "eps": 0.3, "random_start": "none",
                                 "loss": "ce", "kappa": 0.0}
        return
    # METHOD.md s3, CIFAR: SGD 0.1 momentum 0.9 wd 5e-4 batch 128; PGD-10 of eps/4 (2/255 at 8/255).
    assert (s["optimizer"], s["lr"], s["momentum"], s["weight_decay"], s["batch_size"]) == ("sgd", 0.1, 0.9, 5e-4, 128)
    assert attack["steps"] == 10 and attack["alpha"] == pytest.approx(c["eps"] / 4)
    if c["eps"] == pytest.approx(8 / 255):
        assert attack["alpha"] == pytest.approx(2 / 255)
    epochs_milestones = {("cifar10", "preact-resnet18"): (140, [100, 120]), ("cifar10", "wrn-34-10"): (140, [100, 110]),
                         ("cifar100", "preact-resnet18"): (120, [100, 110])}
    assert (s["epochs"], s["milestones"]) == epochs_milestones[(c["dataset"], c["arch"])]
    assert sel["attack"]["steps"] == 10 and sel["attack"]["random_start"] == "uniform"
    assert sel["attack"]["eps"] == pytest.approx(8 / 255) and sel["attack"]["alpha"] == pytest.approx(2 / 255)


def test_paper_configs_match_method_md_constants():
    runs = load("paper").runs
    for run in runs:
        c, h = run.config, run.config["hparams"]
        _schedule_checks(c)
        if c["dataset"] != "mnist" and "Figure 3" not in run.labels:
            assert c["eps"] == pytest.approx(8 / 255)  # all CIFAR eps_train 8/255 (Figure 3 sweeps it)
        if c["method"] not in CAT:
            continue
        if c["dataset"] == "mnist":  # METHOD.md s1: MNIST defaults
            assert (h["beta"], h["b"], h["kappa"]) == (1.0, 0.3, 150.0)
            continue
        assert h["kappa"] == 50.0
        if "Table 8" not in run.labels:
            assert h["beta"] == 5.0
        if set(run.labels) <= {"Figure 3", "Figure 4"}:  # blocks that set no b: the CIFAR default
            assert h["b"] == 0.05
        if {"Table 2", "Table 3", "Table 7"} & set(run.labels):
            assert h["b"] in (0.05, 0.1, 0.3)
    assert {r.config["arch"] for r in runs} == {"smallcnn", "preact-resnet18", "wrn-34-10"}
    assert {r.config["dataset"] for r in runs} == {"mnist", "cifar10", "cifar100"}


def test_paper_cat_rows_of_tables_1_2_3_7_have_five_seeds():
    rows = defaultdict(set)
    for run in load("paper").runs:
        c = run.config
        for table in {"Table 1", "Table 2", "Table 3", "Table 7"} & set(run.labels):
            if c["method"] in CAT:
                key = (table, c["method"], c["dataset"], c["arch"], c["eps"], tuple(sorted(c["hparams"].items())))
                rows[key].add(c["seed"])
    assert len(rows) == 4 + 6 + 6 + 4  # Table 1: 2 CAT x 2 eps; Tables 2, 3: 2 x 3 b; Table 7: 2 x 2 b
    assert all(seeds == {0, 1, 2, 3, 4} for seeds in rows.values())


def test_eval_presets_of_the_paper_attacks():
    checked = set()
    for run in load("paper").runs:
        family = "mnist" if run.config["dataset"] == "mnist" else "cifar"
        test_eps = 0.3 if family == "mnist" else 8 / 255
        for name in run.attacks:
            p = eval_attack(family, name, test_eps)
            if name == "pgd20":
                assert (p.steps, p.alpha, p.random_start) == (20, 0.003 if family == "cifar" else 0.015, "none")
            if name == "cw" and family == "cifar":
                assert (p.steps, p.kappa, p.eps, p.alpha, p.loss) == (30, 50.0, 0.031, 0.003, "cw")
            checked.add((family, name))
    assert {("cifar", "pgd20"), ("mnist", "pgd20"), ("cifar", "cw"), ("cifar", "square"),
            ("mnist", "pgd100")} <= checked


def test_filters():
    runs = load("cifar10-preact").runs
    assert len(filter_runs(runs, [])) == len(runs)
    assert len(filter_runs(runs, ["method=at,trades"])) == 2 * 5  # Table 2 + Figure 3's four other eps
    assert len(filter_runs(runs, ["eps=16/255"])) == 3
    assert len(filter_runs(runs, ["label=Table 8"])) == 16
    assert len(filter_runs(runs, ["method=cat-cw", "b=0.05,0.1", "seed=3"])) == 2
    assert filter_runs(runs, ["method=at", "b=0.05"]) == []  # AT has no b
    paper = load("paper").runs
    assert len(filter_runs(paper, ["arch=wrn-34-10"])) == 34
    assert len(filter_runs(paper, ["dataset=mnist", "epochs=40"])) == 23
    with pytest.raises(UsageError, match="colour"):
        filter_runs(runs, ["colour=red"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        filter_runs(runs, ["method"])
    with pytest.raises(UsageError, match="eps"):
        filter_runs(runs, ["eps=abc"])


GOOD_BLOCK = 'methods = ["at"]\ndataset = "mnist-mini"\neps = [0.3]\nattacks = ["natural"]\n'


def test_a_users_file_loads_and_merges_n_examples(tmp_path):
    cat_block = 'methods = ["cat-cent"]\ndataset = "mnist-mini"\neps = ["3/10"]\nhparams = {b = [0.3, 0.1]}\n'
    path = tmp_path / "mine.toml"
    path.write_text('description = "mine"\ninclude = ["smoke"]\n'
                    f'[[runs]]\nlabel = "a"\n{GOOD_BLOCK}n_examples = 100\n'
                    f'[[runs]]\nlabel = "b"\n{GOOD_BLOCK}n_examples = 200\n'
                    f'[[runs]]\nlabel = "c"\n{cat_block}attacks = ["pgd20", "natural"]\nn_examples = 100\n'
                    f'[[runs]]\nlabel = "d"\n{cat_block}attacks = ["fgsm", "natural"]\n')
    suite = load_suite(str(path))
    assert (suite.name, suite.path, suite.description) == ("mine", path, "mine")
    assert suite.runs[:7] == load("smoke").runs  # the include first, unchanged (smoke trains 2 epochs)
    assert len(suite.runs) == 7 + 1 + 2  # AT and CATcent b=0.3, b=0.1 at the full schedule
    at, *cat = suite.runs[7:]
    assert at.labels == ("a", "b") and at.n_examples == 200 and at.attacks == ("natural",)
    assert [r.config["hparams"]["b"] for r in cat] == [0.3, 0.1]  # grid order as written
    for r in cat:
        assert r.labels == ("c", "d") and r.n_examples is None and r.attacks == ("pgd20", "natural", "fgsm")
        assert r.config["eps"] == 0.3 and r.config["schedule"]["epochs"] == 40


@pytest.mark.parametrize("text,key", [
    ('description = "x"\n[[runs]\n', "TOML"),
    (f'[[runs]]\n{GOOD_BLOCK}', "description"),
    (f'description = 3\n[[runs]]\n{GOOD_BLOCK}', "description"),
    (f'description = "x"\nrunz = 1\n[[runs]]\n{GOOD_BLOCK}', "runz"),
    ('description = "x"\n', "runs"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\nmethod = ["at"]\n{GOOD_BLOCK}', "method"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace('["at"]', '"at"'), "methods"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace('["at"]', '["at", "pgd"]'), "methods"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace("[0.3]", '["abc"]'), "eps"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace("[0.3]", '"8/255"'), "eps"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace("[0.3]", "[2]"), "eps"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\nseeds = "0"\n{GOOD_BLOCK}', "seeds"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace("mnist-mini", "svhn"), "dataset"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace('["natural"]', '["pgd7"]'), "attacks"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\n{GOOD_BLOCK}'.replace('attacks = ["natural"]', ""), "attacks"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\nhparams = {{b = 0.1}}\n{GOOD_BLOCK}', "'b'"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\nepochs = "two"\n{GOOD_BLOCK}', "epochs"),
    (f'description = "x"\n[[runs]]\nlabel = "T9"\nn_examples = 0\n{GOOD_BLOCK}', "n_examples"),
    (f'description = "x"\n[defaults]\nseeds = [0.5]\n[[runs]]\n{GOOD_BLOCK}', "seeds"),
    ('description = "x"\ninclude = ["nope"]\n', "include"),
    ('description = "x"\ninclude = ["bad.toml"]\n', "include"),
])
def test_malformed_suite_files_name_the_file_and_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_suite(str(path))
    message = str(err.value)
    assert "bad.toml" in message and key in message
    if "T9" in text:
        assert "[[runs]] block 1 (T9)" in message
    if "nope" in text:
        assert "cifar10-preact" in message  # lists the shipped suites


def test_include_cycle_and_unknown_suites(tmp_path):
    (tmp_path / "a.toml").write_text('description = "a"\ninclude = ["b.toml"]\n')
    (tmp_path / "b.toml").write_text('description = "b"\ninclude = ["a.toml"]\n')
    with pytest.raises(UsageError, match="cycle") as err:
        load_suite(str(tmp_path / "a.toml"))
    assert "include" in str(err.value) and "b.toml" in str(err.value)
    for name in ("nope", str(tmp_path / "missing.toml")):
        with pytest.raises(UsageError, match="smoke"):
            load_suite(name)
