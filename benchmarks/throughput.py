"""cat-bench's training steps and PGD-20 evaluation beside the code they replace, measured in one run.

    python benchmarks/throughput.py                       # CPU: SmallCNN on mnist-mini
    python benchmarks/throughput.py --dataset cifar10 --synthetic --device cuda   # PreAct ResNet-18

Training: one step of AT and CATcent as cat-bench takes it (`train.build` and `train.step`, the loop's own; the run's precision)
beside an eager loop written the way the authors' scripts are (Rice et al.'s train_cifar.py and
CAT's Train_CIFAR10.py: PGD by `loss.backward()` through the whole graph, so every attack step
also computes the weights' gradients; fp32; g(x+delta) computed twice), on the same networks,
batch and protocol. Natural training is the reference of CAT's cost. Evaluation: cat-bench's
PGD-20 (docs/method.md s4) beside torchattacks' PGD with the same settings and batch, when torchattacks
is importable (install it only in a throwaway environment: its wheel overwrites robustbench's
files; see docs/speed.md).

For each row: images/s, the ratio to the eager loop (or to torchattacks), model FLOPs per image
counted by `torch.utils.flop_counter` (convolutions and matmuls, forward and backward) and the
achieved GFLOP/s as a fraction of the machine's peak, and on CUDA the peak memory of the row. The
peak is measured, not quoted: the best of five dense square matmuls in the same dtype on the same
device (the rate the convolutions' GEMMs can reach at most here). On CUDA the training rows are
repeated for every variant (`--variants`): fp32, tf32 and bf16, eager, torch.compile'd and
replayed as CUDA graphs (torch.compile's reduce-overhead mode). `--record FILE` writes the rows as
JSON; `cat-bench run --dry-run --throughput FILE` then prices a suite at the measured rate.

    python benchmarks/throughput.py --dataset cifar10 --synthetic --arch wrn-34-10 --device cuda \
        --variants fp32 bf16 bf16+graphs --record results/gpu/throughput-wrn.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cat_bench.attacks import PGD, kl_div
from cat_bench.data import dataset_info, load_split
from cat_bench.evaluate import correct_under, default_batch_size
from cat_bench.methods import TrainAttack, default_arch
from cat_bench.networks import Networks, resolve_device
from cat_bench.eval_attacks import eval_attack
from cat_bench.config import resolve_config
from cat_bench.train import build, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, whose backward hooks break torch.autograd.grad
    on a leaf input (PGD's); the counter then keeps only its global total, all this script reads."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def flop_counter() -> FlopCounterMode:
    """torch.utils.flop_counter's counter of convolution and matmul FLOPs (forward and backward)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None) -> float:
    """The best of five dense n x n matmuls in `dtype` on `device`, in GFLOP/s (n: 8192 on CUDA, where
    smaller products leave a large GPU's units idle; 2048 on CPU)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# --- the authors-style eager steps (references, fp32, as the scripts are written) --------------------

def _eager_pgd(f, x, y, eps, alpha, steps, clip):
    """attack_pgd of train_cifar.py / Train_CIFAR10.py: backward through the whole graph each step."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    if clip:
        delta = torch.clamp(x + delta, 0, 1) - x
    delta.requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(f(x + delta), y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * grad.sign(), -eps, eps)
        if clip:
            d = torch.clamp(x + d, 0, 1) - x
        delta.data = d
        delta.grad.zero_()
    return delta.detach()


def eager_at_step(f, g, x, y, opts, attack, hparams):
    delta = _eager_pgd(f, x, y, attack.eps, attack.alpha, attack.steps, attack.clip)
    F.cross_entropy(f(x + delta), y)  # the restart bookkeeping forward
    loss = F.cross_entropy(f(torch.clamp(x + delta, 0, 1) if attack.clip else x + delta), y)
    opts["f"].zero_grad()
    loss.backward()
    opts["f"].step()


def eager_cat_step(f, g, x, y, opts, attack, hparams):
    delta = _eager_pgd(f, x, y, attack.eps, attack.alpha, attack.steps, attack.clip)
    f(x + delta)  # the restart bookkeeping forward
    x_adv = x + delta
    mask = g(x_adv).detach()  # the first of the code's two g(x+delta)
    x_cal = x + mask * delta
    logits_cal = f(torch.clamp(x_cal, 0, 1) if attack.clip else x_cal)
    logits_nat = f(x)
    p_y = F.softmax(logits_nat, 1).gather(1, y[:, None]).squeeze(1)
    loss_f = (hparams["beta"] * kl_div(logits_nat, logits_cal).sum() / len(y)
              + (F.cross_entropy(logits_nat, y, reduction="none") * (1.0000001 - p_y)).mean())
    opts["f"].zero_grad()
    loss_f.backward()
    opts["f"].step()
    mask = g(x_adv)  # the second
    logits_adv = f(x_adv).detach()
    x_cal = x + mask * delta
    logits_cal = f(torch.clamp(x_cal, 0, 1) if attack.clip else x_cal)
    loss_g = kl_div(logits_adv, logits_cal).sum() / len(y) + hparams["b"] * F.cross_entropy(logits_cal, y)
    opts["g"].zero_grad()
    loss_g.backward()  # also fills f's gradients, cleared by f's next zero_grad
    opts["g"].step()
    f(x)  # the clean forward after both steps


EAGER = {"at": eager_at_step, "cat-cent": eager_cat_step}


# --- measurement ---------------------------------------------------------------------------------------

def _setup(method, dataset, arch, eps, device, precision, compile):
    config = resolve_config(method, dataset, eps, arch=arch, schedule="uniform", precision=precision)
    torch.manual_seed(0)
    built = build(config, device, compile)  # the training loop's own networks, adapter and step
    # the eager reference's optimiser on both sides, so that the two steps differ only in the code timed
    built.optimizers = {k: torch.optim.SGD(v.parameters(), lr=0.01, momentum=0.9)
                        for k, v in built.method.modules().items()}
    return config, built


def _time_steps(step, batches, device):
    """(seconds for `batches` steps after one warm-up, the peak GPU memory of those steps in GB or None)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step(0)  # warm-up (and compilation)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(1, batches + 1):
        step(i)
    _sync(device)
    return time.perf_counter() - t0, _peak_memory_gb(device)


def train_rows(method, dataset, arch, eps, x, y, device, batches, precision="fp32", compile=None, eager=True):
    """(images/s, FLOPs per image, peak GB) of cat-bench's step, and of the eager reference when `eager`.
    `compile`: None (eager) or a torch.compile mode (reduce-overhead: CUDA graphs)."""
    config, built = _setup(method, dataset, arch, eps, device, precision, compile)
    nets = built.nets
    bs = config["schedule"]["batch_size"]
    xs = [x[i * bs:(i + 1) * bs].to(device).float().div(255) for i in range(batches + 1)]
    ys = [y[i * bs:(i + 1) * bs].to(device) for i in range(batches + 1)]
    if device.type == "cuda":
        xs = [xb.contiguous(memory_format=torch.channels_last) for xb in xs]
    if compile is None:  # a compiled step's kernels are not aten ops the counter sees: count the eager step
        with flop_counter() as counter:
            step(built, xs[0], ys[0], 1)
        train_rows.flops[(method, arch)] = counter.get_total_flops() / bs
    ours_flops = train_rows.flops[(method, arch)]
    secs, memory = _time_steps(lambda i: step(built, xs[i], ys[i], 1), batches, device)
    rows = {"cat-bench": (batches * bs / secs, ours_flops, memory)}
    if eager and method in EAGER:
        f, g = copy.deepcopy(nets.f), copy.deepcopy(nets.extra.get("g"))
        e_opts = {"f": torch.optim.SGD(f.parameters(), lr=0.01, momentum=0.9)}
        if g is not None:
            e_opts["g"] = torch.optim.SGD(g.parameters(), lr=0.01, momentum=0.9)
        attack = TrainAttack(**config["train_attack"])
        eager_step = EAGER[method]
        with flop_counter() as counter:
            eager_step(f, g, xs[0], ys[0], e_opts, attack, config["hparams"])
        eager_flops = counter.get_total_flops() / bs
        secs, memory = _time_steps(lambda i: eager_step(f, g, xs[i], ys[i], e_opts, attack, config["hparams"]),
                                   batches, device)
        rows["authors-style eager"] = (batches * bs / secs, eager_flops, memory)
    return rows


train_rows.flops = {}  # (method, arch): FLOPs per image of cat-bench's eager step


def eval_rows(dataset, arch, x, y, device, batch_size):
    """(images/s, FLOPs per image, peak GB) of cat-bench's PGD-20 evaluation and of torchattacks' PGD, when
    installed."""
    info = dataset_info(dataset)
    config = resolve_config("natural", dataset, info.test_eps, arch=arch)
    torch.manual_seed(0)
    f = Networks(config, device).f.eval()
    p = eval_attack(info.family, "pgd20", info.test_eps)
    attack = PGD(eps=p.eps, alpha=p.alpha, steps=p.steps)
    xs, ys = x.to(device).float().div(255), y.to(device)
    with flop_counter() as counter:
        correct_under(f, xs[:batch_size], ys[:batch_size], attack, batch_size)
    flops = counter.get_total_flops() / batch_size
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    ours_acc = correct_under(f, xs, ys, attack, batch_size).float().mean().item()
    _sync(device)
    rows = {"cat-bench": (len(ys) / (time.perf_counter() - t0), flops, _peak_memory_gb(device))}
    try:
        import torchattacks
    except ImportError:
        return rows, None
    atk = torchattacks.PGD(f, eps=p.eps, alpha=p.alpha, steps=p.steps, random_start=False)
    atk(xs[:batch_size], ys[:batch_size])  # warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    correct = 0
    for i in range(0, len(ys), batch_size):
        xb, yb = xs[i:i + batch_size], ys[i:i + batch_size]
        x_adv = atk(xb, yb)
        with torch.no_grad():
            correct += (f(x_adv).argmax(1) == yb).sum().item()
    _sync(device)
    rows[f"torchattacks {torchattacks.__version__} PGD"] = (len(ys) / (time.perf_counter() - t0), flops,
                                                           _peak_memory_gb(device))
    return rows, (ours_acc, correct / len(ys))


VARIANTS = {"fp32": ("fp32", None), "tf32": ("tf32", None), "bf16": ("bf16", None),
            "fp32+compile": ("fp32", "default"), "bf16+compile": ("bf16", "default"),
            "fp32+graphs": ("fp32", "reduce-overhead"), "bf16+graphs": ("bf16", "reduce-overhead")}
CPU_VARIANTS = ("fp32",)


def _peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist-mini", help="mnist-mini (default), mnist, cifar10, cifar100")
    ap.add_argument("--arch", help="network (default: the uniform protocol's for the dataset)")
    ap.add_argument("--synthetic", action="store_true", help="random images of the dataset's shape (no files)")
    ap.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    ap.add_argument("--batches", type=int, default=10, help="timed training batches per row (after one warm-up)")
    ap.add_argument("--eval-n", type=int, default=1000, help="test images in the PGD-20 rows")
    ap.add_argument("--variants", nargs="+", choices=tuple(VARIANTS),
                    help="precision[+compile|+graphs] rows of the training steps (default: fp32 on CPU; every "
                         "variant on CUDA)")
    ap.add_argument("--record", type=Path, help="also write the rows as JSON (cat-bench run --dry-run --throughput)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    info = dataset_info(args.dataset)
    arch = args.arch or default_arch("cat-cent", info.family, "uniform")
    variants = args.variants or (tuple(VARIANTS) if device.type == "cuda" else CPU_VARIANTS)
    if args.synthetic:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (4096, *info.shape), dtype=torch.uint8, generator=gen)
        y = torch.randint(0, info.num_classes, (4096,), generator=gen)
    else:
        x, y = load_split(args.dataset, "train")
    eps = info.test_eps
    peak = {"fp32": peak_gflops(device)}
    if device.type == "cuda":
        peak["tf32"] = _tf32_peak(device)
        peak["bf16"] = peak_gflops(device, torch.bfloat16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, dataset "
          f"{args.dataset}{' (synthetic)' if args.synthetic else ''}, {arch}, eps {eps:.4f}, uniform protocol "
          f"(CAT's), {args.batches} timed batches per row; peak (measured dense matmul): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    print("\n| what | images/s | vs reference | GFLOP / image | GFLOP/s | of peak | peak memory |"
          "\n|---|---|---|---|---|---|---|")
    record = {"device": name, "torch": torch.__version__, "dataset": args.dataset, "arch": arch,
              "synthetic": args.synthetic, "peak_gflops": peak, "rows": []}

    def show(label, rate, flops, memory, ref, precision="fp32", **key):
        ratio = f"{rate / ref:.2f}x" if ref else "reference"
        print(f"| {label} | {rate:.1f} | {ratio} | {flops / 1e9:.3f} | {rate * flops / 1e9:.1f} | "
              f"{rate * flops / 1e9 / peak[precision]:.0%} | {'-' if memory is None else f'{memory:.1f} GB'} |")
        record["rows"].append({"what": label, "images_per_s": rate, "ratio": rate / ref if ref else None,
                               "flops_per_image": flops, "fraction_of_peak": rate * flops / 1e9 / peak[precision],
                               "peak_memory_gb": memory, "precision": precision, **key})

    natural = train_rows("natural", args.dataset, arch, eps, x, y, device, args.batches, eager=False)["cat-bench"]
    show("train natural, cat-bench", *natural, None, method="natural", compile=None)
    for method in ("at", "cat-cent"):
        ref = fp32 = None
        for variant in variants:
            precision, compiled = VARIANTS[variant]
            rows = train_rows(method, args.dataset, arch, eps, x, y, device, args.batches, precision, compiled,
                              eager=ref is None)
            if "authors-style eager" in rows:
                ref = rows["authors-style eager"][0]
                show(f"train {method}, authors-style eager loop (fp32)", *rows["authors-style eager"], None,
                     method=method, compile=None, reference=True)
            if variant == "fp32":
                fp32 = rows["cat-bench"][0]
            show(f"train {method}, cat-bench ({variant})", *rows["cat-bench"], ref, precision, method=method,
                 compile=compiled)
        if fp32:
            print(f"| {method} / natural training time per image (cat-bench, fp32) | | {natural[0] / fp32:.1f}x "
                  f"| | | | |")
    rows, accs = eval_rows(args.dataset, arch, x[: args.eval_n], y[: args.eval_n], device,
                           default_batch_size(device))
    ours = rows.pop("cat-bench")
    other = next(iter(rows.items()), None)
    if other is not None:
        show(f"eval PGD-20, {other[0]}", *other[1], None, method="eval")
    show("eval PGD-20, cat-bench", *ours, other[1][0] if other else None, method="eval", compile=None)
    if accs is not None:
        print(f"\nPGD-20 accuracy of the untrained net, same {args.eval_n} images: cat-bench {accs[0]:.4f}, "
              f"torchattacks {accs[1]:.4f}")
    elif other is None:
        print("\ntorchattacks is not installed here: the evaluation comparison is skipped (docs/speed.md)")
    if args.record is not None:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=2) + "\n")


def _tf32_peak(device: torch.device) -> float:
    """The dense-matmul peak with TF32 math on (fp32 tensors)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return peak_gflops(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


if __name__ == "__main__":
    main()
