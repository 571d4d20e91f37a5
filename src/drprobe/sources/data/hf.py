"""``hf:NAME_OR_PATH``: image classification datasets through Hugging Face ``datasets``.

Offline: a folder written by ``save_to_disk`` (a ``DatasetDict`` or one ``Dataset``), a
``.parquet`` file, or a folder of parquet files named by split (``train-00000-of-00001.parquet``,
``test.parquet``, also under ``data/``). Online: a dataset name on the Hub (``config=`` picks a
configuration). Needs ``pip install datasets``.

Splits: ``train`` is the ``train`` split; ``test`` is ``test``, else ``validation``, else
``val``. A source with only one split is split into train/test with
:func:`~drprobe.sources.data.base.split_positions` (``test_fraction``, ``seed``).
Columns: the image column is the one typed ``Image`` (else named ``image``, ``img``,
``pixel_values``); the label column the one typed ``ClassLabel`` (else named ``label``,
``labels``, ``fine_label``); ``image_column=`` / ``label_column=`` override. Class names come
from the ``ClassLabel``; otherwise labels are encoded by
:func:`~drprobe.sources.data.base.encode_labels` over all splits together.
"""

from __future__ import annotations

import re
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.data.base import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    ImageDataset,
    as_uint8_images,
    check_split,
    encode_labels,
    split_positions,
)
from drprobe.sources.data.images import (
    common_side,
    decode_image,
    image_size,
    pil_to_rgb,
    stack_images,
)

TEST_SPLITS = ("test", "validation", "val")
IMAGE_NAMES = ("image", "img", "pixel_values")
LABEL_NAMES = ("label", "labels", "fine_label")
INSTALL_HINT = "pip install datasets"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MissingDataError(f"hf: datasets need the 'datasets' package; {INSTALL_HINT}") from None
    return datasets


def _parquet_splits(folder: Path) -> dict[str, Any]:
    """Tables of a folder of parquet files, grouped by the split word their name starts with."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: dict[str, list[Path]] = {}
    for f in sorted(folder.rglob("*.parquet")):
        word = re.split(r"[-_.]", f.name, maxsplit=1)[0]
        groups.setdefault(word, []).append(f)
    return {k: pa.concat_tables([pq.read_table(f) for f in fs]) for k, fs in groups.items()}


def open_hf(path_or_name: str, config: str | None = None) -> dict[str, Any]:
    """The splits of a Hugging Face dataset as ``{split name: datasets.Dataset}``.

    A single unnamed ``Dataset`` (one parquet file, or ``save_to_disk`` of a ``Dataset``) comes
    back as ``{"all": ds}``.
    """
    datasets = _datasets()
    path = Path(path_or_name)
    if path.is_file() and path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {"all": datasets.Dataset(pq.read_table(path))}
    if path.is_dir():
        if any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))
            return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"all": loaded}
        tables = _parquet_splits(path)
        if not tables:
            raise MissingDataError(
                f"hf: {path} holds neither a save_to_disk dataset nor parquet files"
            )
        return {k: datasets.Dataset(t) for k, t in tables.items()}
    if path.suffix == ".parquet" or path_or_name.startswith((".", "/", "~")):
        raise MissingDataError(f"hf: dataset file or folder {path} not found")
    try:
        return dict(datasets.load_dataset(path_or_name, config))
    except Exception as err:  # noqa: BLE001 -- network, auth, missing names: all "not here"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingDataError(
            f"hf: cannot load {path_or_name!r} from the Hub ({reason}); on an offline machine "
            f"pass a save_to_disk folder or parquet file instead"
        ) from None


def _pick_column(features: dict, given: str | None, kind: str, typename: str,
                 names: tuple[str, ...], source: str) -> str:
    if given is not None:
        if given not in features:
            raise InvalidValueError(
                f"hf: {source} has no column {given!r}; valid: {', '.join(features)}"
            )
        return given
    typed = [c for c, f in features.items() if type(f).__name__ == typename]
    named = [c for c in names if c in features]
    if typed or named:
        return (typed or named)[0]
    raise InvalidValueError(
        f"hf: {source}: no {kind} column found (columns: {', '.join(features)}); "
        f"pass {kind}_column="
    )


def _cell_data(value: Any) -> Any:
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        data = value.get("bytes") or value.get("path")
        if data is None:
            raise DrprobeError("hf: image cell has neither bytes nor path")
        return data
    return value


def _cell_size(value: Any) -> tuple[int, ...]:
    """(width, height) of one image cell (shape for array cells), reading headers only."""
    from PIL import Image

    data = _cell_data(value)
    if isinstance(data, (bytes, bytearray, str)):
        return image_size(data)
    return data.size if isinstance(data, Image.Image) else np.shape(data)[:2]


def _image_array(value: Any, side: int | None) -> np.ndarray:
    """One cell of an image column as (H, W, 3) ``uint8`` RGB."""
    from PIL import Image

    value = _cell_data(value)
    if isinstance(value, (bytes, bytearray, str)):
        return decode_image(value, side)
    if isinstance(value, Image.Image):
        return pil_to_rgb(value, side)
    arr = as_uint8_images(np.asarray(value)[None], "hf: image cell")[0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return arr if side is None else pil_to_rgb(Image.fromarray(arr), side)


def load_hf(
    path_or_name: str,
    split: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    config: str | None = None,
    side: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    name: str | None = None,
) -> ImageDataset:
    """One split of a Hugging Face image classification dataset (see the module docstring).

    Images are decoded to RGB ``uint8`` and stacked by
    :func:`~drprobe.sources.data.images.stack_images` (``side`` resizes).
    """
    check_split(split)
    name = name or f"hf:{path_or_name}"
    splits = open_hf(path_or_name, config)
    test_key = next((k for k in TEST_SPLITS if k in splits), None)
    official = "train" in splits and test_key is not None
    if not official and len(splits) != 1:
        raise MissingDataError(
            f"{name}: needs splits 'train' and one of {', '.join(TEST_SPLITS)}, or a single "
            f"split; found {', '.join(sorted(splits))}"
        )
    first = next(iter(splits.values()))
    features = dict(first.features)
    img_col = _pick_column(features, image_column, "image", "Image", IMAGE_NAMES, name)
    lab_col = _pick_column(features, label_column, "label", "ClassLabel", LABEL_NAMES, name)
    used = [splits["train"], splits[test_key]] if official else [first]
    feature = features[lab_col]
    if type(feature).__name__ == "ClassLabel":
        classes = list(feature.names)
        codes = [np.asarray(list(ds[lab_col]), dtype=np.int64) for ds in used]
        if any(c.size and c.min() < 0 for c in codes):
            raise InvalidValueError(f"{name}: column {lab_col!r} has unlabelled rows (-1)")
    else:
        raw = [list(ds[lab_col]) for ds in used]
        flat, classes = encode_labels(list(chain(*raw)), f"{name} column {lab_col!r}")
        cuts = np.cumsum([len(r) for r in raw])[:-1]
        codes = np.split(flat, cuts)
    if type(features[img_col]).__name__ == "Image":  # decode ourselves, to RGB
        used = [d.cast_column(img_col, _datasets().Image(decode=False)) for d in used]
    side = common_side((_cell_size(v) for d in used for v in d[img_col]), side)
    if official:
        ds, labels = used[0 if split == "train" else 1], codes[0 if split == "train" else 1]
    else:
        keep = split_positions(codes[0], split, test_fraction, seed)
        ds, labels = used[0].select(keep.tolist()), codes[0][keep]
    images = stack_images((_image_array(v, side) for v in ds[img_col]), side, name)
    return ImageDataset(name, split, images, labels.astype(np.int64), classes)
