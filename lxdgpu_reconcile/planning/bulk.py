"""Making the planner's models in bulk: tens of thousands per plan for a large fleet. Pure.

``trusted`` makes a frozen model from values that are already of its fields' types, without
validating them again; ``gcpause.gc_paused`` pauses Python's cyclic garbage collector while a
plan's objects are made (they hold no reference cycles; its passes over a heap that grows with the
fleet made planning superlinear in the number of users).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

_M = TypeVar("_M", bound=BaseModel)


def trusted(cls: type[_M], fields: dict[str, Any], given: Iterable[str] | None = None) -> _M:
    """An instance of the frozen model ``cls`` made from ``fields`` without validating them.

    ``fields`` must name every field of ``cls``, each value exactly what validation would give
    (tuples for tuples, ``str`` for ``str``, models for models); use it only for values made
    from validated data. ``given`` names the fields the caller set (``model_fields_set``;
    default: all of them). The instance is equal to, and dumps like, the validated one.
    """
    made = cls.__new__(cls)
    object.__setattr__(made, "__dict__", fields)
    object.__setattr__(made, "__pydantic_fields_set__", set(fields if given is None else given))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made
