"""Evaluation (docs/method.md s4): eval.json's content, per-attack resume, kills, AutoAttack's per-sub-attack
checkpoints, gradient-masking flags and bad inputs.

One tiny real run (natural, mnist-mini, 1 epoch on 500 images) is trained once for the module and
evaluated with natural, FGSM and PGD-20 on 100 test images; tests that write to a run work on a copy.
It trains with batch size 10 (50 Adam steps): with MNIST's preset 100 (5 steps) SmallCNN still predicts
one class for every image, which would make "PGD-20 accuracy <= natural accuracy" hold trivially.
pyautoattack's standard budgets (100 APGD/FAB iterations, 5000 Square queries) take minutes on CPU
for a few points that survive, so the tests of run_autoattack's checkpointing, which need survivors,
shrink those budgets (`fast_autoattack`): they check cat-bench's orchestration, not the attacks' strength.
The end-to-end Square/AutoAttack evaluation uses the standard budgets on the (non-robust) real run.
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cat_bench.evaluate as ev
from cat_bench import records
from cat_bench.attacks import run_autoattack
from cat_bench.data import load_split
from cat_bench.errors import UsageError
from cat_bench.evaluate import AUTOATTACK_STANDARD, evaluate, masking_flags
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train

CPU = torch.device("cpu")
FIRST = ("natural", "fgsm", "pgd20")
N = 100  # test examples of the main evaluation


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluate") / "run"
    config = resolve_config("natural", "mnist-mini", 0.3, epochs=1, n_train=500, select_n=100, batch_size=10)
    train(config, run, Settings("cpu", progress=False), log=quiet)
    return run


@pytest.fixture(scope="module")
def evaluated(trained_run):
    """The module's run after `evaluate(run, "natural,fgsm,pgd20", n_examples=100)`: (run, result, log lines)."""
    logs: list[str] = []
    result = evaluate(trained_run, ",".join(FIRST), n_examples=N, device=CPU, progress=False, log=logs.append)
    return trained_run, result, logs


def copy_run(src, dst, keep_eval=True):
    """A copy of a run directory to write to, with or without its eval.json."""
    shutil.copytree(src, dst)
    if not keep_eval:
        (dst / records.EVAL).unlink(missing_ok=True)
    return dst


def leftovers(run):
    """Temporary files of the atomic writes (".<name>.<random>.tmp") left anywhere in a run directory."""
    return sorted(p.name for p in run.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp"))


def logged(logs, name, text):
    return any(m.startswith(f"{name}:") and text in m for m in logs)


# ---------------------------------------------------------------------------------------------
# 1. A real evaluation and its record


def test_eval_json_holds_accuracies_and_full_settings(evaluated):
    run, result, logs = evaluated
    on_disk = json.loads((run / records.EVAL).read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert on_disk["key"] == {"checkpoint": records.BEST, "epoch": 1, "n_examples": N, "eps": 0.3}
    assert set(on_disk["attacks"]) == set(FIRST)
    for name, entry in on_disk["attacks"].items():
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert round(entry["accuracy"] * N) == pytest.approx(entry["accuracy"] * N)  # a count out of 100
        assert entry["seconds"] >= 0
        s = entry["settings"]
        assert s["name"] == name and s["eps"] == 0.3 and s["source"]
        assert logged(logs, name, "%")
    natural, fgsm, pgd20 = (on_disk["attacks"][n]["settings"] for n in FIRST)
    assert natural["kind"] == "natural"
    assert fgsm["kind"] == "pgd" and fgsm["steps"] == 1 and fgsm["alpha"] == fgsm["eps"] == 0.3
    assert fgsm["random_start"] == "none" and fgsm["loss"] == "ce"
    assert pgd20["kind"] == "pgd" and pgd20["steps"] == 20 and pgd20["alpha"] == 0.015
    assert pgd20["random_start"] == "none" and pgd20["loss"] == "ce"
    acc = {n: e["accuracy"] for n, e in on_disk["attacks"].items()}
    assert acc["natural"] >= 0.3  # the run learned something (~60%), so the next line is not vacuous
    assert acc["pgd20"] < acc["natural"]
    assert acc["fgsm"] <= acc["natural"]
    assert on_disk["flags"] == masking_flags(acc)
    assert on_disk["provenance"]["torch"] == torch.__version__
    assert leftovers(run) == []


# ---------------------------------------------------------------------------------------------
# 2. Resume


def test_rerun_skips_finished_attacks_and_adds_the_new_one(evaluated, tmp_path):
    src, first, _ = evaluated
    run = copy_run(src, tmp_path / "run")
    logs: list[str] = []
    result = evaluate(run, "natural,fgsm,pgd20,pgd100", n_examples=N, device=CPU, progress=False, log=logs.append)
    for name in FIRST:
        assert logged(logs, name, "already evaluated")
        assert result["attacks"][name] == first["attacks"][name]  # seconds included: not rerun
    assert not logged(logs, "pgd100", "already evaluated")
    pgd100 = result["attacks"]["pgd100"]
    assert 0.0 <= pgd100["accuracy"] <= result["attacks"]["natural"]["accuracy"]
    assert pgd100["settings"]["steps"] == 100 and pgd100["settings"]["alpha"] == 0.015
    assert pgd100["settings"]["eps"] == 0.3
    assert json.loads((run / records.EVAL).read_text()) == json.loads(json.dumps(result))


@pytest.mark.parametrize("change", [{"n_examples": 50}, {"n_examples": N, "eps": 0.2}],
                         ids=["n_examples", "eps"])
def test_another_evaluation_key_keeps_the_earlier_evaluation(evaluated, tmp_path, change):
    """another --eps or --n-examples adds an evaluation beside the protocol one, which stays on top of
    eval.json (what tables and compare read); none is lost, and going back reuses it."""
    src, first, _ = evaluated
    run = copy_run(src, tmp_path / "run")
    logs: list[str] = []
    result = evaluate(run, "natural", device=CPU, progress=False, log=logs.append, **change)
    assert not any("already evaluated" in m for m in logs)
    assert set(result["attacks"]) == {"natural"}  # what this evaluation ran, returned
    assert result["key"]["n_examples"] == change["n_examples"]
    assert result["key"]["eps"] == change.get("eps", 0.3)
    stored = json.loads((run / records.EVAL).read_text())
    assert stored["key"] == first["key"] and stored["attacks"] == first["attacks"]  # the protocol's, on top
    assert [e["key"] for e in stored["earlier"]] == [result["key"]]
    from cat_bench.results import run_row

    assert run_row(run)["n_examples"] == N and "pgd20" in run_row(run)  # tables read the protocol evaluation

    logs.clear()
    back = evaluate(run, ",".join(FIRST), n_examples=N, device=CPU, progress=False, log=logs.append)
    assert all(logged(logs, name, "already evaluated") for name in FIRST)
    assert back["key"] == first["key"] and back["attacks"] == first["attacks"]
    assert [e["key"] for e in back["earlier"]] == [result["key"]]


def test_unfinished_run_is_refused_unless_asked(trained_run, tmp_path):
    """a run without `done` is not evaluated silently; --unfinished evaluates it on purpose."""
    run = copy_run(trained_run, tmp_path / "run", keep_eval=False)
    (run / records.DONE).unlink()
    with pytest.raises(UsageError, match=r"has not finished training \(1 epoch\(s\) recorded.*--resume --out"):
        evaluate(run, "natural", n_examples=10, device=CPU, progress=False, log=quiet)
    assert not (run / records.EVAL).exists()
    result = evaluate(run, "natural", n_examples=10, device=CPU, progress=False, log=quiet, unfinished=True)
    assert result["key"]["n_examples"] == 10 and (run / records.EVAL).exists()


# ---------------------------------------------------------------------------------------------
# 3. A killed evaluation


@pytest.mark.parametrize("where", ["in the attack", "while writing eval.json"])
def test_killed_evaluation_keeps_finished_attacks_and_reruns_the_rest(trained_run, tmp_path, monkeypatch, where):
    run = copy_run(trained_run, tmp_path / "run", keep_eval=False)
    calls = {"n": 0}

    def kill_on_second(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return wrapper

    if where == "in the attack":
        monkeypatch.setattr(ev, "correct_under", kill_on_second(ev.correct_under))
    else:  # the second eval.json write (after fgsm) dies after its temp file is written, before the rename
        real_replace = records.os.replace
        into_eval = kill_on_second(real_replace)
        monkeypatch.setattr(records.os, "replace", lambda src, dst: (into_eval if str(dst).endswith(records.EVAL)
                                                                     else real_replace)(src, dst))
    with pytest.raises(KeyboardInterrupt):
        evaluate(run, ",".join(FIRST), n_examples=20, device=CPU, progress=False, log=quiet)
    monkeypatch.undo()

    stored = json.loads((run / records.EVAL).read_text())  # valid JSON
    assert set(stored["attacks"]) == {"natural"}
    assert leftovers(run) == []

    logs: list[str] = []
    result = evaluate(run, ",".join(FIRST), n_examples=20, device=CPU, progress=False, log=logs.append)
    assert logged(logs, "natural", "already evaluated")
    assert not logged(logs, "fgsm", "already evaluated") and not logged(logs, "pgd20", "already evaluated")
    assert result["attacks"]["natural"] == stored["attacks"]["natural"]
    assert set(result["attacks"]) == set(FIRST)
    assert leftovers(run) == []


# ---------------------------------------------------------------------------------------------
# 4. AutoAttack and Square, checkpointed per sub-attack


@pytest.fixture
def fast_autoattack(monkeypatch):
    """pyautoattack's standard version with tiny budgets (10 APGD/FAB iterations, 100 Square queries)."""
    import pyautoattack

    class FastAutoAttack(pyautoattack.AutoAttack):
        def _set_version(self, version="standard"):
            super()._set_version(version)
            for apgd in (self.apgd, self.apgd_targeted):
                apgd.n_iter, apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 10, 2, 1, 1
            self.fab.n_iter = 10
            self.square.n_queries = 100

    monkeypatch.setattr(pyautoattack, "AutoAttack", FastAutoAttack)  # run_autoattack imports it at call time


@pytest.fixture(scope="module")
def linear_setup():
    """A nearest-class-mean linear classifier on 14x14 mnist-mini (~75% clean on these 20 test images)."""
    x, y = load_split("mnist-mini", "train")
    x = F.avg_pool2d(x.float() / 255, 2)
    means = torch.stack([x[y == c].mean(0).flatten() for c in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(196, 10)).eval()
    with torch.no_grad():
        model[1].weight.copy_(means)
        model[1].bias.copy_(-0.5 * (means ** 2).sum(1))
    x_test, y_test = load_split("mnist-mini", "test")
    return model, F.avg_pool2d(x_test[:400:20].float() / 255, 2), y_test[:400:20]


def aa(model, x, y, attacks, robust, calls, **kwargs):
    return run_autoattack(model, x, y, 0.1, attacks, robust, batch_size=len(y), seed=0, device=CPU,
                          on_attack_done=lambda name, flags: calls.append((name, flags.clone())), **kwargs)


def test_run_autoattack_checkpoints_after_each_subattack_and_resumes(fast_autoattack, linear_setup, tmp_path):
    model, x, y = linear_setup
    clean = model(x).argmax(1) == y
    handlers = list(logging.getLogger("auto-attack").handlers)
    start = torch.ones(len(y), dtype=torch.bool)
    calls: list = []
    final = aa(model, x, y, AUTOATTACK_STANDARD, start, calls, log_file=tmp_path / "aa.log")
    assert [name for name, _ in calls] == AUTOATTACK_STANDARD
    assert start.all()  # the caller's flags are not modified
    previous = start
    for _, flags in calls:
        assert flags.dtype == torch.bool and not (flags & ~previous).any()  # only ever True -> False
        previous = flags
    assert not (calls[0][1] & ~clean).any()  # misclassified clean points are never robust
    assert torch.equal(final, calls[-1][1])
    counts = [int(f.sum()) for _, f in calls]
    assert 0 < counts[-1] < counts[0] < int(clean.sum())  # eps 0.1 breaks points at more than one stage
    assert "running apgd-ce" in (tmp_path / "aa.log").read_text()
    assert logging.getLogger("auto-attack").handlers == handlers  # its file handler is removed again

    after_first = calls[0][1]
    resumed_calls: list = []
    resumed = aa(model, x, y, AUTOATTACK_STANDARD[1:], after_first.clone(), resumed_calls)
    assert [name for name, _ in resumed_calls] == AUTOATTACK_STANDARD[1:]
    assert torch.equal(resumed, final)
    for (_, a), (_, b) in zip(calls[1:], resumed_calls):
        assert torch.equal(a, b)


def test_run_autoattack_in_batches_gives_the_flags_of_one_reference_call_and_shows_progress(
        fast_autoattack, linear_setup, monkeypatch):
    import pyautoattack

    import cat_bench.attacks

    model, x, y = linear_setup
    reference = pyautoattack.AutoAttack(model, norm="Linf", eps=0.1, version="standard", device=CPU, seed=0)
    reference.attacks_to_run = list(AUTOATTACK_STANDARD)
    _, y_adv = reference.run_standard_evaluation(x, y, batch_size=6)
    monkeypatch.setattr(cat_bench.attacks, "AUTOATTACK_LOG_EVERY", 0.0)  # a line after every batch
    lines: list[str] = []
    flags = run_autoattack(model, x, y, 0.1, AUTOATTACK_STANDARD, torch.ones(len(y), dtype=torch.bool), batch_size=6,
                           seed=0, device=CPU, on_attack_done=lambda name, f: None, log=lines.append)
    assert torch.equal(flags, y_adv == y)
    assert 0 < int(flags.sum()) < len(y)
    first = [line for line in lines if line.startswith("  apgd-ce: ")]
    assert len(first) >= 2 and "left)" in first[0] and "examples attacked, robust accuracy so far" in first[0]
    assert re.search(r"apgd-ce: (\d+)/\1 examples attacked", first[-1])


def test_run_autoattack_leaves_broken_points_alone(fast_autoattack, linear_setup, monkeypatch):
    import pyautoattack

    model, x, y = linear_setup
    ran = []
    real = pyautoattack.AutoAttack.run_standard_evaluation

    def spy(self, x_, y_, **kwargs):
        ran.append((list(self.attacks_to_run), len(y_)))
        return real(self, x_, y_, **kwargs)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    robust = torch.zeros(len(y), dtype=torch.bool)
    kept = (model(x).argmax(1) == y).nonzero().flatten()[:3]  # three examples classified correctly
    robust[kept] = True
    calls: list = []
    final = aa(model, x, y, ["apgd-ce", "square"], robust, calls)
    assert [name for name, _ in calls] == ["apgd-ce", "square"]
    assert not (final & ~robust).any()
    assert ran[0] == (["apgd-ce"], 3)  # only the points still robust are attacked
    assert all(n <= 3 for _, n in ran)

    ran.clear()
    calls.clear()
    final = aa(model, x, y, ["apgd-ce", "square"], torch.zeros(len(y), dtype=torch.bool), calls)
    assert ran == [] and [name for name, _ in calls] == ["apgd-ce", "square"] and not final.any()


def _fake_autoattack(record, broken, kill_after=None):
    """Stand-in for run_autoattack: breaks point i at sub-attack `broken[i]` and reports each sub-attack."""
    def fake(model, x, y, eps, attacks, robust, *, on_attack_done, **kwargs):
        record.append((list(attacks), robust.clone()))
        robust = robust.clone()
        for name in attacks:
            for i, at in broken.items():
                if at == name:
                    robust[i] = False
            on_attack_done(name, robust)
            if name == kill_after:
                raise KeyboardInterrupt
        return robust
    return fake


def test_evaluate_autoattack_resumes_after_the_finished_subattacks(trained_run, tmp_path, monkeypatch):
    run = copy_run(trained_run, tmp_path / "run", keep_eval=False)
    broken = {0: "apgd-ce", 1: "apgd-ce", 2: "apgd-t", 3: "square"}
    state = run / "eval_state" / "autoattack.pt"

    record: list = []
    monkeypatch.setattr(ev, "run_autoattack", _fake_autoattack(record, broken, kill_after="apgd-ce"))
    with pytest.raises(KeyboardInterrupt):
        evaluate(run, "autoattack", n_examples=10, batch_size=10, device=CPU, progress=False, log=quiet)
    assert record[0][0] == AUTOATTACK_STANDARD and record[0][1].all()
    assert state.is_file() and not (run / records.EVAL).exists()
    saved = records.load_checkpoint(state)
    assert saved["finished"] == ["apgd-ce"] and saved["robust"].tolist() == [False, False] + [True] * 8

    record.clear()
    monkeypatch.setattr(ev, "run_autoattack", _fake_autoattack(record, broken))
    logs: list[str] = []
    result = evaluate(run, "autoattack", n_examples=10, batch_size=10, device=CPU, progress=False, log=logs.append)
    assert len(record) == 1
    assert record[0][0] == AUTOATTACK_STANDARD[1:]  # apgd-ce is not run again
    assert record[0][1].tolist() == [False, False] + [True] * 8  # ... and its flags are carried over
    assert any("resuming after apgd-ce" in m for m in logs)
    entry = result["attacks"]["autoattack"]
    assert entry["accuracy"] == pytest.approx(0.6)
    assert entry["settings"]["subattacks"] == AUTOATTACK_STANDARD
    assert entry["settings"]["library"] == "pyautoattack" and entry["settings"]["norm"] == "Linf"
    assert not state.exists() and leftovers(run) == []


def test_evaluate_autoattack_ignores_a_state_from_another_checkpoint(trained_run, tmp_path, monkeypatch):
    run = copy_run(trained_run, tmp_path / "run", keep_eval=False)
    broken = {0: "apgd-ce"}
    record: list = []
    monkeypatch.setattr(ev, "run_autoattack", _fake_autoattack(record, broken, kill_after="apgd-ce"))
    with pytest.raises(KeyboardInterrupt):
        evaluate(run, "autoattack", n_examples=10, batch_size=10, device=CPU, progress=False, log=quiet)
    best = records.load_checkpoint(run / records.BEST)  # training went on: a later epoch is now the best
    records.save_checkpoint(run / records.BEST, {**best, "epoch": best["epoch"] + 1})

    record.clear()
    monkeypatch.setattr(ev, "run_autoattack", _fake_autoattack(record, {}))
    logs: list[str] = []
    evaluate(run, "autoattack", n_examples=10, batch_size=10, device=CPU, progress=False, log=logs.append)
    assert record[0][0] == AUTOATTACK_STANDARD and record[0][1].all()  # from scratch
    assert not any("resuming" in m for m in logs)


def test_square_and_autoattack_end_to_end(trained_run, tmp_path):
    """The real pyautoattack path through evaluate, standard budgets: quick only because the naturally
    trained run loses every point within a few APGD steps / Square queries at eps 0.3 (a run with points
    that survive costs 5000 Square queries each, minutes on CPU)."""
    run = copy_run(trained_run, tmp_path / "run", keep_eval=False)
    result = evaluate(run, "natural,square,autoattack", n_examples=20, batch_size=20, device=CPU, progress=False,
                      log=quiet)
    acc = {n: e["accuracy"] for n, e in result["attacks"].items()}
    assert 0.0 <= acc["autoattack"] <= acc["natural"] and 0.0 <= acc["square"] <= acc["natural"]
    square = result["attacks"]["square"]["settings"]
    assert square["subattacks"] == ["square"] and square["steps"] == 5000 and square["eps"] == 0.3
    assert square["seed"] == 0 and square["norm"] == "Linf"
    assert result["attacks"]["autoattack"]["settings"]["subattacks"] == AUTOATTACK_STANDARD
    assert acc["natural"] > 0 and "running apgd-ce" in (run / "autoattack.log").read_text()
    assert list((run / "eval_state").iterdir()) == [] and leftovers(run) == []


# ---------------------------------------------------------------------------------------------
# 5. Gradient-masking flags


@pytest.mark.parametrize("acc, expected, mentions", [
    ({"natural": 0.9, "fgsm": 0.3, "pgd20": 0.5}, ["multi-step weaker than single-step"], "pgd20"),
    ({"fgsm": 0.3, "cw": 0.35}, ["multi-step weaker than single-step"], "cw"),
    ({"fgsm": 0.5, "pgd20": 0.3, "pgd100": 0.4}, ["more steps weaker"], "pgd100"),
    ({"natural": 0.9, "pgd20": 0.4, "autoattack": 0.35, "square": 0.3}, ["black-box stronger than white-box"],
     "autoattack"),
    ({"fgsm": 0.3, "pgd20": 0.5, "pgd100": 0.6},
     ["multi-step weaker than single-step", "multi-step weaker than single-step", "more steps weaker"], "pgd100"),
    ({"natural": 0.9, "fgsm": 0.5, "pgd20": 0.4, "pgd100": 0.38, "cw": 0.39, "square": 0.45, "autoattack": 0.36},
     [], None),
    ({"fgsm": 0.4, "pgd20": 0.4, "pgd100": 0.4, "square": 0.4}, [], None),  # ties are no sign of masking
    ({"natural": 0.9, "square": 0.1}, [], None),  # no white-box attack to compare with
    ({"pgd100": 0.962, "autoattack": 0.941}, ["PGD overstates robustness"], "pgd100 0.9620"),
    ({"pgd100": 0.962, "autoattack": 0.947}, [], None),  # 1.5 points: within the 2-point margin
    ({"pgd20": 0.97, "autoattack": 0.90}, [], None),  # only PGD-100, the paper's strongest, is compared
], ids=["pgd20>fgsm", "cw>fgsm", "pgd100>pgd20", "square<white-box", "several", "none", "ties", "square-alone",
        "autoattack<pgd100", "autoattack-close", "no-pgd100"])
def test_masking_flags(acc, expected, mentions):
    flags = masking_flags(acc)
    assert [f["flag"] for f in flags] == expected
    if mentions is not None:
        assert any(mentions in f["detail"] for f in flags)


# ---------------------------------------------------------------------------------------------
# 6. Bad inputs


@pytest.mark.parametrize("kwargs, bad", [
    ({"attacks": "natural,pgd7"}, "pgd7"),
    ({"attacks": " , "}, "' , '"),
    ({"n_examples": 0}, "n-examples 0"),
    ({"n_examples": -3}, "-3"),
    ({"eps": 1.5}, "1.5"),
    ({"eps": 0.0}, "0.0"),
], ids=["unknown-attack", "no-attack", "n0", "n-negative", "eps1.5", "eps0"])
def test_bad_arguments_are_usage_errors(evaluated, kwargs, bad):
    run, before, _ = evaluated
    text = (run / records.EVAL).read_text()
    kwargs = {"attacks": "natural", **kwargs}
    with pytest.raises(UsageError, match=re.escape(bad)):
        evaluate(run, kwargs.pop("attacks"), device=CPU, progress=False, log=quiet, **kwargs)
    assert (run / records.EVAL).read_text() == text


def test_unknown_attack_message_lists_the_allowed_ones(evaluated):
    with pytest.raises(UsageError, match="pgd7.*natural.*autoattack"):
        evaluate(evaluated[0], "pgd7", device=CPU, progress=False, log=quiet)


def test_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "empty"))):
        evaluate(tmp_path / "empty", "natural", device=CPU, progress=False, log=quiet)


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong-weights", "no-weights"])
def test_missing_or_corrupt_checkpoint(trained_run, tmp_path, damage):
    run = copy_run(trained_run, tmp_path / "run", keep_eval=False)
    best = run / records.BEST
    if damage == "missing":
        best.unlink()
    elif damage == "garbage":
        best.write_bytes(bytes(range(256)) * 8)
    elif damage == "wrong-weights":
        torch.save({"nets": {"f": {"conv.weight": torch.zeros(1)}}, "epoch": 1}, best)
    else:
        torch.save({"epoch": 1}, best)
    with pytest.raises(UsageError, match=re.escape(str(best))) as err:
        evaluate(run, "natural", n_examples=10, device=CPU, progress=False, log=quiet)
    assert ("missing" if damage == "missing" else "corrupt") in str(err.value)
    assert not (run / records.EVAL).exists()


def test_evaluation_runs_a_batchnorm_model_in_eval_mode(tmp_path, monkeypatch):
    """every attack sees f in eval mode; BatchNorm's running statistics do not move."""
    run = tmp_path / "bn-run"
    config = resolve_config("natural", "mnist-mini", 0.3, arch="preact-resnet18", epochs=1, n_train=20, select_n=10,
                            batch_size=10)
    train(config, run, Settings("cpu", progress=False), log=quiet)
    seen = []
    real = ev.correct_under

    def checked(model, *args, **kwargs):
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and not any(m.training for m in model.modules())
        before = [b.running_mean.clone() for b in bns]
        out = real(model, *args, **kwargs)
        assert all(torch.equal(b.running_mean, m) for b, m in zip(bns, before))
        seen.append(len(bns))
        return out

    monkeypatch.setattr(ev, "correct_under", checked)
    evaluate(run, "natural,fgsm", n_examples=10, device=CPU, progress=False, log=quiet)
    assert len(seen) == 2
