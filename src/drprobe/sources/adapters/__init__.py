"""Adapters for external model libraries: ``module:``, ``hf:``, ``timm:``, ``torchvision:``.

Importing this package registers the four prefixes with :mod:`drprobe.sources.models`; the
libraries themselves (transformers, timm, torchvision, the user's module) are imported only
when a spec with that prefix is loaded, so ``import drprobe`` stays fast without the extras.

>>> from drprobe.sources.models import load_model
>>> bundle = load_model("hf:all-MiniLM-L6-v2")        # doctest: +SKIP
>>> bundle = load_model("module:mynets.cifar:resnet?depth=18", weights="random")  # doctest: +SKIP
"""

from __future__ import annotations

from drprobe.sources.adapters import ckpt, hf, libs, module
from drprobe.sources.adapters.hf import load_hf
from drprobe.sources.adapters.module import from_factory, wrap_module
from drprobe.sources.adapters.tokens import HiddenStatesBundle, is_text
from drprobe.sources.registry import register_prefix

__all__ = ["HiddenStatesBundle", "from_factory", "is_text", "load_hf", "wrap_module"]

register_prefix("module", module.factory)
register_prefix("hf", hf.factory)
register_prefix("timm", libs.timm_factory)
register_prefix("torchvision", libs.torchvision_factory)
register_prefix("ckpt", ckpt.factory)
