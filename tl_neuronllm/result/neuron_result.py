"""The result of :func:`tl_neuronllm.identify`: scores, ranked good/bad neurons, save/load, export
and interventions.

Saved as a directory: ``tensors.safetensors`` (ACE scores, the streaming state, mean site
activations) and ``config.json`` (everything needed to reproduce the run: model shape and name,
hook, method, task, seed, options, package versions).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float, Int
from safetensors.torch import save_file
from torch import Tensor

from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.config.result import ResultConfig
from tl_neuronllm.errors import InterventionError
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.result.display import result_frame, result_html
from tl_neuronllm.result.files import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_NAME,
    TENSORS_FILE,
    ResultFileError,
    config_digest,
    read_result,
)
from tl_neuronllm.result.interventions import Intervention, Mode, Positions, intervene, make_hooks
from tl_neuronllm.scoring.ace import ACEState, select
from tl_neuronllm.scoring.reducers import Reducer

Role = Literal["good", "bad", "both"]
__all__ = [
    "FORMAT",
    "FORMAT_NAME",
    "InterventionContext",
    "Neuron",
    "NeuronResult",
    "ResultFileError",
    "Role",
    "build_result",
]


class Neuron(NamedTuple):
    """One neuron with its ACE score."""

    layer: int
    neuron: int
    score: float

    @property
    def label(self) -> str:
        """TransformerLens-style label ``L{layer}N{neuron}``."""
        return f"L{self.layer}N{self.neuron}"


@dataclass
class NeuronResult:
    """Good and bad neurons of a model for a task.

    Attributes:
        scores: Signed ACE scores ``[n_layers, d_mlp]`` (float32, CPU); > 0 good, < 0 bad.
        good: Top-k neurons by ACE with ACE > 0, best first.
        bad: Bottom-k neurons by ACE with ACE < 0, most negative first.
        state: The streaming statistics behind the scores: an :class:`ACEState` (membership counts, ES
            means/stds), or a baseline's reducer (:mod:`tl_neuronllm.attribution.baselines`).
        act_mean: Mean site activation over the scored proxies (used by ``mode="mean"``).
        config: The run's configuration and provenance (a :class:`~tl_neuronllm.config.result.ResultConfig`, which
            also reads as the flat dict of earlier versions); :meth:`identify_config` gives its options.
        stats: Summary numbers of the identification run (accuracy on the scored items, time).
        attributions: Per-item, per-proxy attributions ``[items, proxies, n_layers, d_mlp]`` when the
            run kept them (``identify(..., keep_attributions=True)``); :func:`tl_neuronllm.rescore`
            re-forms the candidate sets, filter and proxy subset from them without the model.
        proxy_mask: ``[items, proxies]`` 1 where an item has that proxy (items may have fewer proxies
            than options allow), with ``attributions``.
    """

    scores: Float[Tensor, "n_layers d_mlp"]
    good: list[Neuron]
    bad: list[Neuron]
    state: ACEState | Reducer
    act_mean: Float[Tensor, "n_layers d_mlp"] | None = None
    config: ResultConfig = field(default_factory=ResultConfig)
    stats: dict[str, Any] = field(default_factory=dict)
    attributions: Float[Tensor, "items proxies n_layers d_mlp"] | None = None
    proxy_mask: Float[Tensor, "items proxies"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, ResultConfig):  # a flat dict, as earlier versions took
            self.config = ResultConfig.from_dict(self.config)

    # ---- views --------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.scores.shape[1])

    @property
    def hook_names(self) -> list[str]:
        hook = self.config.get("hook", "hook_post")
        return [f"blocks.{layer}.mlp.{hook}" for layer in range(self.n_layers)]

    @property
    def site(self) -> str:
        """The rule of the scored position (``"last"``: the last prompt token; see ``config.site``)."""
        return self.config.site

    def identify_config(self) -> IdentifyConfig:
        """The :class:`~tl_neuronllm.config.identify.IdentifyConfig` the result was identified with (its method as
        recorded, also one not registered in this process)."""
        return self.config.identify

    def _ace_state(self) -> ACEState:
        if not isinstance(self.state, ACEState):
            raise ValueError(f"this result was formed by the {type(self.state).__name__}, which has no ES statistics")
        return self.state

    @property
    def es_mean(self) -> Float[Tensor, "n_layers d_mlp"]:
        """Mean per-item attribution ``ES_j`` (before candidate sets and the ambiguity filter).

        Raises:
            ValueError: for a baseline's result.
        """
        return self._ace_state().es_mean_std()[0]

    @property
    def es_std(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._ace_state().es_mean_std()[1]

    def neurons(self, role: Role) -> list[Neuron]:
        """The neurons of a role (``"both"``: good then bad)."""
        if role == "good":
            return list(self.good)
        if role == "bad":
            return list(self.bad)
        if role == "both":
            return list(self.good) + list(self.bad)
        raise ValueError(f"role must be 'good', 'bad' or 'both', got {role!r}")

    def labels(self, role: Role = "both") -> list[str]:
        """``L{layer}N{neuron}`` labels."""
        return [n.label for n in self.neurons(role)]

    def mask(self, role: Role) -> Int[Tensor, "n_layers d_mlp"]:
        """Boolean ``[n_layers, d_mlp]`` mask of a role's neurons."""
        m = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.bool)
        for n in self.neurons(role):
            m[n.layer, n.neuron] = True
        return m

    def layer_counts(self, role: Role) -> list[int]:
        """Number of a role's neurons in each layer."""
        counts = [0] * self.n_layers
        for n in self.neurons(role):
            counts[n.layer] += 1
        return counts

    def with_k(self, k: int | float) -> NeuronResult:
        """The same scores with top-``k`` good and bad sets (count or fraction of all neurons)."""
        cfg = ResultConfig.from_dict(self.config).replace(k=k)
        return NeuronResult(
            self.scores,
            _ranked(self.scores, k, 1),
            _ranked(self.scores, k, -1),
            self.state,
            self.act_mean,
            cfg,
            dict(self.stats),
            self.attributions,
            self.proxy_mask,
        )

    def fingerprint(self) -> str:
        """A hash of what an evaluation of this result measured: the good and bad sets (labels and scores),
        the hook, the method and the model (its weight fingerprint when recorded) and the identification
        items. An :class:`~tl_neuronllm.evaluation.eval_result.EvalResult` records it, and the reports refuse
        an evaluation of another result."""
        import hashlib

        c = self.config
        body = {
            "good": [[n.layer, n.neuron, f"{n.score:.9g}"] for n in self.good],
            "bad": [[n.layer, n.neuron, f"{n.score:.9g}"] for n in self.bad],
            "hook": c.get("hook"),
            "method": c.get("method"),
            "model": {key: c.get("model", {}).get(key) for key in ("model_name", "n_layers", "d_mlp", "weights")},
            "items": c.get("task", {}).get("item_keys") or c.get("task", {}).get("item_ids"),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]

    def summary(self) -> str:
        """A few lines describing the result."""
        c = self.config
        lines = [
            f"NeuronResult: {c.get('model', {}).get('model_name', '?')} on task {c.get('task', {}).get('name', '?')!r} "
            f"({c.get('task', {}).get('n_scored', '?')} items x {c.get('n_proxies', '?')} proxies, method {c.get('method', '?')}, "
            f"mode {c.get('mode', '?')})",
            f"  good: {len(self.good)} neurons, top {', '.join(n.label for n in self.good[:5])}",
            f"  bad:  {len(self.bad)} neurons, top {', '.join(n.label for n in self.bad[:5])}",
            f"  good per layer: {self.layer_counts('good')}",
            f"  bad per layer:  {self.layer_counts('bad')}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return result_html(self)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per good and bad neuron: ``label``, ``role``, ``rank``, ``layer``, ``neuron``,
        ``score`` (ACE) and ``act_mean`` when the result has it; int64 / float64 columns. Raises: MissingDependency
        (an ``ImportError``) without pandas."""
        return result_frame(self)

    # ---- interventions ------------------------------------------------------------------
    def intervention(
        self,
        role: Role,
        mode: Mode = "zero",
        *,
        factor: float = 2.0,
        value: float | None = None,
        positions: Positions = "site",
    ) -> Intervention:
        """An :class:`Intervention` on a role's neurons."""
        values: float | Tensor | None = value
        if mode == "mean":
            if self.act_mean is None:
                raise ValueError("this result has no mean activations; mode='mean' is unavailable")
            values = self.act_mean
        return Intervention(tuple((n.layer, n.neuron) for n in self.neurons(role)), mode, factor, values, positions)

    def hooks(
        self,
        role: Role = "good",
        mode: Mode = "zero",
        *,
        factor: float = 2.0,
        value: float | None = None,
        positions: Positions = "site",
        site: Int[Tensor, " batch"] | None = None,
        model: HookedModel | None = None,
    ) -> list[tuple[str, Any]]:
        """Plain ``(hook_name, fn)`` forward hooks for ``run_with_hooks`` / ``model.hooks``.

        Give ``model`` to check, when the hooks are built, that it has this result's layers and widths
        (a deeper model would otherwise get the hooks on its first layers). Without it, each hook
        still checks its activation's width when it fires.

        Raises:
            ValueError: for a model of another shape or without the hooks, or bad options.
        """
        if model is not None:
            self._check_model(model)
        iv = self.intervention(role, mode, factor=factor, value=value, positions=positions)
        return make_hooks(self.hook_names, iv, site, d_mlp=self.d_mlp)

    def intervene(
        self,
        model: HookedModel,
        role: Role = "good",
        mode: Mode = "zero",
        *,
        factor: float = 2.0,
        value: float | None = None,
        positions: Positions = "site",
    ) -> InterventionContext:
        """Context manager applying an intervention; the hooks are removed on exit, even on error. The
        object may be used for several ``with`` blocks in turn, not entered again inside its own block.

        Raises:
            ValueError: a model of another shape; InterventionError: (on entry) the object is already active.
        """
        self._check_model(model)
        hooks = self.hooks(role, mode, factor=factor, value=value, positions=positions, model=model)
        return InterventionContext(lambda: intervene(model, hooks), f"{role} neurons, {mode}")

    def suppress(self, model: HookedModel, role: Role = "good", *, positions: Positions = "site") -> Any:
        """Zero a role's neurons (context manager)."""
        return self.intervene(model, role, "zero", positions=positions)

    def enhance(
        self, model: HookedModel, role: Role = "good", factor: float = 2.0, *, positions: Positions = "site"
    ) -> Any:
        """Multiply a role's neurons by ``factor`` (context manager)."""
        return self.intervene(model, role, "scale", factor=factor, positions=positions)

    def mean_ablate(self, model: HookedModel, role: Role = "good", *, positions: Positions = "site") -> Any:
        """Replace a role's neurons by their mean activation over the scored items (context manager)."""
        return self.intervene(model, role, "mean", positions=positions)

    def set(self, model: HookedModel, role: Role, value: float, *, positions: Positions = "site") -> Any:
        """Set a role's neurons to ``value`` (context manager)."""
        return self.intervene(model, role, "set", value=value, positions=positions)

    def _check_model(self, model: HookedModel) -> None:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError(f"{type(model).__name__} is not a TransformerLens model (no cfg)")
        if (getattr(cfg, "n_layers", None), getattr(cfg, "d_mlp", None)) != (self.n_layers, self.d_mlp):
            raise ValueError(
                f"this result is for a model with {self.n_layers} layers x {self.d_mlp} neurons; the given model has "
                f"{getattr(cfg, 'n_layers', None)} x {getattr(cfg, 'd_mlp', None)}"
            )
        hook_dict = getattr(model, "hook_dict", None)
        if isinstance(hook_dict, dict):
            missing = [n for n in self.hook_names if n not in hook_dict]
            if missing:
                raise ValueError(
                    f"the model has no hook {missing[0]!r} (layer {missing[0].split('.')[1]}), which this "
                    "result's neurons live on"
                )

    # ---- export and persistence ---------------------------------------------------------
    def to_csv(self, path: str | Path, stability: Any = None) -> Path:
        """Write ``layer,neuron,label,score,role`` rows (good then bad); with a ``stability`` (from
        :meth:`stability`) also a ``frequency`` column: the share of resamples that select the neuron in
        its role.

        Raises:
            ValueError: a ``stability`` of another model shape.
        """
        if stability is not None and tuple(stability.frequency_good.shape) != (self.n_layers, self.d_mlp):
            raise ValueError(
                f"the stability is for {tuple(stability.frequency_good.shape)} neurons, this result for "
                f"{(self.n_layers, self.d_mlp)}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["layer", "neuron", "label", "score", "role"] + (["frequency"] if stability is not None else []))
            for role in ("good", "bad"):
                for n in self.neurons(role):  # type: ignore[arg-type]
                    extra = [f"{stability.frequency(n.layer, n.neuron, role):.6g}"] if stability is not None else []
                    w.writerow([n.layer, n.neuron, n.label, f"{n.score:.9g}", role] + extra)
        return path

    def save(self, path: str | Path) -> Path:
        """Save to a directory (safetensors + JSON); :meth:`load` reads it back."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"scores": self.scores.contiguous()}
        tensors.update({f"state.{k}": v.contiguous() for k, v in self.state.tensors().items()})
        if self.act_mean is not None:
            tensors["act_mean"] = self.act_mean.contiguous()
        if self.attributions is not None:
            tensors["attributions"] = self.attributions.contiguous()
            tensors["proxy_mask"] = (
                self.proxy_mask.contiguous() if self.proxy_mask is not None else torch.ones(self.attributions.shape[:2])
            )
        config = json.loads(json.dumps(self.config.to_dict(), default=str))  # as config.json will hold it
        save_file(tensors, str(path / TENSORS_FILE), metadata={"config_digest": config_digest(config)})
        meta = {
            "format": FORMAT,
            "config": config,
            "stats": self.stats,
            "good": [list(n) for n in self.good],
            "bad": [list(n) for n in self.bad],
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))
        self.to_csv(path / "neurons.csv")
        return path

    @classmethod
    def load(cls, path: str | Path) -> NeuronResult:
        """Load a result saved with :meth:`save` (also by an earlier version), checking that its parts
        belong together.

        Raises:
            FileNotFoundError: if ``path`` lacks the result files.
            ResultFileError: (a ``ValueError``, naming the file) for an unreadable or truncated file,
                another format or version, tensors whose shapes disagree with each other or with the
                recorded model, non-finite scores, or good/bad lists that disagree with the scores.
        """
        parts = read_result(Path(path))
        good, bad = ([Neuron(*x) for x in parts.pop(role)] for role in ("good", "bad"))
        return cls(good=good, bad=bad, **parts)


class InterventionContext:
    """What :meth:`NeuronResult.intervene` (and ``suppress``, ``enhance``, ...) return: the hooks are attached
    on entry and removed on exit. Entering the same object again inside its own block is refused (the
    intervention would apply twice, and the generator behind it cannot be entered twice)."""

    def __init__(self, make: Any, what: str) -> None:
        self._make, self._what = make, what
        self._active: Any = None

    def __enter__(self) -> Any:
        if self._active is not None:
            raise InterventionError(
                f"this intervention ({self._what}) is already active: the same context object was entered again "
                "inside its own with-block; call suppress(...) / enhance(...) again for a second, separate context"
            )
        cm = self._make()
        model = cm.__enter__()
        self._active = cm
        return model

    def __exit__(self, *exc: Any) -> Any:
        cm, self._active = self._active, None
        return cm.__exit__(*exc)


def _ranked(scores: Tensor, k: int | float, sign: Literal[1, -1]) -> list[Neuron]:
    return [Neuron(*x) for x in select(scores, k, sign)]


def build_result(
    scores: Tensor,
    state: ACEState | Reducer,
    k: int | float,
    *,
    act_mean: Tensor | None = None,
    config: Mapping[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
    attributions: Tensor | None = None,
    proxy_mask: Tensor | None = None,
) -> NeuronResult:
    """Assemble a :class:`NeuronResult` from scores and the reducer's state (``config`` a
    :class:`~tl_neuronllm.config.result.ResultConfig` or its flat dict; ``k`` is recorded in it)."""
    cfg = ResultConfig.from_dict(config or {}).replace(k=k)
    return NeuronResult(
        scores,
        _ranked(scores, k, 1),
        _ranked(scores, k, -1),
        state,
        act_mean,
        cfg,
        dict(stats or {}),
        attributions,
        proxy_mask,
    )
