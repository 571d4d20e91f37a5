"""Checkpoint files of the paper's models -> plain state_dicts in torchvision / timm naming.

Formats (``FORMATS``; ``"auto"`` picks one from the file's contents):

- ``"state_dict"``: a plain ``{name: tensor}`` file (``.pt`` / ``.pth``), possibly wrapped in a
  dict under ``"model"`` or ``"state_dict"``.
- ``"robustness"``: the robustness library's adversarially trained checkpoints: a dict with
  ``"model"`` (or ``"state_dict"``) whose keys start with ``module.model.`` (the network, kept),
  ``module.attacker.model.`` (the attacker's copy of the same network, dropped) and
  ``module.normalizer.`` / ``module.attacker.normalizer.`` (the input normaliser's ``new_mean`` /
  ``new_std``, dropped from the weights but reported as the model's mean/std). The same keys
  without the leading ``module.`` are accepted too.
- ``"mrl"``: Matryoshka (MRL) and fixed-feature (FF-k) ResNet50 checkpoints, and any DDP
  state_dict: the ``module.`` prefix is removed. MRL's nested heads
  (``fc.nesting_classifier_0`` ... ``fc.nesting_classifier_8``, reading the first 8, 16, ...,
  2048 pooled neurons; MRL-E has a single ``nesting_classifier_0``) are reduced to the *largest*
  head, which reads every neuron, renamed to ``fc``: it is the only head whose input is the whole
  penultimate layer, so ``classifier(penultimate) == logits`` keeps holding. The smaller heads
  are dropped (probe prefixes with the ``prefix`` selector instead). An FF-k file has one ``fc``
  of shape (1000, k); the loader gives the model a classifier that reads the first k neurons.
- ``"augreg"``: AugReg ViT ``.npz`` files (Google's ``vision_transformer`` / ``big_vision``
  naming, optionally under ``opt/target/``) mapped onto timm's ViT names with the transposes the
  flax layout needs: conv kernels HWIO -> OIHW, dense kernels (in, out) -> (out, in), attention
  ``query/key/value`` kernels (D, heads, head_dim) -> one (3D, D) ``qkv`` weight, ``out`` kernel
  (heads, head_dim, D) -> (D, D). Arrays the mapping does not know keep their npz name, so the
  strict fit check reports them.

Reading is safe by default: ``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)``.
A torch file that needs full unpickling (it stores Python objects such as ``argparse.Namespace``)
is refused unless the caller passes ``trust=True``; unpickling can run arbitrary code, so do that
only for files from a source you trust.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drprobe.errors import DrprobeError, InvalidValueError

__all__ = ["FORMATS", "Converted", "convert", "detect_format", "read_checkpoint"]

FORMATS = ("auto", "state_dict", "robustness", "mrl", "augreg")

_ROBUST_PARTS = re.compile(r"^(module\.)?(attacker|normalizer)\.")
_NESTED_HEAD = re.compile(r"^(?P<head>.+)\.nesting_classifier_(?P<i>\d+)\.(?P<p>weight|bias)$")


@dataclass
class Converted:
    """A checkpoint in torchvision / timm naming.

    Attributes:
        state: ``{name: tensor}`` ready for ``load_state_dict``.
        fmt: the format it was read as (never ``"auto"``).
        mean, std: input normalisation stored in the file (robustness), else None.
    """

    state: dict[str, torch.Tensor]
    fmt: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _is_npz(path: Path) -> bool:
    """True for a zip of ``.npy`` members (torch's zip files hold a ``data.pkl`` instead)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(name.endswith(".npy") for name in names)


def _unpickling_detail(err: Exception) -> str:
    """The informative line of torch's multi-line weights-only error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    tagged = [line for line in lines if line.startswith(("Unsupported", "WeightsUnpickler"))]
    detail = " ".join(tagged[:2]) if tagged else (lines[0] if lines else type(err).__name__)
    return detail[:160]


def _load_trusted(path: Path) -> object:
    """Full unpickling, for files the caller trusts; failures become one-line errors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 -- unpickling can raise anything
        first = str(err).splitlines()[0] if str(err) else ""
        raise DrprobeError(
            f"cannot unpickle checkpoint {str(path)!r} ({type(err).__name__}: {first[:120]})"
        ) from None


def read_checkpoint(path: str | Path, trust: bool = False) -> object:
    """The raw contents of a checkpoint file: a dict of numpy arrays (npz) or what torch stored.

    Raises:
        DrprobeError: the file needs full unpickling and ``trust`` is False, or it is neither a
            PyTorch file nor an npz archive.
    """
    path = Path(path)
    if _is_npz(path):
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name]) for name in archive.files}
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if trust:
            return _load_trusted(path)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            raise DrprobeError(
                f"checkpoint {str(path)!r} is refused: it stores the Python object "
                f"{found.group(1)}, and loading it needs full unpickling, which can run arbitrary "
                "code; pass trust_checkpoint=True only for a file from a source you trust"
            ) from None
        raise DrprobeError(
            f"cannot read checkpoint {str(path)!r} safely ({_unpickling_detail(err)}): it is "
            "damaged, not a checkpoint, or needs full unpickling (trust_checkpoint=True, only "
            "for a file from a source you trust)"
        ) from None
    except Exception as err:  # noqa: BLE001 -- torch raises many types on a non-checkpoint
        first = str(err).splitlines()[0] if str(err) else ""
        raise DrprobeError(
            f"cannot read checkpoint {str(path)!r}: not a PyTorch or .npz file "
            f"({type(err).__name__}: {first[:120]})"
        ) from None


def _state_of(raw: object, path: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping inside a torch checkpoint (unwrapping model/state_dict)."""
    if isinstance(raw, torch.nn.Module):  # only reachable with trust=True
        raw = raw.state_dict()
    if isinstance(raw, Mapping):
        for key in ("model", "state_dict"):
            inner = raw.get(key)
            if isinstance(inner, Mapping) and inner:
                raw = inner
                break
    if isinstance(raw, Mapping) and raw:
        tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    keys = list(raw)[:5] if isinstance(raw, Mapping) else []
    raise InvalidValueError(
        f"checkpoint {path!r} holds no state_dict (a {type(raw).__name__}"
        f"{' with keys ' + ', '.join(map(str, keys)) if keys else ''}); expected tensors by name, "
        "optionally under 'model' or 'state_dict'"
    )


def detect_format(raw: object, path: str = "checkpoint") -> str:
    """The format of raw checkpoint contents: one of ``FORMATS`` other than ``"auto"``."""
    if isinstance(raw, Mapping) and raw and all(isinstance(v, np.ndarray) for v in raw.values()):
        return "augreg"
    keys = list(_state_of(raw, path))
    if any(_ROBUST_PARTS.match(k) or k.startswith("module.model.") for k in keys):
        return "robustness"
    if any(k.startswith("module.") or _NESTED_HEAD.match(k) for k in keys):
        return "mrl"
    return "state_dict"


def _robustness(state: dict[str, torch.Tensor], path: str) -> Converted:
    lead = "module." if any(k.startswith("module.") for k in state) else ""
    model = f"{lead}model."
    kept = {k[len(model):]: v for k, v in state.items() if k.startswith(model)}
    if not kept:
        raise InvalidValueError(
            f"checkpoint {path!r} has no '{model}' weights; robustness checkpoints keep the "
            f"network under 'module.model.' (found e.g. {', '.join(list(state)[:3])})"
        )
    mean, std = (state.get(f"{lead}normalizer.new_{part}") for part in ("mean", "std"))
    if mean is None or std is None:
        return Converted(kept, "robustness")
    return Converted(kept, "robustness", tuple(mean.flatten().tolist()),
                     tuple(std.flatten().tolist()))


def _largest_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each group of MRL nesting heads by its widest head, renamed to the group's name."""
    groups: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        found = _NESTED_HEAD.match(key)
        if found:
            heads = groups.setdefault(found["head"], {})
            heads.setdefault(int(found["i"]), {})[found["p"]] = value
        else:
            out[key] = value
    for name, heads in groups.items():
        widest = max(heads, key=lambda i: (heads[i]["weight"].shape[-1], i))
        for param, value in heads[widest].items():
            out[f"{name}.{param}"] = value
    return out


def _mrl(state: dict[str, torch.Tensor]) -> Converted:
    stripped = {k.removeprefix("module."): v for k, v in state.items()}
    return Converted(_largest_heads(stripped), "mrl")


def _augreg(arrays: dict[str, np.ndarray], path: str) -> Converted:
    """AugReg / big_vision ViT arrays -> timm ViT state_dict (see the module docstring)."""
    prefix = "opt/target/" if "opt/target/embedding/kernel" in arrays else ""
    used: set[str] = set()

    def get(name: str) -> torch.Tensor:
        key = prefix + name
        if key not in arrays:
            raise InvalidValueError(
                f"npz checkpoint {path!r} lacks {key!r}; an AugReg ViT file has embedding/kernel, "
                "cls, Transformer/posembed_input/pos_embedding, Transformer/encoderblock_N/..."
            )
        used.add(key)
        return torch.from_numpy(np.array(arrays[key]))

    blocks = {int(m.group(1)) for k in arrays
              if (m := re.match(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/", k))}
    first = f"{prefix}Transformer/encoderblock_0/"
    # Google's vision_transformer numbers sub-modules LayerNorm_0, MHDPA_1, LayerNorm_2,
    # MlpBlock_3; big_vision numbers them per type: LayerNorm_0, MHDPA_0, LayerNorm_1, MlpBlock_0.
    mha, mlp, ln2 = ((1, 3, 2) if f"{first}MultiHeadDotProductAttention_1/query/kernel" in arrays
                     else (0, 0, 1))
    state = {
        "patch_embed.proj.weight": get("embedding/kernel").permute(3, 2, 0, 1),
        "patch_embed.proj.bias": get("embedding/bias"),
        "cls_token": get("cls"),
        "pos_embed": get("Transformer/posembed_input/pos_embedding"),
        "norm.weight": get("Transformer/encoder_norm/scale"),
        "norm.bias": get("Transformer/encoder_norm/bias"),
    }
    if prefix + "head/kernel" in arrays:
        state["head.weight"] = get("head/kernel").T
        state["head.bias"] = get("head/bias")
    for i in sorted(blocks):
        src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        att = f"{src}MultiHeadDotProductAttention_{mha}/"
        qkv = [get(f"{att}{n}/kernel") for n in ("query", "key", "value")]
        dim = qkv[0].shape[0]
        state[dst + "attn.qkv.weight"] = torch.cat([k.reshape(dim, -1).T for k in qkv])
        state[dst + "attn.qkv.bias"] = torch.cat(
            [get(f"{att}{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        state[dst + "attn.proj.weight"] = get(f"{att}out/kernel").reshape(-1, dim).T
        state[dst + "attn.proj.bias"] = get(f"{att}out/bias")
        for norm, index in (("norm1", 0), ("norm2", ln2)):
            state[f"{dst}{norm}.weight"] = get(f"{src}LayerNorm_{index}/scale")
            state[f"{dst}{norm}.bias"] = get(f"{src}LayerNorm_{index}/bias")
        for fc, dense in (("fc1", 0), ("fc2", 1)):
            state[f"{dst}mlp.{fc}.weight"] = get(f"{src}MlpBlock_{mlp}/Dense_{dense}/kernel").T
            state[f"{dst}mlp.{fc}.bias"] = get(f"{src}MlpBlock_{mlp}/Dense_{dense}/bias")
    state = {k: v.contiguous() for k, v in state.items()}
    # Arrays the mapping does not know stay under their npz names so the fit check names them.
    for key, value in arrays.items():
        if key not in used and key.startswith(prefix):
            state[key] = torch.from_numpy(np.array(value))
    return Converted(state, "augreg")


def convert(raw: object, fmt: str = "auto", path: str = "checkpoint") -> Converted:
    """Raw checkpoint contents (from :func:`read_checkpoint`) -> :class:`Converted`.

    Raises:
        InvalidValueError: unknown ``fmt``, a format that does not match the contents, or a file
            that holds no state_dict.
    """
    if fmt not in FORMATS:
        raise InvalidValueError(
            f"unknown checkpoint format {fmt!r}; valid choices: {', '.join(FORMATS)}"
        )
    found = detect_format(raw, path)
    if fmt == "auto":
        fmt = found
    if (fmt == "augreg") != (found == "augreg"):
        kind, fits = (("an npz archive", "augreg") if found == "augreg"
                      else ("a PyTorch file", "state_dict, robustness, mrl"))
        raise InvalidValueError(
            f"checkpoint {path!r} is {kind}, which cannot be read as format {fmt!r}; "
            f"valid choices for it: {fits}"
        )
    if fmt == "augreg":
        return _augreg(raw, path)  # type: ignore[arg-type]
    state = _state_of(raw, path)
    if fmt == "robustness":
        return _robustness(state, path)
    if fmt == "mrl":
        return _mrl(state)
    return Converted(state, "state_dict")
