"""Config validation with one-line errors: :func:`validate` runs a pydantic model and words its
first problem as the field path and what would be valid
(``datasets[1].n_train: must be a positive integer``)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ValidationError

from drprobe.errors import ConfigError, DrprobeError, InvalidValueError

__all__ = ["checked_by", "comma_list", "describe_error", "positive_options", "validate"]

Model = TypeVar("Model", bound=BaseModel)


def _args(annotation: Any) -> tuple:
    """The inner types of ``list[X]``, ``X | None``, ``Annotated[X, ...]`` (else ``()``)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return typing.get_args(annotation)[:1]
    if origin in (list, Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return ()


def _base(annotation: Any, want: Any) -> Any:
    """The first type inside ``annotation`` (searched through :func:`_args`) matching ``want``."""
    if want(annotation):
        return annotation
    for arg in _args(annotation):
        found = _base(arg, want)
        if found is not None:
            return found
    return None


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _annotation_at(root: type[BaseModel], loc: tuple) -> Any:
    """The annotation of the field at ``loc`` (list items for integer parts), or None."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            current = _base(current, lambda t: typing.get_origin(t) is list)
            current = typing.get_args(current)[0] if current is not None else None
            continue
        model = _base(current, _is_model)
        if model is None or part not in model.model_fields:
            return None
        current = model.model_fields[part].annotation
    return current


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The valid field names of the object at ``loc`` (a pydantic error location)."""
    model = _base(_annotation_at(root, loc), _is_model)
    return list(model.model_fields) if model is not None else []


def _interval(ctx: dict) -> str:
    low = f"({ctx['gt']}" if "gt" in ctx else (f"[{ctx['ge']}" if "ge" in ctx else None)
    high = f"{ctx['lt']})" if "lt" in ctx else (f"{ctx['le']}]" if "le" in ctx else None)
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {low[1:]}"
    return f"{'<' if high[-1] == ')' else '<='} {high[:-1]}"


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(root: type[BaseModel], err: dict) -> tuple[tuple, str]:
    """(location, one-line message) for one pydantic error."""
    kind, loc, got, ctx = err["type"], tuple(err["loc"]), err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        return loc, f"unknown field; valid fields: {', '.join(_fields_at(root, loc[:-1]))}"
    if kind == "missing":
        return loc, "required field is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return loc, f"must be an integer, got {got!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        is_int = _base(_annotation_at(root, loc), lambda t: t is int) is not None
        if is_int and ctx.get("gt") == 0:
            return loc, f"must be a positive integer, got {got!r}"
        return loc, f"must be {_interval(ctx)}, got {got!r}"
    if kind == "literal_error":
        return loc, f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind == "too_short":
        return loc, "must not be empty"
    if kind in ("value_error", "assertion_error"):
        return loc, str(ctx.get("error", err["msg"]))
    return loc, f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"




def describe_error(root: type[BaseModel], err: dict) -> str:
    """``FIELD.PATH: problem`` for one pydantic error of a ``root`` model's validation."""
    loc, msg = _message(root, err)
    return f"{_path(loc)}: {msg}"


def validate(root: type[Model], data: dict, source: str) -> Model:
    """``root.model_validate(data)``, the first problem as one line ``SOURCE: FIELD: problem``.

    Raises:
        ConfigError: the first validation error, located and worded by :func:`describe_error`.
    """
    try:
        return root.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        raise ConfigError(f"{source}: {describe_error(root, first)}") from None


def checked_by(check: Callable[[Any], Any]) -> AfterValidator:
    """A field validator running ``check``, the setting's own check shared with the code that
    uses it (the same one-line message, located by the config's field path); keeps the value.
    Use as ``Annotated[T, checked_by(check)]``."""
    def run(value: Any) -> Any:
        try:
            check(value)
        except DrprobeError as err:
            raise ValueError(str(err)) from None
        return value
    return AfterValidator(run)


# ------------------------------------------------------------------ command-line values


def comma_list(text: str, kind: type = str, what: str = "the value") -> tuple:
    """Comma-separated option text as a tuple of ``kind`` (blanks dropped, names stripped):
    ``"1, 2,"`` -> ``(1, 2)``; a value ``kind`` refuses is one line naming ``what``."""
    try:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        name = {float: "numbers", int: "integers"}.get(kind, "values")
        raise InvalidValueError(f"{what} must be comma-separated {name}; got {text!r}") from None


def positive_options(**values: int | None) -> None:
    """Refuse, on one line naming its ``--flag``, an option value below 1 (None passes)."""
    for name, value in values.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise InvalidValueError(f"{flag} must be a positive integer; got {value}")
