"""Run RobustBench 1.1.1 in-process on top of pyautoattack: the one place cat-bench adapts it.

robustbench 1.1.1 (the `robustbench` extra) was written against the original `autoattack`
package and `pkg_resources`; cat-bench ships `pyautoattack` 0.2.0, the same attacks under another
module name with a keyword-only API. `install()` bridges exactly what robustbench uses:

- `import autoattack` / `from autoattack import AutoAttack` (robustbench/eval.py): a module
  `autoattack` whose `AutoAttack` subclasses `pyautoattack.AutoAttack` and accepts the old calls
    * `AutoAttack(model, norm=, eps=, version=, device=, log_path=)`: `log_path` (unknown to
      pyautoattack) sends pyautoattack's "auto-attack" log to that file, as the old Logger did
      (stdout when None); the other arguments pass through;
    * `run_standard_evaluation(x, y, bs=, state_path=)`: `bs` becomes `batch_size`, a str
      `state_path` becomes a Path, and only `x_adv` is returned (pyautoattack returns
      `(x_adv, y_adv)`; the old `return_labels=True` still gets both);
- `from autoattack.state import EvaluationState` (robustbench/eval.py, for `aa_state_path`):
  pyautoattack's own `state` module, the same class and file format;
- `import pkg_resources` (robustbench/loaders.py, ImageNet file lists only): setuptools < 81
  provides it (the extra pins that); its deprecation warning is silenced, and without it a
  stand-in with the one function used, `resource_filename`, is registered.

`register(dataset, name, entry)` adds a model-zoo entry at runtime for the duration of a `with`
block, so `robustbench.utils.load_model(name, model_dir=...)` builds the model and loads
`{model_dir}/{dataset}/Linf/{name}.pt` from disk; inside the block RobustBench's download
functions raise instead of reaching the network.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

_MARK = "__cat_bench_compat__"


def _autoattack_module() -> types.ModuleType:
    """The `autoattack` package robustbench imports, backed by pyautoattack."""
    import pyautoattack
    import pyautoattack.state

    class AutoAttack(pyautoattack.AutoAttack):
        """`autoattack.AutoAttack` as robustbench 1.1.1 calls it (see the module docstring)."""

        def __init__(self, model, norm="Linf", eps=0.3, seed=None, version="standard", device="cuda",
                     log_path=None):
            super().__init__(model, norm=norm, eps=eps, seed=seed, version=version, device=device)
            self.log_path = log_path

        def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False, state_path=None):
            logger = logging.getLogger("auto-attack")
            handler = (logging.FileHandler(self.log_path) if self.log_path is not None
                       else logging.StreamHandler(sys.stdout))
            handler.setFormatter(logging.Formatter("%(message)s"))
            level = logger.level
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            try:
                x_adv, y_adv = super().run_standard_evaluation(
                    x_orig, y_orig, batch_size=bs, state_path=None if state_path is None else Path(state_path))
            finally:
                logger.removeHandler(handler)
                logger.setLevel(level)
                handler.close()
            return (x_adv, y_adv) if return_labels else x_adv

    module = types.ModuleType("autoattack", "robustbench's `autoattack`, adapted to pyautoattack by cat-bench")
    module.__path__ = []  # a package, so that `autoattack.state` resolves
    module.AutoAttack = AutoAttack
    module.state = pyautoattack.state
    setattr(module, _MARK, True)
    return module


def _pkg_resources_stand_in() -> types.ModuleType:
    module = types.ModuleType("pkg_resources", "stand-in for setuptools' pkg_resources (resource_filename only)")

    def resource_filename(package: str, resource: str) -> str:
        spec = importlib.util.find_spec(package)
        base = Path(spec.origin).parent
        return str(base / resource)

    module.resource_filename = resource_filename
    setattr(module, _MARK, True)
    return module


def install() -> None:
    """Make `import robustbench` work with pyautoattack (idempotent). Call before importing robustbench.

    An `autoattack` module already imported (the original package, or ours) is left as it is.
    """
    if "autoattack" not in sys.modules:
        module = _autoattack_module()
        sys.modules["autoattack"] = module
        sys.modules["autoattack.state"] = module.state
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            sys.modules["pkg_resources"] = _pkg_resources_stand_in()


def import_robustbench() -> types.ModuleType:
    """`install()`, then import and return robustbench (with robustbench.eval and robustbench.utils loaded)."""
    install()
    with warnings.catch_warnings():  # the import's own noise: pkg_resources, timm and torch.jit deprecations
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        import robustbench
        import robustbench.eval
        import robustbench.utils
    return robustbench


def available() -> bool:
    """Whether the `robustbench` extra is installed (without importing it)."""
    return importlib.util.find_spec("robustbench") is not None


@contextlib.contextmanager
def register(dataset: str, name: str, entry: dict, threat_model: str = "Linf") -> Iterator[None]:
    """Add `name -> entry` ({"model": callable, "gdrive_id": ...}) to RobustBench's model zoo
    for `dataset`/`threat_model` inside the block, with RobustBench's downloads disabled.

    `load_model` refuses an entry whose gdrive_id is None, so `entry` needs a (placeholder) id;
    the checkpoint must already be at `{model_dir}/{dataset}/{threat_model}/{name}.pt`.
    Raises ValueError if the zoo already has `name`.
    """
    import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.model_zoo.models import model_dicts

    zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    if name in zoo:
        raise ValueError(f"RobustBench's {dataset}/{threat_model} model zoo already has a model named {name!r}")
    zoo[name] = entry
    try:
        with no_downloads():
            yield
    finally:
        zoo.pop(name, None)


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Inside the block RobustBench's download functions raise instead of reaching the network, so
    `load_model` uses the checkpoint already in its model directory or fails."""
    robustbench = import_robustbench()

    def no_download(gdrive_id, path, *_):
        raise RuntimeError(f"RobustBench tried to download {path} (gdrive_id={gdrive_id}); cat-bench loads "
                           f"checkpoints from disk only")

    utils = robustbench.utils
    saved = {k: getattr(utils, k) for k in ("download_gdrive", "download_gdrive_new")}
    for k in saved:
        setattr(utils, k, no_download)
    try:
        yield
    finally:
        for k, fn in saved.items():
            setattr(utils, k, fn)
