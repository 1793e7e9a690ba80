"""The doctor's update bound, measured on the CPU: how far rounding and a wrong precision move one update.

    python scripts/doctor_bounds.py        # about a minute on two cores

For every method on MNIST (CAT's SmallCNN) and the CIFAR methods on PreAct ResNet-18, one training
step from the doctor's fixed weights and batch (`cat_bench.doctor`), three times against the plain
step: with the weights moved by about one ulp (the rounding another device's kernels give) and the
attack free; the same with the reference's attack replayed (`doctor.AttackTape`); and in bf16 in
place of fp32 with the attack replayed (a wrong precision). Prints each update's distance from the
plain one relative to the step's size, beside `doctor.UPDATE_RTOL`.
"""

from __future__ import annotations

import torch

from cat_bench import doctor
from cat_bench.methods import METHODS

CPU = torch.device("cpu")


def ulp_moved(state: dict) -> dict:
    gen = torch.Generator().manual_seed(1)
    return {k: {n: t * (1 + 1e-7 * torch.randn(t.shape, generator=gen)) if t.is_floating_point() else t
                for n, t in s.items()} for k, s in state.items()}


def distances(method: str, dataset: str) -> tuple[float, float, float, str]:
    config = doctor._config(method, dataset)
    state, before = doctor._initial(config)
    x, y = doctor._batch(dataset, 16 if dataset == "mnist-mini" else 4)
    tape = doctor.AttackTape()
    reference = doctor.one_update(config, state, x, y, CPU, tape=tape)
    free = doctor.one_update(config, ulp_moved(state), x, y, CPU)
    replay = tape.replayed()
    replayed = doctor.one_update(config, ulp_moved(state), x, y, CPU, tape=replay)
    bf16 = doctor.one_update(doctor._config(method, dataset, "bf16"), state, x, y, CPU, tape=tape.replayed())
    moved = f"{100 * max(replay.moved):.1f}%" if replay.moved else "-"
    return (*(doctor.update_difference(reference, other, before)[1] for other in (free, replayed, bf16)), moved)


def main() -> None:
    print(f"update distance / step size (doctor.UPDATE_RTOL = {doctor.UPDATE_RTOL:g})\n")
    print("| method | data | one ulp, attack free | one ulp, attack replayed | bf16, attack replayed "
          "| pixels the free attack put elsewhere |\n|---|---|---|---|---|---|")
    cases = [(m, "mnist-mini") for m in METHODS] + [(m, "cifar10") for m in doctor.CIFAR_METHODS]
    for method, dataset in cases:
        free, replayed, bf16, moved = distances(method, dataset)
        print(f"| {method} | {dataset} | {free:.2e} | {replayed:.2e} | {bf16:.2e} | {moved} |", flush=True)


if __name__ == "__main__":
    main()
