"""What a result records about its run (:class:`ResultConfig`): the identify options and the provenance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.model.answers import SITE_RULES
from tl_neuronllm.validate import check_choice

#: Reducers of results saved before a result recorded its reducer: each baseline's reducer bore its name.
_LEGACY_REDUCERS = ("qr_neuron", "knowledge_neurons", "activation_contrast")

_IDENTIFY_FIELDS = tuple(f.name for f in fields(IdentifyConfig))
_RECORD_FIELDS = ("k", "model", "task", "versions", "site", "reducer")


@dataclass(frozen=True, eq=False)
class ResultConfig(Mapping[str, Any]):
    """What a result records about its run: the :class:`IdentifyConfig`, ``k``, the model, the task,
    the package versions, the scored site rule and the reducer.

    A frozen record: change it with :meth:`replace` (fields, or any flat key as earlier versions stored
    them), which returns a new config. It also reads (read-only) as the flat JSON dict earlier versions stored (``config["method"]``,
    ``config["task"]["item_ids"]``, ``config.get("z")``), which is what :meth:`to_dict` writes and
    :meth:`from_dict` reads (a dict saved by an earlier version loads the same).

    Attributes:
        identify: The options of the run.
        k: Size of the good and bad sets.
        model: The model's description (name, shape, hook).
        task: The task's name, size and the scored and demonstration item ids.
        versions: Package versions.
        site: The scored position's rule (:data:`tl_neuronllm.model.answers.SITE_RULES`; ``"last"``: the last
            prompt token).
        reducer: The reducer that formed the scores (``"ace"`` or a baseline's name).
        extra: Any other recorded keys (``rescored``, ``selection``, ...).
    """

    identify: IdentifyConfig = field(default_factory=IdentifyConfig)
    k: int | float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    site: str = "last"
    reducer: str = "ace"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("site", self.site, SITE_RULES)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON dict saved in ``config.json``."""
        return {**self.identify.to_dict(), **{k: getattr(self, k) for k in _RECORD_FIELDS}, **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResultConfig:
        """The record of a flat dict (:meth:`to_dict`, or a config saved by an earlier version).

        Raises:
            ValueError: for invalid recorded options.
        """
        if isinstance(d, ResultConfig):
            return replace(d, extra=dict(d.extra))
        ident = IdentifyConfig.from_dict(d, strict=False)
        rec = {k: d[k] for k in _RECORD_FIELDS if k in d}
        rec.setdefault("reducer", ident.method if ident.method in _LEGACY_REDUCERS else "ace")
        extra = {k: v for k, v in d.items() if k not in _IDENTIFY_FIELDS and k not in _RECORD_FIELDS}
        return cls(identify=ident, **rec, extra=extra)

    # ---- the flat mapping view ------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in _IDENTIFY_FIELDS:
            return self.identify.to_dict()[key]
        if key in _RECORD_FIELDS:
            return getattr(self, key)
        return self.extra[key]

    def replace(self, **changes: Any) -> ResultConfig:
        """A new config with ``changes``: fields of the record (``identify=``, ``k=``, ``task=``, ...), options
        of the run by their flat name (``z=0.05``), or other recorded keys (``rescored=True``), which go to
        ``extra``.

        Raises:
            ValueError: an invalid option value.
        """
        own = {k: changes.pop(k) for k in list(changes) if k in _RECORD_FIELDS or k in ("identify", "extra")}
        opts = {k: changes.pop(k) for k in list(changes) if k in _IDENTIFY_FIELDS}
        identify = own.pop("identify", self.identify)
        if opts:
            identify = IdentifyConfig.from_dict({**identify.to_dict(), **opts}, strict=False)
        extra = {**own.pop("extra", self.extra), **changes}
        return replace(self, identify=identify, extra=extra, **own)

    def __iter__(self) -> Iterator[str]:
        return iter((*_IDENTIFY_FIELDS, *_RECORD_FIELDS, *self.extra))

    def __len__(self) -> int:
        return len(_IDENTIFY_FIELDS) + len(_RECORD_FIELDS) + len(self.extra)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.to_dict() == dict(other)

    __hash__ = None  # type: ignore[assignment]


__all__ = ["ResultConfig"]
