"""torch, torch.nn and torch.nn.functional, imported on first use.

`cat-bench --help`, `list`, `status` and every error on bad arguments answer before torch is
imported (its import alone takes 1.5 s on a 2-core machine). So the modules of cat_bench and
methods take torch from here, or import it inside the function that needs it; only the network
definitions under `cat_bench/models/` (classes that subclass nn.Module) import it at the top,
and they are imported when a network is built. `tests/test_cli_startup.py` holds this.

A proxy imports its module at the first attribute read and copies the module's namespace into
its own, so later reads cost what a module attribute costs (TensorFlow's `LazyLoader` does the
same). The stdlib's `importlib.util.LazyLoader` cannot do this for `torch.nn.functional`: a
submodule import loads its parents at once.
"""

from __future__ import annotations

import importlib
import types

__all__ = ["F", "nn", "torch"]


class LazyModule(types.ModuleType):
    """A stand-in for the module `name` that imports it when first read."""

    def __getattr__(self, attr: str):
        # Called only for names not (yet) in this proxy's namespace.
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
