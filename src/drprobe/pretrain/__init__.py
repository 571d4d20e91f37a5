"""``drprobe pretrain``: train small networks with the paper's pretraining choices.

Cross-entropy, PGD adversarial training (l2 / linf), Matryoshka nested heads, dropout on the
penultimate layer, the DeCov penalty, fixed-feature (FF-k) heads, width multipliers and
pretraining-set sizes, on a small ResNet or ViT, several seeds each; every result is a
``model.pt`` that loads as the model source ``ckpt:PATH`` and a ``provenance.json``.

>>> from drprobe.pretrain import run
>>> results = run("configs/study/pretrain-tiny.yaml", "runs/pretrain-tiny")  # doctest: +SKIP
>>> results[0].spec                                                            # doctest: +SKIP
'ckpt:runs/pretrain-tiny/ce/seed0/model.pt'
"""

from __future__ import annotations

from drprobe.pretrain.config import PretrainConfig, load_pretrain_config, parse_pretrain_config
from drprobe.pretrain.run import PretrainResult, run, run_folder

__all__ = ["PretrainConfig", "PretrainResult", "load_pretrain_config", "parse_pretrain_config",
           "run", "run_folder"]
