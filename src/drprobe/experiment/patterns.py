"""Model entries written once for many networks: ``variants`` × ``seeds`` patterns.

A config's model entry may carry ``variants`` (names) and/or ``seeds`` (integers); it then stands
for one entry per (variant, seed), with ``{variant}`` and ``{seed}`` replaced in its strings
(``name``, ``spec``, ``checkpoint``, ...) and, when ``seeds`` is given, random-init twins are
asked for and ``init_seed`` is not, ``init_seed`` set to the seed (a twin per pretraining seed). For the networks that
``drprobe pretrain`` writes to ``OUT/VARIANT/seedK/model.pt``::

    - {name: "{variant}/seed{seed}", spec: "ckpt:OUT/{variant}/seed{seed}/model.pt",
       variants: [ce, mrl], seeds: [0, 1, 2], weights: [pretrained, random]}

is six entries, ``ce/seed0`` … ``mrl/seed2``. Works on the plain data read from YAML, before
validation, so every expanded entry is checked like a hand-written one.
"""

from __future__ import annotations

from typing import Any

from drprobe.errors import ConfigError

__all__ = ["expand_model_patterns"]

FIELDS = ("variants", "seeds")
PLACEHOLDERS = ("{variant}", "{seed}")


def _fill(value: Any, variant: str | None, seed: int | None) -> Any:
    if isinstance(value, str):
        if variant is not None:
            value = value.replace("{variant}", variant)
        return value if seed is None else value.replace("{seed}", str(seed))
    if isinstance(value, list):
        return [_fill(v, variant, seed) for v in value]
    return value


def _values(entry: dict, field: str, kind: type, where: str) -> list | None:
    if field not in entry:
        return None
    values = entry[field]
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values)):
        raise ConfigError(f"{where}.{field}: must be a non-empty list of "
                          f"{'names' if kind is str else 'integers'}, got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}.{field}: repeated entries in {values!r}")
    return values


def _expand(entry: Any, where: str) -> list[Any]:
    if not isinstance(entry, dict) or not any(f in entry for f in FIELDS):
        return [entry]
    variants = _values(entry, "variants", str, where)
    seeds = _values(entry, "seeds", int, where)
    text = " ".join(str(v) for v in entry.values())
    for placeholder, given in zip(PLACEHOLDERS, (variants, seeds)):
        if given is None and placeholder in text:
            raise ConfigError(f"{where}: uses {placeholder} without "
                              f"{'variants' if given is variants else 'seeds'}")
    if "name" not in entry or not any(p in str(entry["name"]) for p in PLACEHOLDERS):
        raise ConfigError(f"{where}.name: a pattern entry needs a name with {{variant}} and/or "
                          "{seed}, so that every network gets its own label")
    base = {k: v for k, v in entry.items() if k not in FIELDS}
    out = []
    for variant in variants or [None]:
        for seed in seeds or [None]:
            one = {k: _fill(v, variant, seed) for k, v in base.items()}
            if seed is not None and "random" in one.get("weights", ["random"]):
                one.setdefault("init_seed", seed)
            out.append(one)
    return out


def expand_model_patterns(data: dict, source: str = "config") -> dict:
    """``data`` with every pattern entry of ``models`` expanded (a new dict; others as they are).

    Raises:
        ConfigError: a malformed ``variants``/``seeds`` list, a placeholder without its list, or
            a pattern whose name would give every network the same label.
    """
    models = data.get("models")
    if not isinstance(models, list):
        return data
    expanded = [one for i, entry in enumerate(models)
                for one in _expand(entry, f"{source}: models.{i}")]
    return {**data, "models": expanded}
