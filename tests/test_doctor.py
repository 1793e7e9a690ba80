"""`cat-bench doctor`: its checks pass on a sound CPU install, a planted fault fails its check (exit 1),
and bad arguments exit 2. The full doctor (every check, the pipeline on synthetic CIFAR) runs in CI
through scripts/gpu_hour.sh's tiny mode."""

import json

import pytest

from cat_bench import doctor
from cat_bench.cli import main
from cat_bench.data import TensorLoader


def test_checks_pass_on_cpu_and_the_table_and_json_say_so(tmp_path, capsys):
    code = main(["doctor", "--device", "cpu", "--only", "update cat-cw mnist", "loader", "channels_last",
                 "save and resume", "attack pgd20", "cuda graphs", "bf16", "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| update cat-cw mnist fp32 | pass |" in out and "losses 0.00e+00" in out  # CPU against CPU: equal
    assert "| loader on device | pass |" in out and "| channels_last | pass |" in out
    assert "| save and resume | pass |" in out and "| attack pgd20 | pass |" in out
    assert "| cuda graphs | skip |" in out and "| update cat-cent cifar10 bf16 | skip |" in out
    record = json.loads((tmp_path / "d.json").read_text())
    assert {r["status"] for r in record["results"]} == {"pass", "skip"} and record["device"] == "cpu"


def test_a_loader_that_drops_a_batch_fails_its_check_and_the_doctor_exits_1(monkeypatch, capsys):
    original = TensorLoader.epoch

    def short_epoch(self, epoch):
        yield from list(original(self, epoch))[:-1]

    monkeypatch.setattr(TensorLoader, "epoch", short_epoch)
    assert main(["doctor", "--device", "cpu", "--only", "loader"]) == 1
    out = capsys.readouterr().out
    assert "| loader on device | FAIL |" in out and "every image exactly once" in out and "FAILED: loader" in out


def _ulp_moved(state: dict) -> dict:
    """The weights moved by about one ulp: the rounding another device's kernels could give."""
    gen = doctor.torch.Generator().manual_seed(1)
    return {k: {n: t * (1 + 1e-7 * doctor.torch.randn(t.shape, generator=gen)) if t.is_floating_point() else t
                for n, t in s.items()} for k, s in state.items()}


def test_rounding_makes_the_update_chaotic_and_the_replayed_attack_removes_it():
    """AT on PreAct ResNet-18 at initialisation: one ulp moves the update past the bound; with the
    reference's attack replayed, the same ulp stays far inside it."""
    config = doctor._config("at", "cifar10")
    state, before = doctor._initial(config)
    x, y = doctor._batch("cifar10", 4)
    cpu = doctor.torch.device("cpu")
    tape = doctor.AttackTape()
    reference = doctor.one_update(config, state, x, y, cpu, tape=tape)
    _, free = doctor.update_difference(reference, doctor.one_update(config, _ulp_moved(state), x, y, cpu), before)
    replay = tape.replayed()
    _, replayed = doctor.update_difference(
        reference, doctor.one_update(config, _ulp_moved(state), x, y, cpu, tape=replay), before)
    assert free > doctor.UPDATE_RTOL > 10 * replayed
    assert replay.moved and max(replay.moved) > 0  # the attack itself ran and went elsewhere


@pytest.mark.parametrize("method", ["at", "trades", "cat-cent"])
def test_an_update_in_the_wrong_precision_fails(method):
    """bf16 where fp32 was asked, the attacks replayed: outside the fp32 bound."""
    config = doctor._config(method, "mnist-mini")
    state, before = doctor._initial(config)
    x, y = doctor._batch("mnist-mini", 16)
    cpu = doctor.torch.device("cpu")
    tape = doctor.AttackTape()
    reference = doctor.one_update(config, state, x, y, cpu, tape=tape)
    other = doctor.one_update(doctor._config(method, "mnist-mini", "bf16"), state, x, y, cpu, tape=tape.replayed())
    _, update = doctor.update_difference(reference, other, before)
    assert update > doctor.UPDATE_RTOL


def test_an_attack_that_leaves_the_eps_ball_fails_the_update_check(monkeypatch):
    config = doctor._config("at", "mnist-mini")
    state, _ = doctor._initial(config)
    x, y = doctor._batch("mnist-mini", 16)
    cpu = doctor.torch.device("cpu")
    tape = doctor.AttackTape()
    doctor.one_update(config, state, x, y, cpu, tape=tape)
    pgd = doctor.attacks_module.PGD.__call__
    monkeypatch.setattr(doctor.attacks_module.PGD, "__call__", lambda self, f, x, y: pgd(self, f, x, y) + self.eps)
    with pytest.raises(doctor.Failed, match="left the eps-ball"):
        doctor.one_update(config, state, x, y, cpu, tape=tape.replayed())


@pytest.mark.parametrize("args, message", [
    (["--only", "no-such-check"], "matches no check"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_arguments_exit_2(args, message, capsys):
    assert main(["doctor", *args]) == 2
    assert message in capsys.readouterr().err


def test_keep_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("a user's file")
    assert main(["doctor", "--keep", str(tmp_path), "--only", "loader"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "a user's file"
