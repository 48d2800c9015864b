"""One validation layer for options: exact types and ranges, checked before any model time.

Every public option (of :class:`~tl_neuronllm.IdentifyConfig`, :class:`~tl_neuronllm.EvalConfig`,
:class:`~tl_neuronllm.ScoringConfig`, :class:`~tl_neuronllm.Intervention`, ``identify(k=...)``,
``rescore`` and the CLI) goes through these helpers, so that a wrong value is refused with a message
naming the option, the value and what is allowed, never coerced into a different meaning:

* counts are ``int`` (``bool`` is refused: ``k=True`` is not one neuron);
* "a count or a fraction" options (``k``, ``z``) take an ``int`` count or a ``float`` fraction in
  ``(0, 1)``; ``k=1.0`` and ``k=1.5`` are refused rather than read as one neuron or truncated;
* floats must be finite (``nan`` and ``inf`` are refused);
* string choices must be one of the listed values (``kv_cache="maybe"`` is refused).
"""

# pyright: strict

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from tl_neuronllm.errors import ConfigError


def check_int(name: str, value: Any, *, min_value: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` (numpy/torch integers accepted; ``bool`` and floats refused).

    Raises:
        ConfigError: if ``value`` is not an integer or is below ``min_value``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    v = int(value)
    if min_value is not None and v < min_value:
        raise ConfigError(f"{name} must be >= {min_value}, got {v}")
    return v


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` in the given range (``bool`` and strings refused).

    Raises:
        ConfigError: if ``value`` is not a real number, is ``nan``/``inf``, or is out of range.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v}")
    bad = (low is not None and (v < low or (low_open and v == low))) or (
        high is not None and (v > high or (high_open and v == high))
    )
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{name} must be in {interval}, got {v:g}")
    return v


def check_count_or_fraction(name: str, value: Any, *, min_count: int = 0) -> int | float:
    """An ``int`` count (``>= min_count``) or a ``float`` fraction in ``(0, 1)``.

    Raises:
        ConfigError: for ``bool``, non-numbers, ``nan``/``inf``, a float outside ``(0, 1)`` (``1.0``
            and ``1.5`` included: write ``1`` for one) or a count below ``min_count``.
    """
    if isinstance(value, bool) or not isinstance(value, (Integral, Real)):
        raise ConfigError(
            f"{name} must be an int count or a float fraction in (0, 1), got {value!r} ({type(value).__name__})"
        )
    if isinstance(value, Integral):
        v = int(value)
        if v < min_count:
            raise ConfigError(
                f"{name} must be a count >= {min_count} (an int) or a fraction in (0, 1) (a float), got {v}"
            )
        return v
    f = float(value)
    if not math.isfinite(f) or not 0 < f < 1:
        raise ConfigError(
            f"{name} = {f!r} is a float, so it must be a fraction in (0, 1); for a count give an int "
            f"(e.g. {name}={int(f) if math.isfinite(f) and f >= 1 else 1})"
        )
    return f


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``.

    Raises:
        ConfigError: naming the option, the value and the choices.
    """
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        raise ConfigError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    try:
        ok = value in choices
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (``0``/``1``/strings refused).

    Raises:
        ConfigError: if ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value
