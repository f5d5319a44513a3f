"""Serializer glue shared by the apps' APIs."""

from __future__ import annotations

import copy
import threading

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

_built = threading.local()


class FieldsBuiltOnce(serializers.Serializer):
    """An input serializer whose fields are built once per thread instead of once per instance.

    DRF deep-copies every declared field for each serializer it instantiates, which re-runs the constructor
    of every field of every nested serializer: on POST /api/v1/orders that copying was a tenth of the web
    worker's CPU (py-spy, under load). The copy exists so that one instance may change its fields without
    affecting others; an input serializer that never does can share one set, rebound to each new instance, as
    DRF's ListSerializer already shares one child serializer between all the items it validates. Per thread,
    because a field points to the serializer it is bound to.
    """

    @property
    def fields(self) -> BindingDict:  # type: ignore[override]
        # Cached on the instance like DRF's own cached property, so the rebinding below happens once.
        bound = self.__dict__.get("_fields_built_once")
        if bound is not None:
            return bound
        built = _built.__dict__.get(type(self))
        if built is None:
            built = _built.__dict__[type(self)] = BindingDict(self)
            for name, field in copy.deepcopy(self._declared_fields).items():
                built[name] = field
        built.serializer = self
        for field in built.values():
            field.parent = self
        self.__dict__["_fields_built_once"] = built
        return built
