"""One registry type for every named kind of thing, timm-style (``timm/models/_registry.py``).

Mask strategies, pixel maskers, models, dataset adapters, learning methods and evaluation
protocols each own one :class:`Registry`. A decorator (or :meth:`Registry.add_lazy` with a
``"module:function"`` target, imported on first use where import cost matters) fills it;
:meth:`Registry.create` builds an entry by name; :meth:`Registry.names` lists them; an
unknown name raises one ``ValueError`` listing the valid names. An entry carries what it
declares about itself (``needs``: batch columns it reads; ``requires``: objects it must be
given from outside the batch, such as a loaded policy; ``reports``: statistics it produces),
so no other room tests entry names. Part of the leaf vocabulary: imports nothing of medmask.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    """One registered name: its factory (or lazy target) and what it declares."""

    name: str
    factory: Callable[..., Any] | None = None
    target: str | None = None  # "package.module:function", imported on first use
    needs: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    reports: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class Registry(Generic[F]):
    """Names -> factories of one kind of thing (``kind`` names it in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, *, needs: tuple[str, ...] = (),
                 requires: tuple[str, ...] = (), reports: tuple[str, ...] = (),
                 **info: Any) -> Callable[[F], F]:
        """Decorator: register the factory under ``name`` (default: the function's name)."""

        def decorate(factory: F) -> F:
            self._add(Entry(name or factory.__name__, factory, None, tuple(needs),
                            tuple(requires), tuple(reports), MappingProxyType(dict(info))))
            return factory

        return decorate

    def add_lazy(self, name: str, target: str, *, needs: tuple[str, ...] = (),
                 requires: tuple[str, ...] = (), reports: tuple[str, ...] = (),
                 **info: Any) -> None:
        """Register ``"module:function"``, imported only when ``name`` is first used."""
        if ":" not in target:
            raise ValueError(f"a lazy {self.kind} target must be 'module:function', "
                             f"got {target!r}")
        self._add(Entry(name, None, target, tuple(needs), tuple(requires), tuple(reports),
                        MappingProxyType(dict(info))))

    def names(self, filter: str = "") -> list[str]:  # noqa: A002 (timm's name)
        """Sorted registered names, optionally those containing ``filter``."""
        return sorted(n for n in self._entries if filter in n)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; raises ``ValueError`` listing the valid names.

        A name of the form ``"package.module:function"`` that is not registered is an entry
        of its own, imported on use: code outside medmask (a researcher's package, a test)
        can name its factory directly, and every Ray worker resolves it the same way.
        """
        if name not in self._entries and ":" in name:
            return Entry(name, None, name)
        if name not in self._entries:
            valid = ", ".join(self.names()) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}")
        return self._entries[name]

    def get(self, name: str) -> F:
        """The factory of ``name`` (importing a lazy target now)."""
        entry = self.entry(name)
        if entry.factory is not None:
            return entry.factory  # type: ignore[return-value]
        module_name, function_name = str(entry.target).split(":")
        try:
            factory = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"{self.kind} {name!r}: cannot import {entry.target!r} "
                             f"({error})") from error
        if name not in self._entries:
            return factory  # type: ignore[no-any-return]
        self._entries[name] = Entry(name, factory, entry.target, entry.needs, entry.requires,
                                    entry.reports, entry.info)
        return factory  # type: ignore[no-any-return]

    def create(self, name: str, /, *args: Any, **params: Any) -> Any:
        """``get(name)(*args, **params)``."""
        return self.get(name)(*args, **params)

    def _add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        same_target = old is not None and old.target is not None and old.target == entry.target
        if old is not None and old.factory is not entry.factory and not same_target:
            raise ValueError(f"{self.kind} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
