"""`cat-bench doctor`: a self-check of every device-specific branch of cat-bench, on one device.

Each check runs a piece of the real code on the device and compares it with a reference: a
method's `update` on the device against the same update on the CPU (same weights, batch and
random starts), the device-resident loader and its augmentation, channels_last, torch.compile and
CUDA graphs against eager, a checkpoint and `--resume` against an uninterrupted run, a one-process
group (NCCL with SyncBatchNorm on CUDA, gloo on CPU), every evaluation attack, and the whole
train -> eval -> report -> submit --verify pipeline on synthetic CIFAR-format data. On the CPU the
device and the reference are the same machine, so the comparisons check determinism; checks that
need CUDA say so and are skipped.

Tolerances (fp32, TF32 off): an update's losses agree to `LOSS_RTOL`, and the parameters after it
to `UPDATE_RTOL` of the step's own size (||theta_D - theta_CPU|| / ||theta_CPU - theta_0||), with
the training attacks' outputs replayed from the reference (`AttackTape`: PGD's sign steps make
the update chaotic). Measured on the CPU with the attacks replayed, weights moved by one ulp move
an update by at most 6e-4 of its size, and a wrong precision (bf16 in place of fp32) by 12-39%
(scripts/doctor_bounds.py; tests/test_doctor.py holds the bound between the two). tf32 and bf16 updates are recorded (their differences are the
precisions', not errors) and fail only when not finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cat_bench import attacks as attacks_module
from cat_bench import records
from cat_bench.data import TensorLoader, dataset_info, load_split
from cat_bench.eval_attacks import attack_order
from cat_bench.lazy import torch
from cat_bench.methods import METHODS, ONE_NETWORK, PLAIN, UNIFORM
from cat_bench.networks import Networks, precision_context
from cat_bench.settings import Settings

LOSS_RTOL = 1e-3
UPDATE_RTOL = 1e-2
FORWARD_ATOL = 1e-4  # logits and input gradients of one network, two code paths (channels_last, compile)
FULL = UNIFORM.name  # the method of the uniform protocol (CAT): two networks, both stepped, a traced mask
CIFAR_METHODS = (ONE_NETWORK.name, FULL)  # BatchNorm networks (PreAct ResNet-18) with the CIFAR protocols


class Skip(Exception):
    """A check that does not apply on this device or installation; its message says why."""


class Failed(Exception):
    """A check whose result is outside its bound; its message gives the numbers."""


@dataclass
class Result:
    check: str
    status: str  # "pass", "FAIL" or "skip"
    seconds: float
    detail: str


@dataclass
class Context:
    """What the checks share: the device, a scratch folder, and the tiny runs trained once."""

    device: torch.device
    work: Path
    log: Callable[[str], None]
    command_line: Callable[[list[str]], int]  # `cat-bench ARGS` in this process (cat_bench.cli.main): the pipeline's
    tiny_run: Path | None = None
    attack_run: Path | None = None


# --- one update on the device against the same update on the CPU ------------------------------------

@contextlib.contextmanager
def random_starts_on_cpu() -> Iterator[None]:
    """Inside: attack random starts are drawn by the CPU generator and moved to x's device, so two
    devices start PGD from the same point (each device's own generator draws different numbers)."""
    original = attacks_module.random_init

    def drawn_on_cpu(x, kind, scale, shard=None):
        noise = original(x.detach().to("cpu").contiguous(), kind, scale, shard)
        return noise.to(x.device).contiguous(memory_format=_layout(x))

    attacks_module.random_init = drawn_on_cpu
    try:
        yield
    finally:
        attacks_module.random_init = original


def _config(method: str, dataset: str, precision: str = "fp32", batch_size: int = 16) -> dict:
    from cat_bench.config import resolve_config

    info = dataset_info(dataset)
    schedule = "uniform" if info.family == "mnist" else "official"  # MNIST: CAT's SmallCNN for all (no dropout)
    return resolve_config(method, dataset, info.test_eps, schedule=schedule, precision=precision,
                          batch_size=batch_size)


def _batch(dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n training images in [0,1]: shipped MNIST digits, or random CIFAR-shaped images."""
    if dataset == "mnist-mini":
        x, y = load_split("mnist-mini", "train")
        return x[:n].float() / 255, y[:n]
    info = dataset_info(dataset)
    gen = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, *info.shape), generator=gen).float() / 255,
            torch.randint(0, info.num_classes, (n,), generator=gen))


class AttackTape:
    """The training attacks (attacks.PGD) of one update: recorded on the reference, replayed on the device.

    PGD steps by the sign of the input gradient, and the weights see the attack's output, so the
    update is chaotic: where a pixel's gradient is about zero another device's rounding sends it
    the other way, and on PreAct ResNet-18 at initialisation weights moved by one ulp on the CPU
    move AT's update by 64% of its size (scripts/doctor_bounds.py). Replaying the reference's
    adversarial examples on the device leaves the rest of the update (forwards, losses, backward,
    the optimiser, BatchNorm) to be compared tightly. The device's own attack still runs in full:
    it must stay inside the eps-ball and the box, and the share of its pixels that ended elsewhere
    than the reference's is reported.
    """

    def __init__(self, outputs: list | None = None):
        self.outputs = [] if outputs is None else outputs
        self.replay = outputs is not None
        self.moved: list[float] = []  # per attack: share of pixels the device's PGD put elsewhere

    def replayed(self) -> AttackTape:
        return AttackTape(self.outputs)

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        original = attacks_module.PGD.__call__
        queue = iter(self.outputs)

        def taped(pgd, model, x, y):
            x_adv = original(pgd, model, x, y)
            if not self.replay:
                self.outputs.append(x_adv.cpu())
                return x_adv
            lo, hi = attacks_module.feasible_box(x, pgd.eps, pgd.clip)
            if not bool(((x_adv >= lo) & (x_adv <= hi)).all()):
                raise Failed("the device's training attack left the eps-ball or the box")
            reference = next(queue).to(x_adv.device)
            self.moved.append(float((x_adv - reference).abs().gt(1e-6).float().mean()))
            return reference.contiguous(memory_format=_layout(x_adv))

        attacks_module.PGD.__call__ = taped
        try:
            yield
        finally:
            attacks_module.PGD.__call__ = original

    def summary(self) -> str:
        if not self.moved:
            return ""
        return f"; PGD: {100 * max(self.moved):.1f}% of pixels elsewhere than on the reference (replayed from it)"


def _layout(x: torch.Tensor):
    return torch.channels_last if x.dim() == 4 and not x.is_contiguous() else torch.contiguous_format


def one_update(config: dict, state: dict, x: torch.Tensor, y: torch.Tensor, device: torch.device,
               compile: str | None = None, tape: AttackTape | None = None
               ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """A method's first training step from `state` on `device`: its losses and the parameters after it
    (on CPU). `tape` records its attacks' outputs, or replays a recorded tape's (`AttackTape`)."""
    from cat_bench.methods.base import lr_at
    from cat_bench.train import build, step

    built = build(config, device, compile)
    built.nets.load(state)
    built.method.set_lr(lr_at(config["schedule"], 0, 0, 1))
    torch.manual_seed(0)
    tape = tape or AttackTape()
    try:
        with random_starts_on_cpu(), tape.on():
            losses = step(built, x.to(device), y.to(device), 1)
    finally:
        precision_context("fp32", device)
    nets, method = built.nets, built.method
    trained = {k: m for k, m in nets.all().items() if k in method.modules()}
    params = {f"{k}.{n}": p.detach().float().cpu() for k, m in trained.items() for n, p in m.named_parameters()}
    return {k: v.item() for k, v in losses.items()}, params


def update_difference(reference: tuple, other: tuple, before: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(largest relative loss difference, ||theta - theta_ref|| / ||theta_ref - theta_0||) of two updates."""
    (ref_losses, ref_params), (losses, params) = reference, other
    loss = max((abs(losses[k] - v) / max(1.0, abs(v)) for k, v in ref_losses.items()), default=0.0)
    step = math.sqrt(sum(float((ref_params[k] - before[k]).pow(2).sum()) for k in ref_params))
    diff = math.sqrt(sum(float((params[k] - ref_params[k]).pow(2).sum()) for k in ref_params))
    return loss, diff / step if step > 0 else diff


def _initial(config: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    nets = Networks(config, torch.device("cpu"))
    state = {k: {n: t.clone() for n, t in s.items()} for k, s in nets.state().items()}
    before = {f"{k}.{n}": p.detach().clone() for k, m in nets.all().items() for n, p in m.named_parameters()}
    return state, before


def check_update(ctx: Context, method: str, dataset: str, precision: str) -> str:
    if precision != "fp32" and ctx.device.type != "cuda":
        raise Skip(f"{precision} is a CUDA precision")
    reference_config = _config(method, dataset)
    state, before = _initial(reference_config)
    x, y = _batch(dataset, 16 if dataset == "mnist-mini" else 4)
    tape = AttackTape()
    reference = one_update(reference_config, state, x, y, torch.device("cpu"), tape=tape)
    replay = tape.replayed()
    result = one_update(_config(method, dataset, precision), state, x, y, ctx.device, tape=replay)
    loss, update = update_difference(reference, result, before)
    detail = f"vs CPU: losses {loss:.2e} (rel), update {update:.2e} (rel to its size){replay.summary()}"
    if not all(map(math.isfinite, [loss, update, *result[0].values()])):
        raise Failed(f"non-finite: {detail}")
    if precision == "fp32" and (loss > LOSS_RTOL or update > UPDATE_RTOL):
        raise Failed(f"{detail}; bounds {LOSS_RTOL:g}, {UPDATE_RTOL:g}")
    return detail + ("" if precision == "fp32" else " (recorded)")


def check_cuda_graphs(ctx: Context) -> str:
    """One CATcent update with f compiled in reduce-overhead mode (CUDA graphs) against eager, fp32."""
    if ctx.device.type != "cuda":
        raise Skip("CUDA graphs need CUDA")
    config = _config(FULL, "mnist-mini")
    state, before = _initial(config)
    x, y = _batch("mnist-mini", 16)
    tape = AttackTape()
    eager = one_update(config, state, x, y, ctx.device, tape=tape)
    replay = tape.replayed()
    graphed = one_update(config, state, x, y, ctx.device, compile="reduce-overhead", tape=replay)
    loss, update = update_difference(eager, graphed, before)
    detail = f"vs eager: losses {loss:.2e}, update {update:.2e}{replay.summary()}"
    if loss > LOSS_RTOL or update > UPDATE_RTOL:
        raise Failed(f"{detail}; bounds {LOSS_RTOL:g}, {UPDATE_RTOL:g}")
    return detail


# --- layouts, compilation, data --------------------------------------------------------------------

def _logits_and_grad(f, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    logits = f(x)
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), x)
    return logits.detach().float().cpu(), grad.float().cpu()


def _forward_check(ctx: Context, transform: Callable, what: str) -> str:
    """PreAct ResNet-18 (eval mode) on a CIFAR-shaped batch: `transform(f, x)` against plain f(x) on the device."""
    config = _config(PLAIN.name, "cifar10")
    torch.manual_seed(0)
    f = Networks(config, torch.device("cpu")).f.to(ctx.device).eval()
    x, y = _batch("cifar10", 8)
    x, y = x.to(ctx.device).contiguous(), y.to(ctx.device)
    plain = _logits_and_grad(f, x, y)
    other = _logits_and_grad(*transform(f, x), y)
    diff = max(float((a - b).abs().max()) for a, b in zip(plain, other))
    if not diff <= FORWARD_ATOL:
        raise Failed(f"logits / input gradient differ by {diff:.2e} from {what} (bound {FORWARD_ATOL:g})")
    return f"logits and input gradient within {diff:.2e} of {what}"


def check_channels_last(ctx: Context) -> str:
    def to_channels_last(f, x):
        import copy

        g = copy.deepcopy(f).to(memory_format=torch.channels_last)
        return g, x.contiguous(memory_format=torch.channels_last)

    return _forward_check(ctx, to_channels_last, "contiguous tensors")


def check_compile(ctx: Context) -> str:
    return _forward_check(ctx, lambda f, x: (torch.compile(f), x), "eager")


def check_loader(ctx: Context) -> str:
    """The device-resident loader: every image once per epoch, the same batches when an epoch is
    replayed, and each augmented image a crop (reflect-padded by 4) and optional flip of its source,
    as the CPU loader makes them."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.arange(40)
    loaders = {d: TensorLoader(x, y, 16, d, shuffle=True, augment="crop-flip-reflect", seed=3)
               for d in (torch.device("cpu"), ctx.device)}
    on_device = [(xb.cpu(), yb.cpu()) for xb, yb in loaders[ctx.device].epoch(2)]
    again = [(xb.cpu(), yb.cpu()) for xb, yb in loaders[ctx.device].epoch(2)]
    if sorted(torch.cat([yb for _, yb in on_device]).tolist()) != list(range(40)):
        raise Failed("an epoch on the device does not hold every image exactly once")
    if not all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(on_device, again)):
        raise Failed("replaying an epoch on the device gives other batches")
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    for xb, yb in on_device:
        for image, label in zip(xb.mul(255).round(), yb.tolist()):
            crops = [padded[label, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
            if not any(torch.equal(image, c) or torch.equal(image, c.flip(-1)) for c in crops):
                raise Failed(f"augmented image {label} is no crop or flipped crop of its source")
    cpu_batches = list(loaders[torch.device("cpu")].epoch(2))
    same = ctx.device.type == "cpu"
    if same and not all(torch.equal(a[0], b[0]) for a, b in zip(on_device, cpu_batches)):
        raise Failed("the loader gives other batches in a second instance on the same device")
    return ("40 images, 3 batches: each once, replayable, every augmented image a crop/flip of its source"
            + ("" if same else " (the device's generator draws its own order, as the CPU's does)"))


# --- checkpoints, groups, attacks ----------------------------------------------------------------------

def _tiny_config() -> dict:
    from cat_bench.config import resolve_config

    return resolve_config(FULL, "mnist-mini", 0.3, epochs=2, n_train=100, batch_size=50, select_n=20)


def _history_numbers(out: Path) -> list:
    return [(r["nat_acc"], r["rob_acc"], r["train"]) for r in records.read_jsonl(out / records.HISTORY)]


def tiny_run(ctx: Context) -> Path:
    """A 2-epoch CATcent run on 100 shipped digits, trained once on the device (resume and attack checks)."""
    from cat_bench.train import train

    if ctx.tiny_run is None:
        train(_tiny_config(), ctx.work / "tiny-whole", Settings(str(ctx.device), deterministic=True, progress=False),
              log=lambda m: None)
        ctx.tiny_run = ctx.work / "tiny-whole"
    return ctx.tiny_run


def check_resume(ctx: Context) -> str:
    """Two epochs in one go against one epoch, a checkpoint and `--resume`: the same numbers and
    weights (with `--deterministic` kernels, which CUDA needs for equal bits)."""
    from cat_bench.train import train

    whole, chunked = tiny_run(ctx), ctx.work / "tiny-chunked"
    settings = Settings(str(ctx.device), deterministic=True, progress=False)
    train(_tiny_config(), chunked, dataclasses.replace(settings, stop_after_epoch=1), log=lambda m: None)
    train(_tiny_config(), chunked, settings, resume=True, log=lambda m: None)
    if _history_numbers(whole) != _history_numbers(chunked):
        raise Failed("the resumed run's history differs from the uninterrupted run's")
    a = records.load_checkpoint(whole / records.LAST)["nets"]
    b = records.load_checkpoint(chunked / records.LAST)["nets"]
    if not all(torch.equal(a[k][n], b[k][n]) for k in a for n in a[k]):
        raise Failed("the resumed run's weights differ from the uninterrupted run's")
    rng = "CPU and CUDA generator states" if ctx.device.type == "cuda" else "the CPU generator state"
    return f"CATcent, 2 epochs: bit-equal history and weights after a resume ({rng} in the checkpoint)"


def check_group(ctx: Context) -> str:
    """A one-process group (NCCL on CUDA, gloo on CPU): an all-reduce, and on CUDA SyncBatchNorm
    giving what BatchNorm gives in training mode."""
    import copy

    from cat_bench import distributed

    dist = torch.distributed
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    if not dist.is_available() or (backend == "nccl" and not dist.is_nccl_available()):
        raise Failed(f"torch.distributed with {backend} is not available in this torch build")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{distributed.free_port()}", rank=0,
                            world_size=1)
    try:
        value = torch.ones(3, device=ctx.device)
        distributed.sum_weighted([value], 0.5)
        if value.tolist() != [0.5] * 3:
            raise Failed(f"all-reduce of 0.5 * ones gave {value.tolist()}")
        if ctx.device.type != "cuda":
            return "gloo: all-reduce (SyncBatchNorm needs CUDA: not checked)"
        torch.manual_seed(0)
        f = Networks(_config(PLAIN.name, "cifar10"), ctx.device).f.train()
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(f))
        x, y = _batch("cifar10", 8)
        x, y = x.to(ctx.device).contiguous(memory_format=torch.channels_last), y.to(ctx.device)
        plain, other = _logits_and_grad(f, x, y), _logits_and_grad(synced, x, y)
        diff = max(float((a - b).abs().max()) for a, b in zip(plain, other))
        if not diff <= FORWARD_ATOL:
            raise Failed(f"SyncBatchNorm differs from BatchNorm by {diff:.2e} in one process")
        return f"nccl: all-reduce, SyncBatchNorm within {diff:.2e} of BatchNorm"
    finally:
        dist.destroy_process_group()


def attack_run(ctx: Context) -> Path:
    """A naturally trained SmallCNN (1,000 shipped digits, 2 epochs), trained once on the device: a model
    the attacks break within a few queries, so the query attacks (Square, AutoAttack) end early."""
    from cat_bench.config import resolve_config
    from cat_bench.train import train

    if ctx.attack_run is None:
        config = resolve_config(PLAIN.name, "mnist-mini", 0.3, epochs=2, n_train=1000, batch_size=50, select_n=20)
        train(config, ctx.work / "plain", Settings(str(ctx.device), progress=False), log=lambda m: None)
        ctx.attack_run = ctx.work / "plain"
    return ctx.attack_run


def check_attack(ctx: Context, name: str) -> str:
    from cat_bench.evaluate import evaluate

    result = evaluate(attack_run(ctx), name, n_examples=20, device=ctx.device, progress=False, log=lambda m: None)
    acc = result["attacks"][name]["accuracy"]
    natural = result["attacks"].get("natural", {}).get("accuracy", 1.0)
    if not 0 <= acc <= natural:
        raise Failed(f"accuracy {acc} outside [0, natural accuracy {natural}]")
    return f"{100 * acc:.0f}% of 20 MNIST digits at eps 0.3 (a naturally trained SmallCNN)"


# --- the pipeline on synthetic CIFAR-format data ----------------------------------------------------------

PIPELINE_SUITE = """
description = "cat-bench doctor: train, evaluate, report and submit on synthetic CIFAR-10"
[defaults]
label = "doctor"
dataset = "cifar10"
eps = ["8/255"]
epochs = 1
n_train = 32
batch_size = 16
select_n = 16
attacks = ["natural", "pgd20", "autoattack"]
n_examples = 16
[[runs]]
methods = ["{method}"]
"""


def _cli(ctx: Context, *args: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = ctx.command_line([str(a) for a in args])
    if code != 0:
        raise Failed(f"`cat-bench {' '.join(map(str, args))}` exited {code}: {out.getvalue()[-400:]}")


def check_pipeline(ctx: Context) -> str:
    from cat_bench.synthetic import unverified_cifar, write_cifar

    if importlib.util.find_spec("robustbench") is None:  # imported through cat_bench.robustbench_compat
        raise Skip("robustbench is not installed (the robustbench extra): submit --verify not checked")
    data = write_cifar(ctx.work / "cifar-data", "cifar10", n_train=64, n_test=32)
    suite, results = ctx.work / "doctor.toml", ctx.work / "results"
    suite.write_text(PIPELINE_SUITE.format(method=FULL))
    common = ["--data-root", data, "--device", str(ctx.device)]
    with unverified_cifar():
        _cli(ctx, "run", "--suite", suite, "--results", results, "--no-progress", *common)
        _cli(ctx, "report", "--suite", suite, "--results", results, *common)
        run = next((results / "runs").iterdir())
        _cli(ctx, "submit", run, "--name", "Doctor2026Synthetic", "--n-examples", "16", "--verify", "--verify-n", "8",
             "--out", ctx.work / "submission", *common)
    return "CATcent on 32 synthetic CIFAR-10 images: run, report, submit --verify (robustbench load_model)"


# --- the checks, in order ----------------------------------------------------------------------------

def checks() -> list[tuple[str, Callable[[Context], str]]]:
    """Every check's name and function, in the order the table lists them."""
    out = [(f"update {m} mnist fp32", lambda c, m=m: check_update(c, m, "mnist-mini", "fp32")) for m in METHODS]
    out += [(f"update {m} cifar10 fp32", lambda c, m=m: check_update(c, m, "cifar10", "fp32")) for m in CIFAR_METHODS]
    out += [(f"update {FULL} cifar10 {p}", lambda c, p=p: check_update(c, FULL, "cifar10", p))
            for p in ("tf32", "bf16")]
    out += [("loader on device", check_loader), ("channels_last", check_channels_last),
            ("torch.compile", check_compile), ("cuda graphs", check_cuda_graphs),
            ("save and resume", check_resume), ("process group", check_group)]
    out += [(f"attack {a}", lambda c, a=a: check_attack(c, a)) for a in attack_order()]
    out += [("pipeline", check_pipeline)]
    return out


def run_checks(device: torch.device, command_line: Callable[[list[str]], int], only: list[str] | None = None,
               log: Callable[[str], None] = print, work: Path | None = None) -> list[Result]:
    """Run the checks (those whose name contains one of `only`, else all); log each as it finishes.
    `command_line`: the command line's entry point, which the pipeline check drives as a user would."""
    results = []
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cat-bench-doctor-")))
        ctx = Context(device, Path(work), log, command_line)
        for name, fn in checks():
            if only and not any(o in name for o in only):
                continue
            t0 = time.time()
            try:
                status, detail = "pass", fn(ctx)
            except Skip as why:
                status, detail = "skip", str(why)
            except Failed as why:
                status, detail = "FAIL", str(why)
            except Exception as err:  # a crash in the checked code is that check's failure, not the doctor's
                status, detail = "FAIL", f"{type(err).__name__}: {err}"
            results.append(Result(name, status, time.time() - t0, detail))
            log(f"{status:<4}  {name} ({time.time() - t0:.1f} s)")
    return results


def table(results: list[Result]) -> str:
    """The markdown table `cat-bench doctor` prints."""
    lines = ["| check | result | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.status} | {r.seconds:.1f} | {r.detail.replace('|', '/')} |" for r in results]
    return "\n".join(lines) + "\n"
