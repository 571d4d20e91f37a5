"""``drprobe pretrain``: train small networks with the paper's pretraining choices.

Cross-entropy, PGD adversarial training (l2 / linf), Matryoshka nested heads, dropout on the
penultimate layer, the DeCov penalty, fixed-feature (FF-k) heads, width multipliers and
pretraining-set sizes, on a small ResNet or ViT, several seeds each; every result is a
``model.pt`` that loads as the model source ``ckpt:PATH`` and a ``provenance.json``.

>>> from drprobe.pretrain import run
>>> results = run("configs/study/pretrain-tiny.yaml", "runs/pretrain-tiny")  # doctest: +SKIP
>>> results[0].spec                                                            # doctest: +SKIP
'ckpt:runs/pretrain-tiny/ce/seed0/model.pt'

The names below are imported on first use, so ``import drprobe.pretrain.command`` (the CLI)
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PretrainConfig": "drprobe.pretrain.config",
    "load_pretrain_config": "drprobe.pretrain.config",
    "parse_pretrain_config": "drprobe.pretrain.config",
    "checks_table": "drprobe.pretrain.checks",
    "format_checks_table": "drprobe.pretrain.checks",
    "PretrainResult": "drprobe.pretrain.grid",
    "run": "drprobe.pretrain.grid",
    "run_folder": "drprobe.pretrain.grid",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (the lazy exports)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'drprobe.pretrain' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
