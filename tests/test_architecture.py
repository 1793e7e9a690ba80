"""How the code is laid out: a method's own names stay in methods/, and what a method declares about
its health reaches every reader without their knowing the method."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cat_bench import methods, results
from cat_bench.methods import Method
from cat_bench.report.runs import RunRecord
from cat_bench.report.tables import health_flags, health_trend
from cat_bench.tracking import Trackers

PACKAGE = Path(__file__).resolve().parents[1] / "cat_bench"
CAT_NAMES = re.compile(r"\b(mask_mean|mask_flag|mask_std|loss_f|loss_g|MASK_HEALTHY)\b")


def test_no_module_outside_methods_names_cats_records():
    """CAT's history and trace keys and its healthy band are CAT's (methods/cat.py); the suite reads what a
    method declares (HEALTH_FLAGS, TRACE_KEY, TRACE_LABEL, HEALTH_BAND)."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
             for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.html")])
             for i, line in enumerate(path.read_text().splitlines(), start=1) if CAT_NAMES.search(line)]
    assert not found, "\n".join(found)


class Drifting(Method):
    """A method of this test alone: it traces a "drift" that must stay within [0.2, 0.8]."""

    name = "drifting"
    label = "Drifting"
    color = "#000000"
    HEALTH_FLAGS = {"drift_flag": "drift"}
    TRACE_KEY = "drift"
    TRACE_LABEL = "mean drift"
    HEALTH_BAND = (0.2, 0.8)

    @classmethod
    def check_health(cls, means):
        state = cls.health(means.get(cls.TRACE_KEY))
        return [] if state is None else [("drift_flag", state, f"drift {state}")]


@pytest.fixture
def drifting(monkeypatch):
    monkeypatch.setitem(methods.METHODS, Drifting.name, Drifting)
    return Drifting


def test_another_methods_health_flags_reach_results_report_and_trackers(drifting, tmp_path):
    history = [{"epoch": e, "train": {"drift": d}} for e, d in ((1, 0.5), (2, 0.1), (3, 0.95), (4, 0.05))]
    for row in history:
        for key, value, _ in drifting.check_health(row["train"]):
            row[key] = value
    assert [row.get("drift_flag") for row in history] == [None, "collapsed", "saturated", "collapsed"]

    assert results.health_columns()["drift_flag_epochs"] == "drift" and "drift_flag_epochs" in results.run_metrics()
    run = RunRecord(spec=None, path=tmp_path, state="done", identity={"method": "drifting"}, history=history)
    assert health_flags(run) == [
        {"flag": "drift collapsed", "detail": "mean drift outside [0.2, 0.8] in epoch(s) 2, 4"},
        {"flag": "drift saturated", "detail": "mean drift outside [0.2, 0.8] in epoch(s) 3"}]
    assert health_trend(run) == {"label": "mean drift", "means": [0.5, 0.1, 0.95, 0.05], "band": "[0.2, 0.8]"}
    trace = [{"epoch": 1, "batch": b, "step": b, "drift": d} for b, d in ((1, 0.5), (11, 0.9), (21, 0.5))]
    assert drifting.excursions(trace) == [("saturated", (1, 11), (1, 11), True)]

    logged = []
    trackers = Trackers([], tmp_path, 0)
    trackers.sinks = [type("Sink", (), {"log": lambda self, scalars, step: logged.append((scalars, step))})()]
    trackers.batch(trace[1])
    assert logged == [({"trace/drift": 0.9}, 11)]


@pytest.fixture
def pgd7(monkeypatch):
    """An attack of this test alone, registered as a contributor would add one: one registry entry."""
    from cat_bench import eval_attacks
    from cat_bench.presets import AttackPreset

    attack = eval_attacks.EvalAttack("pgd7", "PGD-7", {"mnist": AttackPreset(
        "pgd", steps=7, alpha=0.05, source="a test's attack: CE, 7 steps of 0.05")}, multi_step=True)
    monkeypatch.setitem(eval_attacks.ATTACKS, attack.name, attack)
    return attack


def test_a_new_attack_is_one_registry_entry(pgd7, tmp_path, capsys):
    """Registered in the test alone, it is listed, evaluated, ordered in the results and labelled in the report."""
    from cat_bench import records
    from cat_bench.cli import main
    from cat_bench.config import resolve_config
    from cat_bench.results import collect
    from cat_bench.settings import Settings
    from cat_bench.train import train

    assert main(["list", "attacks"]) == 0
    assert "mnist  pgd7        a test's attack" in capsys.readouterr().out
    config = resolve_config("natural", "mnist-mini", 0.3, epochs=1, n_train=100, batch_size=50, select_n=20)
    run = tmp_path / "results" / "runs" / records.run_name(config)
    train(config, run, Settings("cpu", progress=False), log=lambda m: None)
    assert main(["eval", str(run), "--attacks", "natural,pgd7,pgd20", "--n-examples", "20", "--no-progress"]) == 0
    settings = records.read_json(run / records.EVAL)["attacks"]["pgd7"]["settings"]
    assert (settings["steps"], settings["alpha"], settings["source"]) == (7, 0.05, pgd7.presets["mnist"].source)
    df = collect([run])
    attacks = [c for c in df.columns if c in ("natural", "pgd20", "pgd7")]
    assert attacks == ["natural", "pgd20", "pgd7"]  # the registry's order, the new entry last
    assert main(["report", "--results", str(tmp_path / "results")]) == 0
    page = (tmp_path / "results" / "report" / "index.html").read_text()
    assert re.search(r'data-cell="leaderboard/mnist-mini/column/pgd7"[^>]*>PGD-7</th>', page)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The cat_bench modules `path` (module `name`) imports, at the top or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("cat_bench"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative, within a package
            package = name.split(".")[: len(name.split(".")) - node.level + (path.stem == "__init__")]
            base = ".".join(package + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cat_bench")}
    return (found & modules) - {name}


def test_imports_flow_one_way():
    """No circle in the import graph of cat_bench and methods/ (installed as cat_bench.methods), counting
    the imports inside functions too: each layer imports only the layers below it."""
    files = {}
    for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "methods").glob("*.py")]:
        parts = (["cat_bench", "methods"] if path.parent.name == "methods" and path.parent.parent == PACKAGE.parent
                 else list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])) + [path.stem]
        files[".".join(parts[:-1] if path.stem == "__init__" else parts)] = path
    graph = {name: _imports(path, name, set(files)) for name, path in files.items()}
    state: dict[str, int] = {}

    def circle_from(module: str, stack: list[str]) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if not state.get(target) and (found := circle_from(target, stack)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if not state.get(module):
            circle = circle_from(module, [])
            assert circle is None, " -> ".join(circle)
    assert graph["cat_bench.cli"] and "cat_bench.cli" not in set().union(*graph.values())


def test_a_family_without_a_record_or_a_default_is_refused_by_name(monkeypatch):
    """No silent fallback to MNIST's values: a family needs its record (its clip rule) and each method's
    hyperparameter defaults."""
    from cat_bench.errors import UsageError
    from cat_bench.methods import resolve_hparams
    from cat_bench.presets import FAMILIES, Family, clips

    with pytest.raises(UsageError, match="unknown dataset family 'svhn'; known: mnist, cifar"):
        clips("svhn", "paper")
    monkeypatch.setitem(FAMILIES, "svhn", Family("svhn", "SVHN", paper_clips=True, evaluation_note="clipped"))
    assert clips("svhn", "paper") and resolve_hparams("natural", "svhn", {}) == {}
    with pytest.raises(UsageError, match=r"method 'trades' has no default for dataset family 'svhn' of its "
                                         r"hyperparameter\(s\) beta"):
        resolve_hparams("trades", "svhn", {})
