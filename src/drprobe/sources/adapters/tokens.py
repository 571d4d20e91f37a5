"""Bundles whose layers are hidden states: transformer models for images or text.

:class:`HiddenStatesBundle` extends :class:`~drprobe.sources.models.ModelBundle` without changing
it: the layer code (:mod:`drprobe.sources.layers`) and the extractor
(:mod:`drprobe.features.extract`) recognise it and read ``hidden_states.<i>`` layers from one
forward pass with ``output_hidden_states=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from drprobe.errors import InvalidValueError
from drprobe.sources.registry import ModelBundle

__all__ = ["HIDDEN_PREFIX", "MODALITIES", "HiddenStatesBundle", "is_text"]

HIDDEN_PREFIX = "hidden_states."
MODALITIES = ("image", "text")


@dataclass(eq=False)
class HiddenStatesBundle(ModelBundle):
    """A transformer model whose layers are its hidden states.

    Extra attributes (on top of :class:`ModelBundle`):
        modality: ``"image"`` (inputs are preprocessed images) or ``"text"`` (lists of str).
        tokenizer: a Hugging Face tokenizer (text only).
        head_pooling: how ``"penultimate"`` reads the last hidden state when the model has no
            classifier module (text encoders): ``"cls"`` (first token) or ``"mean"`` (mean over
            real tokens, as sentence-transformers does). Image models with a classification
            head use the input of ``classifier`` instead.

    For text models ``input_size`` is the maximum number of tokens per text (longer texts are
    truncated) and ``mean``/``std`` are unused.
    """

    modality: str = "image"
    tokenizer: Any = None
    head_pooling: str = "cls"

    @property
    def device(self) -> torch.device:
        param = next(self.module.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def encode(self, texts: Sequence[str], max_length: int | None = None,
               fixed_length: bool = False) -> dict[str, torch.Tensor]:
        """Tokenize a batch of texts: truncation to ``max_length`` tokens (default
        ``input_size``), padding to the longest text or, with ``fixed_length``, to
        ``max_length`` (so flattened features have one width). Returns (b, L) tensors.
        """
        if self.modality != "text" or self.tokenizer is None:
            raise InvalidValueError(f"model {self.spec!r} takes images, not texts")
        length = int(max_length or self.input_size)
        enc = self.tokenizer(
            list(texts), padding="max_length" if fixed_length else True, truncation=True,
            max_length=length, return_tensors="pt",
        )
        return dict(enc)

    def hidden_states(self, inputs: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        """One forward pass; returns (hidden states, attention mask or None).

        Args:
            inputs: (b, 3, H, W) images for image models; the dict from :meth:`encode` for text.

        Returns:
            The model's ``hidden_states``: N+1 tensors, each (b, T, D) token sequences or
            (b, C, H, W) maps; and the (b, T) attention mask for text (None for images).
        """
        if isinstance(inputs, Mapping) != (self.modality == "text"):
            wanted = "the dict from encode(texts)" if self.modality == "text" else "an image batch"
            raise InvalidValueError(
                f"model {self.spec!r} takes {wanted}, got a {type(inputs).__name__}"
            )
        device = self.device
        with torch.inference_mode():
            if isinstance(inputs, Mapping):
                batch = {k: v.to(device) for k, v in inputs.items()}
                out = self.module(**batch, output_hidden_states=True)
                mask = batch.get("attention_mask")
            else:
                out = self.module(inputs.to(device), output_hidden_states=True)
                mask = None
        states = getattr(out, "hidden_states", None)
        if states is None and isinstance(out, Mapping):
            states = out.get("hidden_states")
        if not states:
            raise InvalidValueError(f"model {self.spec!r} returned no hidden_states")
        return tuple(states), mask


def is_text(bundle: ModelBundle) -> bool:
    """True for bundles whose inputs are texts."""
    return isinstance(bundle, HiddenStatesBundle) and bundle.modality == "text"
