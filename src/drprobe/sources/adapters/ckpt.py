"""``ckpt:PATH`` -- a network trained by ``drprobe pretrain`` (its ``model.pt``).

The file holds the constructor arguments of :func:`drprobe.sources.smallnets.build_network`,
the weights, the input side and the normalisation measured on the pretraining data; it is read
with ``torch.load(weights_only=True)`` (no code runs). ``weights="pretrained"`` loads the
trained weights (``weights_sha256`` = the file's sha256); ``weights="random"`` with seed s gives
the network as ``drprobe pretrain`` built it before training with seed s (its own initialisers
under ``torch.manual_seed(s)``): with the pretraining seed, the trained network's exact starting
weights (epoch 0, ``init_sha256`` in its provenance), so "pretrained vs random" changes training
only.

Layers: ``penultimate`` is the d-wide pooled vector (the input of the head, also for FF-k and
Matryoshka heads, which read only prefixes of it); ResNet blocks are ``layer1`` ... ``layer4``,
ViT blocks ``blocks.0`` ... (``drprobe layers ckpt:PATH``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.sources.adapters.common import one_line, triple
from drprobe.sources.builtin import seeded_init, sha256_file
from drprobe.sources.registry import ModelBundle, freeze

__all__ = ["CHECKPOINT_FORMAT", "factory", "read_checkpoint"]

#: The ``format`` entry of the files this adapter reads (written by drprobe.pretrain).
CHECKPOINT_FORMAT = "drprobe-pretrain/1"


def read_checkpoint(path: str | Path) -> dict:
    """The checked contents of a ``drprobe pretrain`` ``model.pt``.

    Raises:
        MissingDataError: no such file, or not a readable torch file.
        InvalidValueError: a torch file of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"checkpoint {str(path)!r} does not exist (ckpt:PATH takes the "
                               "model.pt that drprobe pretrain wrote)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged zip, pickle that needs code, ...
        raise MissingDataError(f"cannot read checkpoint {str(path)!r}: "
                               f"{type(err).__name__}: {one_line(err)}"[:300]) from err
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InvalidValueError(f"{str(path)!r} is not a drprobe pretrain checkpoint (format "
                                f"{found!r}, expected {CHECKPOINT_FORMAT!r}); other weight "
                                "files load with checkpoint: PATH on their architecture")
    return data


def factory(spec: str, weights: str, seed: int) -> ModelBundle:
    """Registry factory for ``ckpt:PATH``."""
    from drprobe.sources.smallnets import build_network

    path = spec.split(":", 1)[1]
    data = read_checkpoint(path)
    random = weights == "random"
    with seeded_init(seed if random else 0):  # as drprobe pretrain builds it
        net = build_network(**data["network"])
    if not random:
        try:
            net.load_state_dict(data["state_dict"])
        except RuntimeError as err:
            raise InvalidValueError(f"checkpoint {path!r} does not fit its own network: "
                                    f"{one_line(err)}"[:300]) from err
    return ModelBundle(
        spec=spec, weights=weights, seed=seed if random else None, module=freeze(net),
        input_size=int(data["input_size"]), mean=triple(data["mean"], "mean", spec),
        std=triple(data["std"], "std", spec), classifier=net.classifier_name,
        weights_sha256=None if random else sha256_file(path),
    )
