"""JSON-able dicts from castway's dataclasses and back (live state in Redis, catalog
JSON columns, the API). Handles nested dataclasses, tuples, enums, datetimes and
Optional fields from the type hints; nothing else is needed by the model."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, TypeVar, Union

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, raw: Any) -> Any:
    if raw is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(members[0], raw) if len(members) == 1 else raw
    if origin is tuple:
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(_convert(item, v) for v in raw)
    if origin is list:
        list_args = typing.get_args(tp)
        return [_convert(list_args[0] if list_args else Any, v) for v in raw]
    if origin is dict:
        return dict(raw)
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return from_jsonable(tp, raw)
        if issubclass(tp, Enum):
            return tp(raw)
        if issubclass(tp, datetime):
            return datetime.fromisoformat(raw)
        if tp is float and isinstance(raw, int):
            return float(raw)
    return raw


def from_jsonable(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild dataclass ``cls`` from ``to_jsonable`` output; unknown keys are ignored
    (a newer writer may have added fields), missing ones take their defaults."""
    hints = _hints(typing.cast(type, cls))
    kwargs = {f.name: _convert(hints[f.name], data[f.name])
              for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.name in data}
    return cls(**kwargs)
