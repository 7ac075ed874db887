"""Which class runs a veille of a given type: "dpe" → jobs.dpe.DpeVeille, etc.

Why lazily by name: each type lives in its own module with its own dependencies, and a
type whose module is missing or broken must fail that veille only (its run is recorded
as failed with the reason), never the scheduler or the other veilles. Tests and later
types plug in with `register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from jobs.types import VeilleKind

BUILT_IN: dict[str, str] = {
    "dpe": "jobs.dpe:DpeVeille",
    "concurrence": "jobs.concurrence:ConcurrenceVeille",
    "dvf": "jobs.dvf_veille:DvfVeille",
}
_registered: dict[str, Callable[[], VeilleKind]] = {}


class UnknownKind(Exception):
    """A veille's type has no class here, or its module cannot be loaded (French)."""


def register(type_name: str, factory: Callable[[], VeilleKind]) -> None:
    """Plug in a type (a class with a no-argument constructor, or any factory)."""
    _registered[type_name] = factory


def unregister(type_name: str) -> None:
    _registered.pop(type_name, None)


def known_types() -> list[str]:
    return sorted({*BUILT_IN, *_registered})


def kind_for(type_name: str) -> VeilleKind:
    """A fresh instance of the type's class; UnknownKind (in French) when it cannot be."""
    factory = _registered.get(type_name)
    if factory is None:
        target = BUILT_IN.get(type_name)
        if target is None:
            raise UnknownKind(f"type de veille inconnu : {type_name!r}")
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UnknownKind(f"le module {module_name} du type {type_name!r} est absent "
                              f"({exc.name})") from None
        except Exception as exc:
            raise UnknownKind(f"le module {module_name} du type {type_name!r} ne se charge "
                              f"pas ({type(exc).__name__} : {exc})") from None
        factory = getattr(module, class_name, None)
        if factory is None:
            raise UnknownKind(f"le module {module_name} n'a pas de classe {class_name}")
    try:
        return factory()
    except Exception as exc:
        raise UnknownKind(f"le type {type_name!r} ne s'instancie pas "
                          f"({type(exc).__name__} : {exc})") from None
