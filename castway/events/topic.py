"""A typed pub/sub topic: its name and the codec of its messages.

Messages are frozen dataclasses; on the wire (Redis pub/sub, and the in-process live
state, which round-trips through the same JSON) each is a flat JSON object. A family of
message classes shares one topic and is told apart by the object's ``"type"`` (each
class's ``TYPE``; at most one class of a family has none, and is what an object without
``"type"`` decodes to). Decoding is for peer input: an object that is not one of the
family's messages (an unknown type, a missing or mistyped field) decodes to None and its
subscriber never sees it; keys a newer writer added are ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Codec(Protocol[T]):
    def encode(self, message: T) -> dict[str, Any]: ...
    def decode(self, event: Mapping[str, Any]) -> T | None: ...


class Topic(Generic[T]):
    """A pub/sub channel of the live state and the one codec of what travels on it."""

    __slots__ = ("name", "_codec")

    def __init__(self, name: str, codec: Codec[T]) -> None:
        self.name = name
        self._codec = codec

    def encode(self, message: T) -> dict[str, Any]:
        return self._codec.encode(message)

    def decode(self, event: Mapping[str, Any]) -> T | None:
        """The message in ``event``, or None when it is none of this topic's."""
        return self._codec.decode(event)

    def __repr__(self) -> str:
        return f"Topic({self.name!r})"


_Check = Callable[[Any], tuple[bool, Any]]


def _checker(tp: Any, *, required: bool) -> _Check:
    """A check of one wire value against a field's type: (valid, value to construct
    with). Only what messages need; anything else fails at import, not at run time."""
    if tp is type(None):
        return lambda raw: (raw is None, None)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        checks = [_checker(a, required=required) for a in typing.get_args(tp)]

        def union(raw: Any) -> tuple[bool, Any]:
            for check in checks:
                ok, value = check(raw)
                if ok:
                    return ok, value
            return False, None
        return union
    if tp is str:
        # An identifier without a default (ids, channels) is never empty.
        return lambda raw: (isinstance(raw, str) and (bool(raw) or not required), raw)
    if tp is bool:
        return lambda raw: (isinstance(raw, bool), raw)
    if tp is int:
        return lambda raw: (isinstance(raw, int) and not isinstance(raw, bool), raw)
    if tp is float:
        return lambda raw: (isinstance(raw, int | float) and not isinstance(raw, bool),
                            float(raw) if isinstance(raw, int | float) else None)
    if isinstance(tp, type) and issubclass(tp, Enum):
        enum = tp

        def member(raw: Any) -> tuple[bool, Any]:
            try:
                return True, enum(raw)
            except ValueError:
                return False, None
        return member
    raise TypeError(f"message fields of type {tp!r} are not supported")


class _Form:
    """How one message class goes to the wire and back."""

    def __init__(self, cls: type[Any]) -> None:
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__name__} is not a frozen dataclass")
        tag = getattr(cls, "TYPE", ...)
        if not (tag is None or isinstance(tag, str)):
            raise TypeError(f"{cls.__name__} has no TYPE (its wire tag, or None)")
        self.cls = cls
        self.tag: str | None = tag
        hints = typing.get_type_hints(cls)
        self.fields: list[tuple[str, bool, _Check]] = []
        for f in dataclasses.fields(cls):
            if f.name == "type":
                raise TypeError(f"{cls.__name__}: 'type' is the wire's tag, not a field")
            required = (f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING)
            self.fields.append((f.name, required, _checker(hints[f.name], required=required)))

    def encode(self, message: Any) -> dict[str, Any]:
        event: dict[str, Any] = {} if self.tag is None else {"type": self.tag}
        for name, _, _ in self.fields:
            value = getattr(message, name)
            event[name] = value.value if isinstance(value, Enum) else value
        return event

    def decode(self, event: Mapping[str, Any]) -> Any | None:
        kwargs: dict[str, Any] = {}
        for name, required, check in self.fields:
            if name not in event:
                if required:
                    return None
                continue
            ok, value = check(event[name])
            if not ok:
                return None
            kwargs[name] = value
        return self.cls(**kwargs)


class Messages(Generic[T]):
    """The codec of a closed family of message classes (frozen dataclasses with a
    ``TYPE`` class attribute: the wire's ``"type"``, or None for the one class sent
    without it)."""

    def __init__(self, *classes: type[T]) -> None:
        self._by_class: dict[type[Any], _Form] = {}
        self._by_tag: dict[str | None, _Form] = {}
        for cls in classes:
            form = _Form(cls)
            if form.tag in self._by_tag:
                raise TypeError(f"two messages of one family share the type {form.tag!r}")
            self._by_class[cls] = self._by_tag[form.tag] = form

    def encode(self, message: T) -> dict[str, Any]:
        form = self._by_class.get(type(message))
        if form is None:
            raise TypeError(f"{type(message).__name__} is not a message of this topic")
        return form.encode(message)

    def decode(self, event: Mapping[str, Any]) -> T | None:
        tag = event.get("type")
        form = self._by_tag.get(tag) if tag is None or isinstance(tag, str) else None
        if form is None:
            return None
        message: T | None = form.decode(event)
        return message
