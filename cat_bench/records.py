"""Run records on disk: atomic JSON and checkpoint writes, append-only JSONL, provenance.

A run directory holds `config.json` (fully resolved config with seed, versions, git commit),
`history.jsonl` (one line per epoch), `sessions.jsonl` (one line each time training starts or resumes), `checkpoints/last.pt` and `checkpoints/best.pt`, `eval.json`
and a `done` marker. Every file is written to a temporary name and renamed into place, so a killed
process never leaves a half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.lazy import torch

CONFIG = "config.json"
HISTORY = "history.jsonl"
TRACE = "trace.jsonl"  # CAT: the mask (mean, std) and losses every few batches
SESSIONS = "sessions.jsonl"
DONE = "done"
FAILED = "failed.json"  # a suite could not train or evaluate the run: the reason and the fix
EVAL = "eval.json"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    _atomic(Path(path), lambda fh: fh.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: Path) -> Any:
    """Read a JSON record; a corrupt file is a CorruptRecord naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise CorruptRecord(f"corrupt record {path}: {err}") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save atomically."""
    _atomic(Path(path), lambda fh: torch.save(state, fh))


def load_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True); a missing file is a UsageError, a corrupt one a CorruptRecord, naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"missing checkpoint {path}; train the run first (cat-bench train ... --out {path.parents[1]})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbled files
        raise CorruptRecord(f"corrupt checkpoint {path}: {type(err).__name__}: {err}") from None


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one record line to a JSONL history (flushed and fsynced)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(obj, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """All complete lines of a JSONL history (a torn last line from a kill is dropped)."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


# Identity keys added after runs were recorded, with the value every earlier run had. The hash
# leaves such a key out at that value, so earlier run directories keep their names; an earlier
# identity reads as if it held the key (`read_identity`).
LATER_KEYS = {"precision": "fp32"}


def config_hash(config: dict) -> str:
    """Short stable hash of a resolved config's identity (the run directory's name)."""
    kept = {k: v for k, v in config.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def read_identity(run_dir: Path) -> dict:
    """The resolved config a run directory was trained with (config.json's identity), LATER_KEYS filled in."""
    return {**LATER_KEYS, **read_json(Path(run_dir) / CONFIG)["identity"]}


def run_name(config: dict) -> str:
    """A run directory's name: METHOD-DATASET-HASH of its resolved config."""
    return f"{config['method']}-{config['dataset']}-{config_hash(config)}"


def git_commit() -> str | None:
    """The git commit of the cat-bench checkout, if it is one (None for an installed wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def provenance(device: torch.device) -> dict:
    """Versions, git commit and hardware, recorded with every run and evaluation."""
    import torchvision

    import cat_bench
    try:
        from importlib.metadata import version
        autoattack_version = version("pyautoattack")
    except Exception:
        autoattack_version = None
    hw = {"device": str(device), "cpu": _cpu_model() or platform.processor() or platform.machine(),
          "cpu_isa": _cpu_isa(), "kernels": torch.backends.cpu.get_cpu_capability(),
          "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
          "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    build = {"cuda": torch.version.cuda, "mkl": torch.backends.mkl.is_available(),
             "mkldnn": torch.backends.mkldnn.is_available()}
    determinism = {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                   "cudnn_benchmark": torch.backends.cudnn.benchmark,
                   "cudnn_deterministic": torch.backends.cudnn.deterministic}
    return {"cat_bench": cat_bench.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pyautoattack": autoattack_version, "python": platform.python_version(), "git_commit": git_commit(),
            "hardware": hw, "torch_build": build, "determinism": determinism}


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY")
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once per process ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo), e.g. "AMD EPYC"."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return None


def _cpu_isa() -> list[str]:
    """The vector instruction sets that decide which CPU kernels torch runs (and so the float rounding)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [f for f in _ISA_FLAGS if f in flags]
    return []
