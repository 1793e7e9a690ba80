"""Suite files: the shipped suites load, expand to the runs the paper needs, and match docs/method.md s3-s5."""

from __future__ import annotations

import functools
from collections import defaultdict

import pytest

from cat_bench.errors import UsageError
from cat_bench.eval_attacks import eval_attack
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
COUNTS = {"smoke": 7, "mnist": MNIST, "cifar10-preact": PREACT, "cifar10-wrn": TABLE2, "cifar100": 1 + 2 * 2 * 5,
          "mnist-fidelity": 2 * 2 + 2,  # CATcw, CATcent x the code's and the batch-summed Eq. 14; 2 more seeds of CATcw (code)
          "cifar10-awp": 2 + 2}  # AT and AT-AWP on PreAct ResNet-18; TRADES and TRADES-AWP on WRN-34-10


def test_shipped_suites_load_with_the_run_counts_their_blocks_imply():
    assert set(SUITES) == {*COUNTS, "paper"}
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
        assert (c["dataset"], c["eps"], c["seed"], c["n_train"]) == ("mnist-mini", 0.1, 0, 1500)
        assert (c["schedule"]["name"], c["schedule"]["epochs"], c["schedule"]["batch_size"]) == ("uniform", 2, 50)
        assert c["selection"]["n"] == 300
        assert r.attacks == ("natural", "fgsm", "pgd20") and r.n_examples == 500


def test_committed_smoke_records_are_the_suite_and_every_method_leaves_chance_level():
    """results/smoke holds one finished run per smoke run (the suite's current settings) and each learned."""
    import json
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results" / "smoke" / "runs"
    runs = load("smoke").runs
    assert sorted(p.name for p in results.iterdir()) == sorted(r.name for r in runs)
    for r in runs:
        natural = json.loads((results / r.name / "eval.json").read_text())["attacks"]["natural"]["accuracy"]
        assert natural > 0.3, (r.config["method"], natural)  # chance is 0.1


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


# Each method's protocol, literally as its official script writes it (read with the search tool):
# (optimizer, lr, momentum, weight decay, batch, epochs, milestones = completed epochs before each /10,
# PGD steps, PGD step or None for CAT's eps/20, selection rule, augmentation, normalisation).
SCRIPTS = {
    # Calibrated-adversarial-training Codes/Train_MNIST.py: `if t == 30` after 0-based epoch t.
    ("cat", "mnist", "smallcnn"): ("adam", 1e-3, 0.0, 0.0, 100, 40, [31], 20, None, "nat+rob", "none", False),
    # Codes/Train_CIFAR10.py / Train_CIFAR100.py: lr_schedule(epoch), t < 100, t < 120 (110 for WRN, CIFAR-100).
    ("cat", "cifar10", "preact-resnet18"): ("sgd", 0.1, 0.9, 5e-4, 128, 140, [100, 120], 10, 2 / 255, "nat+rob",
                                            "crop-flip-reflect", True),
    ("cat", "cifar10", "wrn-34-10"): ("sgd", 0.1, 0.9, 5e-4, 128, 140, [100, 110], 10, 2 / 255, "nat+rob",
                                      "crop-flip-reflect", True),
    ("cat", "cifar100", "preact-resnet18"): ("sgd", 0.1, 0.9, 5e-4, 128, 120, [100, 110], 10, 2 / 255, "nat+rob",
                                             "crop-flip-reflect", True),
    # robust_overfitting train_cifar.py: 200 epochs, piecewise t/200 < 0.5, < 0.75; model_best on test robust acc.
    ("at", "cifar10", "preact-resnet18"): ("sgd", 0.1, 0.9, 5e-4, 128, 200, [100, 150], 10, 2 / 255, "rob",
                                           "crop-flip-reflect", True),
    ("at", "cifar10", "wrn-34-10"): ("sgd", 0.1, 0.9, 5e-4, 128, 200, [100, 150], 10, 2 / 255, "rob",
                                     "crop-flip-reflect", True),
    ("at", "cifar100", "preact-resnet18"): ("sgd", 0.1, 0.9, 5e-4, 128, 200, [100, 150], 10, 2 / 255, "rob",
                                            "crop-flip-rotate15", True),
    # mnist_challenge config.json: Adam 1e-4 (train.py), batch 50, k 40, a 0.01, 100000 steps.
    ("at", "mnist", "madry-cnn"): ("adam", 1e-4, 0.0, 0.0, 50, 91, [], 40, 0.01, "final", "none", False),
    # TRADES train_trades_mnist.py: adjust_learning_rate epoch >= 55, 75, 90 (1-based).
    ("trades", "mnist", "trades-smallcnn"): ("sgd", 0.01, 0.9, 0.0, 128, 100, [54, 74, 89], 40, 0.01, "final",
                                             "none", False),
    # train_trades_cifar10.py: 76 epochs, epoch >= 75, 90, 100 (1-based), --wd 2e-4, step 0.007.
    ("trades", "cifar10", "preact-resnet18"): ("sgd", 0.1, 0.9, 2e-4, 128, 76, [74, 89, 99], 10, 0.007, "final",
                                               "crop-flip", False),
    ("trades", "cifar10", "wrn-34-10"): ("sgd", 0.1, 0.9, 2e-4, 128, 76, [74, 89, 99], 10, 0.007, "final",
                                         "crop-flip", False),
    # MART train_resnet.py (lr 0.01, wd 3.5e-3, 120 epochs) and train_wideresnet.py (lr 0.1, wd 7e-4, 90).
    ("mart", "cifar10", "preact-resnet18"): ("sgd", 0.01, 0.9, 3.5e-3, 128, 120, [74, 89, 99], 10, 0.007, "final",
                                             "crop-flip", False),
    ("mart", "cifar10", "wrn-34-10"): ("sgd", 0.1, 0.9, 7e-4, 128, 90, [74, 89, 99], 10, 0.007, "final",
                                       "crop-flip", False),
    # FAT_for_TRADES.py: 85 epochs, epoch >= 75, 90 (1-based), wd 2e-4.
    ("fat", "cifar10", "preact-resnet18"): ("sgd", 0.1, 0.9, 2e-4, 128, 85, [74, 89], 10, 0.007, "final",
                                            "crop-flip", False),
    ("fat", "cifar10", "wrn-34-10"): ("sgd", 0.1, 0.9, 2e-4, 128, 85, [74, 89], 10, 0.007, "final",
                                      "crop-flip", False),
}


def _schedule_checks(c: dict) -> None:
    s, sel, attack = c["schedule"], c["selection"], c["train_attack"]
    assert (sel["on"], sel["n"], c["n_train"], c["protocol"], s["name"]) == ("test", None, None, "paper", "official")
    family = "cat" if c["method"] in CAT else c["method"]
    (opt, lr, momentum, wd, batch, epochs, milestones, steps, step, rule, augment,
     normalize) = SCRIPTS[(family, c["dataset"], c["arch"])]
    assert (s["optimizer"], s["lr"], s["weight_decay"], s["batch_size"], s["epochs"], s["milestones"]) == (
        opt, lr, wd, batch, epochs, milestones)
    assert opt == "adam" or s["momentum"] == momentum
    assert (attack["steps"], sel["rule"], s["augment"], s["normalize"]) == (steps, rule, augment, normalize)
    assert attack["alpha"] == pytest.approx(c["eps"] / 20 if step is None else step)
    assert s["lr_per_iteration"] == (family == "at" and c["dataset"] != "mnist")
    if family in ("trades", "mart", "fat"):
        assert attack["eps"] == round(c["eps"], 3)  # the scripts' --epsilon 0.031 for 8/255
    if c["dataset"] == "mnist":  # docs/method.md s3-s4: selection PGD-20 at 0.3, no clip under the paper protocol
        assert c["eps"] in (0.3, 0.4) and attack["clip"] == (family != "cat")
        assert sel["attack"] == {"kind": "pgd", "steps": 20, "alpha": 0.015, "eps": 0.3, "random_start": "none",
                                 "loss": "ce", "kappa": 0.0, "clip": False}
        assert (s["max_steps"], s["train_skip"]) == ((100_000, 5000) if family == "at" else (None, 0))
        return
    assert attack["clip"] and sel["attack"]["clip"]
    assert sel["attack"]["steps"] == 10 and sel["attack"]["random_start"] == "uniform"
    assert sel["attack"]["alpha"] == pytest.approx(2 / 255)
    # CAT selects at 8/255 whatever eps_train (Train_CIFAR10.py); Rice et al. at the training eps.
    assert sel["attack"]["eps"] == pytest.approx(c["eps"] if family == "at" else 8 / 255)


def test_paper_configs_match_the_official_scripts():
    runs = load("paper").runs
    for run in runs:
        c, h = run.config, run.config["hparams"]
        _schedule_checks(c)
        if c["dataset"] != "mnist" and "Figure 3" not in run.labels:
            assert c["eps"] == pytest.approx(8 / 255)  # all CIFAR eps_train 8/255 (Figure 3 sweeps it)
        if c["method"] == "mart":
            assert h["beta"] == (6.0 if c["arch"] == "wrn-34-10" else 5.0)
        if c["method"] in ("trades", "fat"):
            assert h["beta"] == (1.0 if c["dataset"] == "mnist" else 6.0)
        if c["method"] not in CAT:
            continue
        assert h["g_kl_reduction"] == "batchmean"  # (1.0 / batch_size) * KLDivLoss(sum), both scripts
        if c["dataset"] == "mnist":  # Train_MNIST.py
            assert (h["beta"], h["b"], h["kappa"], h["rs_scale"]) == (1.0, 0.3, 150.0, 0.1)
            continue
        assert h["kappa"] == 50.0 and h["rs_scale"] is None
        if "Table 8" not in run.labels:
            assert h["beta"] == 5.0
        if set(run.labels) <= {"Figure 3", "Figure 4"}:  # blocks that set no b: the CIFAR default
            assert h["b"] == 0.05
        if {"Table 2", "Table 3", "Table 7"} & set(run.labels):
            assert h["b"] in (0.05, 0.1, 0.3)
    assert {r.config["arch"] for r in runs} == {"smallcnn", "madry-cnn", "trades-smallcnn", "preact-resnet18",
                                                "wrn-34-10"}
    assert {r.config["dataset"] for r in runs} == {"mnist", "cifar10", "cifar100"}


def test_uniform_schedule_is_one_named_option():
    """--schedule uniform: every method takes CAT's protocol, and the run is another run (another hash)."""
    block = 'methods = ["at", "trades"]\ndataset = "cifar10"\neps = ["8/255"]\nattacks = ["natural"]\n'
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.toml"
        path.write_text(f'description = "u"\n[[runs]]\n{block}schedule = "uniform"\n[[runs]]\n{block}')
        runs = load_suite(str(path)).runs
    uniform, official = runs[:2], runs[2:]
    for u, o in zip(uniform, official):
        assert u.name != o.name and u.config["schedule"]["name"] == "uniform"
        assert (u.config["schedule"]["epochs"], u.config["schedule"]["milestones"]) == (140, [100, 120])
        assert u.config["selection"]["rule"] == "nat+rob"
    assert [o.config["schedule"]["epochs"] for o in official] == [200, 76]


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
    assert len(filter_runs(paper, ["dataset=mnist", "epochs=40"])) == 20  # CAT's 40; AT 91, TRADES 100 epochs
    assert len(filter_runs(paper, ["protocol=paper"])) == len(paper)
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


def test_a_suite_given_as_a_folder_or_with_a_toml_syntax_error_is_named(tmp_path, monkeypatch):
    from cat_bench.errors import UsageError
    from cat_bench.suite import load_suite

    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid").mkdir()
    with pytest.raises(UsageError, match=r"--suite 'grid' is a folder; give a suite file"):
        load_suite("grid")
    (tmp_path / "bad.toml").write_text('description = "x"\n[defaults\nseeds = [0]\n')
    with pytest.raises(UsageError, match=r"bad.toml: not a valid TOML file: .*line 2"):
        load_suite("bad.toml")
