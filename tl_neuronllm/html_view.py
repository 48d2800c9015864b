"""HTML pieces shared by the notebook displays (``_repr_html_`` of the results) and the HTML report.

Foundation layer (it imports only :mod:`tl_neuronllm.errors`): no network, no CDN. Every piece sits inside ``<div class="tlnl">`` with a
stylesheet scoped to that class, so that a notebook's own styles and these do not leak into each other. The
report (:mod:`tl_neuronllm.report.html_assets`) embeds the same :data:`STYLE`.

"Where a neuron fires" (:func:`token_strip`): the tokens of a prompt, each with a background whose strength is
the neuron's activation on it (blue positive, red negative, scaled by the largest ``|activation|``), the
answer position (the site where the method scores) outlined.
"""

# pyright: strict

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from tl_neuronllm.errors import MissingDependency

__all__ = [
    "STYLE",
    "esc",
    "fire_colour",
    "grid",
    "num",
    "panel",
    "require_pandas",
    "task_base",
    "token_strip",
    "visible",
]

#: The scoped stylesheet of the displays (the report's table and card look, under ``.tlnl``).
STYLE = """
.tlnl{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222}
.tlnl h4{font-size:14px;margin:8px 0 4px}.tlnl .note{color:#666;font-size:12px}
.tlnl table.grid{border-collapse:collapse;margin:4px 0}
.tlnl table.grid td,.tlnl table.grid th{border-bottom:1px solid #e4e4e4;padding:2px 7px;text-align:right;white-space:nowrap}
.tlnl table.grid td:first-child,.tlnl table.grid th:first-child{text-align:left}
.tlnl table.grid thead th{background:#f4f4f4}.tlnl table.grid td.txt{text-align:left}.tlnl .scroll{overflow-x:auto}
.tlnl .role-good{color:#2a7ab9;font-weight:600}.tlnl .role-bad{color:#d1495b;font-weight:600}
.tlnl .fire{font-family:ui-monospace,monospace;font-size:12px;line-height:1.9;white-space:pre-wrap;word-break:break-all;
  border:1px solid #e4e4e4;border-radius:4px;padding:4px 6px;margin:2px 0 6px;max-width:100%}
.tlnl .fire span{border-radius:2px}.tlnl .fire span.site{outline:2px solid #111;outline-offset:0}
.tlnl .fire .gap{color:#999}
"""


def require_pandas() -> Any:
    """The ``pandas`` module, imported on demand (pandas is optional).

    Raises:
        MissingDependency: (an ``ImportError``) if pandas is not installed, saying what to install.
    """
    try:
        import pandas as pd  # pyright: ignore[reportMissingTypeStubs]
    except ImportError:
        raise MissingDependency("to_pandas() needs pandas, which is not installed: pip install pandas") from None
    return pd


def task_base(name: Any) -> str:
    """A task's name without the suffix ``Task.split`` adds (``commonsenseqa:identify`` -> ``commonsenseqa``)."""
    base, _, suffix = str(name).rpartition(":")
    return base if base and suffix in ("identify", "heldout", "demo") else str(name)


def esc(x: Any) -> str:
    """``x`` as HTML-escaped text."""
    return html.escape(str(x), quote=True)


def num(v: Any, spec: str = ".3f") -> str:
    """A number formatted with ``spec``; ``–`` for None, NaN and inf."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(float(v), spec)


def visible(token: str) -> str:
    """A token with its whitespace visible: spaces as ``␣``, newlines and tabs escaped."""
    return token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t")


def grid(head: Sequence[str], rows: Sequence[Sequence[Any]], *, classes: Sequence[str] = ()) -> str:
    """A ``table.grid`` of already formatted cells (escaped here); ``classes`` gives per-column cell classes."""
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs: list[str] = []
    for r in rows:
        tds = "".join(
            f'<td class="{classes[i]}">{esc(c)}</td>' if i < len(classes) and classes[i] else f"<td>{esc(c)}</td>"
            for i, c in enumerate(r)
        )
        trs.append(f"<tr>{tds}</tr>")
    return f'<div class="scroll"><table class="grid"><thead><tr>{ths}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>'


def panel(title: str, body: str, note: str = "") -> str:
    """The display's frame: the scoped stylesheet, a title, the body (HTML) and a note (text)."""
    foot = f'<div class="note">{esc(note)}</div>' if note else ""
    return f'<div class="tlnl"><style>{STYLE}</style><h4>{esc(title)}</h4>{body}{foot}</div>'


def fire_colour(a: float, scale: float) -> str:
    """Background of a token with activation ``a`` (blue positive, red negative; alpha ``|a| / scale``)."""
    if not math.isfinite(a) or scale <= 0:
        return "transparent"
    alpha = min(1.0, abs(a) / scale) * 0.85
    rgb = "42,122,185" if a >= 0 else "209,73,91"
    return f"rgba({rgb},{alpha:.2f})"


def token_strip(
    tokens: Sequence[str], acts: Sequence[float], site: int, *, scale: float | None = None, start: int = 0
) -> str:
    """One prompt's tokens coloured by a neuron's activation, the answer position (``site``) outlined.

    ``start``: index of the first given token in the prompt (tokens before it are left out, shown as ``…``).
    ``scale``: the activation of full colour (default: the largest ``|activation|`` shown).

    Raises:
        ValueError: if ``tokens`` and ``acts`` differ in length.
    """
    if len(tokens) != len(acts):
        raise ValueError(f"token_strip: {len(tokens)} tokens but {len(acts)} activations")
    finite = [abs(float(a)) for a in acts if math.isfinite(float(a))]
    scale = scale if scale is not None else (max(finite) if finite else 0.0)
    spans = ['<span class="gap">… </span>'] if start > 0 else []
    for i, (t, a) in enumerate(zip(tokens, acts)):
        pos = start + i
        cls = ' class="site"' if pos == site else ""
        title = f"{visible(t)} (position {pos}{', answer position' if pos == site else ''}): {num(float(a), '+.3g')}"
        text = t.replace("\n", "↵\n")
        spans.append(
            f'<span{cls} style="background:{fire_colour(float(a), scale)}" title="{esc(title)}">{esc(text)}</span>'
        )
    return f'<div class="fire">{"".join(spans)}</div>'
