"""Which params.yaml keys a stage reads: its `main` run on a `Traced` copy of the params.

`Traced` wraps a params section and records the dotted key of every field the code takes from it.
A section's `model_dump` reads every field it returns; `model_copy(update=...)` gives a traced copy
whose updated fields are no longer params.yaml's (the tuning stage's trials override the step budget,
the train stage the tuned values), so reading them records nothing. Dumping the whole Params records
nothing either: the deploy stage copies every param into its lineage manifest, a record of the run
rather than an input to what it decides.
"""
from __future__ import annotations

from collections.abc import Callable
from types import FunctionType, MethodType

from pydantic import BaseModel

from recmoo_dag.config import Params


class Traced:
    def __init__(self, model: BaseModel, prefix: str, reads: set[str], overridden: frozenset[str] = frozenset()):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_overridden", overridden)

    def _key(self, name: str) -> str:
        field = type(self._model).model_fields[name]
        return self._prefix + (field.alias or name)

    def __getattr__(self, name: str):
        model = self._model
        fields = type(model).model_fields
        if name in fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                return Traced(value, self._key(name) + ".", self._reads,
                              frozenset(o.split(".", 1)[1] for o in self._overridden if o.startswith(name + ".")))
            if name not in self._overridden:
                self._reads.add(self._key(name))
            return value
        if name == "model_dump":
            return self._dump
        if name == "model_copy":
            return self._copy
        descriptor = getattr(type(model), name, None)
        if isinstance(descriptor, property):  # properties and methods read fields: through this proxy
            return descriptor.fget(self)
        if isinstance(descriptor, FunctionType):
            return MethodType(descriptor, self)
        return getattr(model, name)

    def __setattr__(self, name, value):
        raise AttributeError("params are frozen")

    def _dump(self, *args, include=None, exclude=None, **kwargs):
        if isinstance(self._model, Params):
            return self._model.model_dump(*args, include=include, exclude=exclude, **kwargs)
        dumped = self._model.model_dump(*args, include=include, exclude=exclude, **kwargs)
        for name in type(self._model).model_fields:
            key = next((k for k in dumped if k == name or k == type(self._model).model_fields[name].alias), None)
            if key is None:
                continue
            value = getattr(self, name)  # records, or descends into a nested section
            if isinstance(value, Traced):
                value.model_dump()
        return dumped

    def _copy(self, *, update: dict | None = None, **kwargs) -> Traced:
        update = update or {}
        return Traced(self._model.model_copy(update=update, **kwargs), self._prefix, self._reads,
                      self._overridden | frozenset(update))


def reads_of(main: Callable[[Params], object], params: Params) -> set[str]:
    """The dotted params.yaml keys `main(params)` reads."""
    reads: set[str] = set()
    main(Traced(params, "", reads))
    return reads
