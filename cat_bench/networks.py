"""The networks of a run (f, and those its method adds) built from its resolved config, and the device to use."""

from __future__ import annotations

import re

from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.lazy import torch
from cat_bench.methods import Method, TrainAttack, get_method
from cat_bench.models import batchnorms, build_classifier

DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The device to run on: the given name (or device), else CUDA when present, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, str) and not DEVICE_NAME.fullmatch(name):  # checked before torch is imported
        raise UsageError(f"unknown device {name!r}; allowed: cpu, cuda, cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def precision_context(precision: str, device: torch.device):
    """Set the device's fp32 math for `precision` (presets.PRECISIONS); return the bf16 autocast or None.

    "fp32" turns TF32 off for matmuls and cuDNN convolutions (torch leaves it on for cuDNN by default).
    """
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else None


def compiled(f: torch.nn.Module, mode: str | None) -> torch.nn.Module:
    """f as the training steps run it: eager (`mode` None) or torch.compile'd in `mode` (presets.COMPILE_MODES).

    In "reduce-overhead" mode the compiled f replays CUDA graphs, whose outputs live in memory
    the next replay reuses; a replay begins anew after every backward and every no_grad call
    (CUDAGraph Trees), and a training step keeps logits across such calls (PGD's natural logits
    for the KL loss, CAT's no_grad f(x_adv) beside a graded f(x_cal)). Each output, batch x
    classes, is therefore cloned as it comes out. The weights are f's own in every mode.
    """
    if mode is None:
        return f
    run = torch.compile(f, mode=mode)
    if mode != "reduce-overhead":
        return run

    class ClonedOutputs(torch.nn.Module):  # defined here: torch is imported on first use (cat_bench.lazy)
        def __init__(self):
            super().__init__()
            self.compiled = run

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.compiled(x).clone()

    return ClonedOutputs()


class Networks:
    """f and the networks its method adds (`Method.extra_networks`) for a resolved config, on a device.

    f normalises its input inside when the protocol says so (the CIFAR scripts of CAT and Rice et
    al.); the TRADES, MART and FAT scripts feed [0,1] pixels to the network as they are.
    """

    def __init__(self, config: dict, device: torch.device):
        info = dataset_info(config["dataset"])
        normalize = config["schedule"].get("normalize", True)
        mean, std = (info.mean, info.std) if normalize else (None, None)
        self.config = config
        self.f = build_classifier(config["arch"], info.num_classes, info.shape[0], mean, std)
        self.extra = get_method(config["method"]).extra_networks(info.family, info.shape[0])
        for net in self.all().values():
            net.to(device)
            if device.type == "cuda":
                net.to(memory_format=torch.channels_last)

    def all(self) -> dict[str, torch.nn.Module]:
        return {"f": self.f, **self.extra}

    def adapter(self, f: torch.nn.Module | None = None, autocast=None) -> Method:
        """The run's method adapter on these networks; `f`: f as the steps run it (compiled), else f."""
        config = self.config
        return get_method(config["method"]).build(self.f if f is None else f, self.extra, config["hparams"],
                                                  TrainAttack(**config["train_attack"]), autocast)

    def state(self) -> dict[str, dict]:
        return {k: v.state_dict() for k, v in self.all().items()}

    def load(self, state: dict[str, dict]) -> None:
        for k, net in self.all().items():
            net.load_state_dict(state[k])

    def sync_batchnorm(self) -> None:
        """Data-parallel training: every BatchNorm of every network takes its statistics over the global batch
        (SyncBatchNorm, as one process's BatchNorm does); torch implements it on CUDA only."""
        if not any(batchnorms(net) for net in self.all().values()):
            return
        if next(self.f.parameters()).device.type != "cuda":
            raise UsageError("data-parallel training of a network with BatchNorm needs CUDA (torch's SyncBatchNorm); "
                             "on CPU train it in one process (without --nproc / --gpus-per-job)")
        self.f = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.f)
        self.extra = {k: torch.nn.SyncBatchNorm.convert_sync_batchnorm(net) for k, net in self.extra.items()}
