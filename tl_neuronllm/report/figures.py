"""Figures of a :class:`NeuronResult` and its :class:`EvalResult`, as PNG files.

Drawn with matplotlib's Agg canvas (``matplotlib.figure.Figure``, never ``pyplot``, so the user's backend and
open figures are untouched):

* ``layer_counts.png``: good (up) and bad (down) neurons per layer;
* ``ace_distribution.png``: the distribution of the non-zero ACE scores (symmetric log scale), with
  the selection cut-offs of the good and bad sets;
* ``interventions.png``: per intervention, the change vs the baseline of accuracy, gold probability
  and the share of changed predictions, with bootstrap 95% intervals, beside the random control
  (mean and min-max over seeds);
* ``letters.png``: the predicted-letter distribution under each condition (the "always A" failure
  and what the interventions do to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tl_neuronllm.evaluation.conditions import EXPECTED_DIRECTION
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.html_view import task_base
from tl_neuronllm.result.neuron_result import NeuronResult

FIGURES = ("layer_counts", "ace_distribution", "interventions", "letters")
_GOOD, _BAD, _RAND = "#2a7ab9", "#d1495b", "#9a9a9a"


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def plot_layer_counts(result: NeuronResult, path: str | Path) -> Path:
    """Bar chart of good (above zero) and bad (below zero) neurons per layer."""
    path = Path(path)
    good = np.array(result.layer_counts("good"))
    bad = np.array(result.layer_counts("bad"))
    x = np.arange(result.n_layers)
    fig = _figure(max(6.0, 0.22 * result.n_layers + 2), 3.6)
    ax = fig.add_subplot()
    ax.bar(x, good, color=_GOOD, label=f"good ({int(good.sum())})")
    ax.bar(x, -bad, color=_BAD, label=f"bad ({int(bad.sum())})")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons (bad below zero)")
    ax.set_title(_title(result, "good / bad neurons per layer"), fontsize=10)
    ax.set_xticks(x if result.n_layers <= 32 else x[:: max(1, result.n_layers // 16)])
    lim = max(1, int(max(good.max(initial=0), bad.max(initial=0))))
    ax.set_ylim(-lim * 1.15, lim * 1.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_ace_distribution(result: NeuronResult, path: str | Path) -> Path:
    """Histogram of the non-zero ACE scores with the good/bad selection cut-offs."""
    path = Path(path)
    s = result.scores.flatten().double().numpy()
    nz = s[s != 0]
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    if len(nz):
        lin = float(np.quantile(np.abs(nz), 0.5)) or 1e-12
        ax.set_xscale("symlog", linthresh=lin)
        hi = float(np.abs(nz).max())
        edges = np.concatenate(
            [-np.geomspace(hi, lin, 30), np.linspace(-lin, lin, 11)[1:-1], np.geomspace(lin, hi, 30)]
        )
        ax.hist(nz[nz > 0], bins=edges, color=_GOOD, alpha=0.85, label=f"positive ({int((nz > 0).sum())})")
        ax.hist(nz[nz < 0], bins=edges, color=_BAD, alpha=0.85, label=f"negative ({int((nz < 0).sum())})")
        if result.good:
            ax.axvline(
                result.good[-1].score, color=_GOOD, ls="--", lw=1, label=f"good cut-off (top {len(result.good)})"
            )
        if result.bad:
            ax.axvline(result.bad[-1].score, color=_BAD, ls="--", lw=1, label=f"bad cut-off (bottom {len(result.bad)})")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        ax.legend(frameon=False, fontsize=8)
    else:
        ax.text(0.5, 0.5, "all ACE scores are zero", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("ACE score (symmetric log scale)")
    ax.set_ylabel("neurons")
    ax.set_title(_title(result, f"ACE scores ({len(nz)} of {s.size} neurons non-zero)"), fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_interventions(evaluation: EvalResult, path: str | Path) -> Path:
    """Change vs baseline (with 95% intervals) of accuracy, gold probability and changed predictions,
    identified neurons beside the random control."""
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    rows = [r for r in evaluation.rows if r.name != "baseline"]
    panels = [("accuracy", "Δ accuracy"), ("gold_prob", "Δ gold probability"), ("changed", "changed predictions")]
    fig = _figure(11.5, 3.8)
    axes = fig.subplots(1, 3)
    y = np.arange(len(rows))[::-1]
    for ax, (metric, label) in zip(axes, panels):
        for yi, r in zip(y, rows):
            if not r.available:
                ax.text(0, yi, "n/a", va="center", ha="center", color="gray", fontsize=10)
                continue
            err: list[list[float]] | None = None
            if metric == "changed":
                val = r.metrics["changed"]
            else:
                val, (lo, hi) = r.delta[metric], r.delta_ci[metric]
                err = [[val - lo], [hi - val]]
            ax.errorbar(
                val,
                yi + 0.15,
                xerr=err,
                fmt="o",
                color=_GOOD if EXPECTED_DIRECTION[r.name] > 0 else _BAD,
                capsize=3,
                label="identified" if yi == y[0] else None,
            )
            rm = (
                r.random.get("metrics", {}).get("changed" if metric == "changed" else f"delta_{metric}")
                if r.random
                else None
            )
            if rm:
                ax.errorbar(
                    rm["mean"],
                    yi - 0.15,
                    xerr=[[rm["mean"] - rm["min"]], [rm["max"] - rm["mean"]]],
                    fmt="s",
                    color=_RAND,
                    capsize=3,
                    label="random (mean, min-max)" if yi == y[0] else None,
                )
        if metric != "changed":
            ax.axvline(0, color="black", lw=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_yticks(y)
        ax.set_yticklabels([r.description for r in rows] if metric == "accuracy" else [""] * len(rows))
        ax.tick_params(labelsize=11)
        ax.set_xlabel(label, fontsize=12)
        ax.set_ylim(-0.6, len(rows) - 0.4)
    axes[0].legend(frameon=False, fontsize=10, loc="best")
    fig.suptitle(
        f"{evaluation.task}: interventions on {evaluation.n_items} held-out items "
        f"(baseline accuracy {evaluation.baseline.metrics['accuracy']:.3f}, mode {evaluation.mode})\n"
        f"bars: 95% bootstrap intervals; colour: expected to raise (blue) or lower (red) the scores",
        fontsize=12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_letters(evaluation: EvalResult, path: str | Path) -> Path:
    """Stacked bars of the predicted-letter shares per condition (random: mean over seeds)."""
    path = Path(path)
    bars: list[tuple[str, dict[str, float]]] = []
    for r in evaluation.rows:
        if not r.available:
            continue
        bars.append((r.description, {k: float(v) for k, v in r.letters.items()}))
        if r.random and r.random.get("letters_mean"):
            bars.append(("  random", r.random["letters_mean"]))
    letters = evaluation.letters
    fig = _figure(max(6.0, 0.75 * len(bars) + 2), 4.2)
    ax = fig.add_subplot()
    cmap = _letter_colors(len(letters))
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    total = max(evaluation.n_queries, 1)
    for j, letter in enumerate(letters):
        h = np.array([b[1].get(letter, 0.0) / total for b in bars])
        ax.bar(x, h, bottom=bottom, color=cmap[j], label=letter, width=0.8)
        bottom += h
    ax.set_xticks(x)
    ax.set_xticklabels([b[0] for b in bars], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("share of predictions")
    ax.set_ylim(0, 1)
    ax.legend(title="predicted", frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{evaluation.task}: predicted letters ({evaluation.n_queries} questions)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _letter_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cm = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    return [cm(i % cm.N) for i in range(n)]


def task_title(result: NeuronResult) -> str:
    """The task's name without the split's suffix (``commonsenseqa:identify`` -> ``commonsenseqa``)."""
    return task_base(result.config.get("task", {}).get("name", "?"))


def _title(result: NeuronResult, what: str) -> str:
    c = result.config
    return f"{c.get('model', {}).get('model_name', '?')} / {task_title(result)}\n{what}"


def make_figures(result: NeuronResult, evaluation: EvalResult | None, out_dir: str | Path) -> dict[str, Path]:
    """Draw every figure into ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    figs = {
        "layer_counts": plot_layer_counts(result, out / "layer_counts.png"),
        "ace_distribution": plot_ace_distribution(result, out / "ace_distribution.png"),
    }
    if evaluation is not None:
        figs["interventions"] = plot_interventions(evaluation, out / "interventions.png")
        figs["letters"] = plot_letters(evaluation, out / "letters.png")
    return figs


__all__ = [
    "FIGURES",
    "make_figures",
    "plot_ace_distribution",
    "plot_interventions",
    "plot_layer_counts",
    "plot_letters",
]
