"""The result of :func:`tl_neuronllm.identify`: scores, ranked good/bad neurons, save/load, export
and interventions.

Saved as a directory: ``tensors.safetensors`` (ACE scores, the streaming state, mean site
activations) and ``config.json`` (everything needed to reproduce the run: model shape and name,
hook, method, task, seed, options, package versions).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from .interventions import Intervention, Mode, Positions, intervene, make_hooks
from .scoring import ACEState, select

Role = Literal["good", "bad", "both"]
TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"


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
        state: The streaming statistics (membership counts, ES means/stds) behind the scores.
        act_mean: Mean site activation over the scored proxies (used by ``mode="mean"``).
        config: The run's configuration and provenance (JSON-able).
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
    state: ACEState
    act_mean: Float[Tensor, "n_layers d_mlp"] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    attributions: Float[Tensor, "items proxies n_layers d_mlp"] | None = None
    proxy_mask: Float[Tensor, "items proxies"] | None = None

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
    def es_mean(self) -> Float[Tensor, "n_layers d_mlp"]:
        """Mean per-item attribution ``ES_j`` (before candidate sets and the ambiguity filter)."""
        return self.state.es_mean_std()[0]

    @property
    def es_std(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self.state.es_mean_std()[1]

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

    def with_k(self, k: int | float) -> "NeuronResult":
        """The same scores with top-``k`` good and bad sets (count or fraction of all neurons)."""
        cfg = dict(self.config, k=k)
        return NeuronResult(self.scores, _ranked(self.scores, k, 1), _ranked(self.scores, k, -1), self.state,
                            self.act_mean, cfg, dict(self.stats), self.attributions, self.proxy_mask)

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

    # ---- interventions ------------------------------------------------------------------
    def intervention(self, role: Role, mode: Mode = "zero", *, factor: float = 2.0, value: float | None = None,
                     positions: Positions = "site") -> Intervention:
        """An :class:`Intervention` on a role's neurons."""
        values: float | Tensor | None = value
        if mode == "mean":
            if self.act_mean is None:
                raise ValueError("this result has no mean activations; mode='mean' is unavailable")
            values = self.act_mean
        return Intervention(tuple((n.layer, n.neuron) for n in self.neurons(role)), mode, factor, values, positions)

    def hooks(self, role: Role = "good", mode: Mode = "zero", *, factor: float = 2.0, value: float | None = None,
              positions: Positions = "site", site: Int[Tensor, " batch"] | None = None) -> list[tuple[str, Any]]:
        """Plain ``(hook_name, fn)`` forward hooks for ``run_with_hooks`` / ``model.hooks``."""
        return make_hooks(self.hook_names, self.intervention(role, mode, factor=factor, value=value, positions=positions), site)

    @contextmanager
    def intervene(self, model: Any, role: Role = "good", mode: Mode = "zero", *, factor: float = 2.0,
                  value: float | None = None, positions: Positions = "site") -> Iterator[Any]:
        """Context manager applying an intervention; the hooks are removed on exit, even on error."""
        self._check_model(model)
        with intervene(model, self.hooks(role, mode, factor=factor, value=value, positions=positions)):
            yield model

    def suppress(self, model: Any, role: Role = "good", *, positions: Positions = "site") -> Any:
        """Zero a role's neurons (context manager)."""
        return self.intervene(model, role, "zero", positions=positions)

    def enhance(self, model: Any, role: Role = "good", factor: float = 2.0, *, positions: Positions = "site") -> Any:
        """Multiply a role's neurons by ``factor`` (context manager)."""
        return self.intervene(model, role, "scale", factor=factor, positions=positions)

    def mean_ablate(self, model: Any, role: Role = "good", *, positions: Positions = "site") -> Any:
        """Replace a role's neurons by their mean activation over the scored items (context manager)."""
        return self.intervene(model, role, "mean", positions=positions)

    def set(self, model: Any, role: Role, value: float, *, positions: Positions = "site") -> Any:
        """Set a role's neurons to ``value`` (context manager)."""
        return self.intervene(model, role, "set", value=value, positions=positions)

    def _check_model(self, model: Any) -> None:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError(f"{type(model).__name__} is not a TransformerLens model (no cfg)")
        if (int(cfg.n_layers), int(cfg.d_mlp)) != (self.n_layers, self.d_mlp):
            raise ValueError(
                f"this result is for a model with {self.n_layers} layers x {self.d_mlp} neurons; the given model has "
                f"{cfg.n_layers} x {cfg.d_mlp}"
            )

    # ---- explanations (issue #13; implemented in explain.py) -----------------------------
    def explain(self, model: Any, task: Any, **options: Any) -> Any:
        """Explain the good and bad neurons: direct effect on the answer and behaviour on the task.

        Delegates to :func:`tl_neuronllm.explain.explain` (see there for ``options`` and every column).

        Returns:
            A :class:`tl_neuronllm.explain.Explanation` (``to_pandas()``, ``to_csv()``, ``to_markdown(n)``).

        Raises:
            ModelError: a model of another shape; TaskError: a task without the identification items.
        """
        from .explain import explain

        return explain(self, model, task, **options)

    # ---- export and persistence ---------------------------------------------------------
    def to_csv(self, path: str | Path) -> Path:
        """Write ``layer,neuron,label,score,role`` rows (good then bad)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["layer", "neuron", "label", "score", "role"])
            for role in ("good", "bad"):
                for n in self.neurons(role):  # type: ignore[arg-type]
                    w.writerow([n.layer, n.neuron, n.label, f"{n.score:.9g}", role])
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
            tensors["proxy_mask"] = self.proxy_mask.contiguous() if self.proxy_mask is not None else \
                torch.ones(self.attributions.shape[:2])
        save_file(tensors, str(path / TENSORS_FILE))
        meta = {
            "format": "tl_neuronllm.NeuronResult/1",
            "config": self.config,
            "stats": self.stats,
            "good": [list(n) for n in self.good],
            "bad": [list(n) for n in self.bad],
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))
        self.to_csv(path / "neurons.csv")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NeuronResult":
        """Load a result saved with :meth:`save`."""
        path = Path(path)
        if not (path / TENSORS_FILE).exists() or not (path / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{path} does not hold a saved NeuronResult ({TENSORS_FILE} + {CONFIG_FILE})")
        t = load_file(str(path / TENSORS_FILE))
        meta = json.loads((path / CONFIG_FILE).read_text())
        state = ACEState.from_tensors({k[len("state."):]: v for k, v in t.items() if k.startswith("state.")})
        return cls(
            scores=t["scores"],
            good=[Neuron(int(a), int(b), float(c)) for a, b, c in meta["good"]],
            bad=[Neuron(int(a), int(b), float(c)) for a, b, c in meta["bad"]],
            state=state,
            act_mean=t.get("act_mean"),
            config=meta["config"],
            stats=meta.get("stats", {}),
            attributions=t.get("attributions"),
            proxy_mask=t.get("proxy_mask"),
        )


def _ranked(scores: Tensor, k: int | float, sign: Literal[1, -1]) -> list[Neuron]:
    return [Neuron(*x) for x in select(scores, k, sign)]


def build_result(scores: Tensor, state: ACEState, k: int | float, *, act_mean: Tensor | None = None,
                 config: dict[str, Any] | None = None, stats: dict[str, Any] | None = None,
                 attributions: Tensor | None = None, proxy_mask: Tensor | None = None) -> NeuronResult:
    """Assemble a :class:`NeuronResult` from ACE scores and the streaming state."""
    return NeuronResult(scores, _ranked(scores, k, 1), _ranked(scores, k, -1), state, act_mean,
                        dict(config or {}, k=k), dict(stats or {}), attributions, proxy_mask)

