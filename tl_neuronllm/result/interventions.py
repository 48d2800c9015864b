"""Neuron interventions as TransformerLens forward hooks.

Modes: ``"zero"`` (suppress, x0), ``"scale"`` (enhance, x``factor``, default 2), ``"mean"`` (replace
by a given per-neuron mean activation), ``"set"`` (replace by a value). They act at the **site**
(the last position of each sequence, or per-row positions given as a tensor) or at all positions.
Hooks are plain ``(hook_name, fn)`` pairs for ``run_with_hooks`` / ``model.hooks(...)``, so they
compose with any other hooks; :func:`intervene` is a context manager that removes exactly the hooks
it added, also when its body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.model.state import hook_snapshot
from tl_neuronllm.validate import check_choice, check_float, check_int

Mode = Literal["zero", "scale", "mean", "set"]
MODES = ("zero", "scale", "mean", "set")
Positions = Literal["site", "all"]


@dataclass(frozen=True)
class Intervention:
    """What to do to a set of neurons.

    Attributes:
        neurons: ``(layer, neuron)`` pairs.
        mode: ``"zero"``, ``"scale"``, ``"mean"`` or ``"set"``.
        factor: Multiplier for ``"scale"``.
        values: For ``"mean"``: a ``[n_layers, d_mlp]`` tensor of mean activations; for ``"set"``:
            a float or such a tensor.
        positions: ``"site"`` (last position, default) or ``"all"``.
    """

    neurons: tuple[tuple[int, int], ...]
    mode: Mode = "zero"
    factor: float = 2.0
    values: float | Tensor | None = None
    positions: Positions = "site"

    def __post_init__(self) -> None:
        check_choice("intervention mode", self.mode, MODES)
        check_choice("positions", self.positions, ("site", "all"))
        object.__setattr__(self, "factor", check_float("factor", self.factor))
        if self.mode in ("mean", "set") and self.values is None:
            raise ValueError(f"mode {self.mode!r} needs values (mean activations or the value to set)")
        if isinstance(self.values, Tensor):
            if not bool(torch.isfinite(self.values).all()):
                raise ValueError(f"mode {self.mode!r}: the values tensor has non-finite entries (nan or inf)")
        elif self.values is not None:
            object.__setattr__(self, "values", check_float("value", self.values))
        neurons = []
        for j, pair in enumerate(self.neurons):
            if isinstance(pair, (str, bytes)) or len(pair) != 2:
                raise ValueError(f"neurons[{j}] must be a (layer, neuron) pair, got {pair!r}")
            neurons.append(
                (
                    check_int(f"neurons[{j}] layer", pair[0], min_value=0),
                    check_int(f"neurons[{j}] neuron", pair[1], min_value=0),
                )
            )
        object.__setattr__(self, "neurons", tuple(neurons))

    def by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for layer, n in self.neurons:
            out.setdefault(layer, []).append(n)
        return out


def _neuron_values(iv: Intervention, layer: int, idx: Tensor, like: Tensor) -> Tensor | float:
    if isinstance(iv.values, Tensor):
        return iv.values[layer][idx.to(iv.values.device)].to(like.device, like.dtype)
    return float(iv.values)  # type: ignore[arg-type]


def make_hooks(
    hook_names: Sequence[str],
    iv: Intervention,
    site: Int[Tensor, " batch"] | None = None,
    *,
    d_mlp: int | None = None,
) -> list[tuple[str, Any]]:
    """Forward hooks that apply ``iv``; ``site`` gives per-row site positions (default: last).

    With ``d_mlp`` each hook refuses an activation of another width when it fires.

    Raises:
        ValueError: for a layer outside ``hook_names``, a neuron outside ``d_mlp``; when a hook fires,
            an activation of another width than ``d_mlp`` or narrower than a neuron index.
    """
    hooks = []
    for layer, neurons in sorted(iv.by_layer().items()):
        if not 0 <= layer < len(hook_names):
            raise ValueError(f"layer {layer} is out of range for a model with {len(hook_names)} layers")
        idx = torch.tensor(sorted(set(neurons)), dtype=torch.long)
        if d_mlp is not None and int(idx.max()) >= d_mlp:
            raise ValueError(f"neuron {int(idx.max())} is out of range for layer {layer} (width {d_mlp})")

        def fn(act: Float[Tensor, "batch pos d_mlp"], hook: Any, layer: int = layer, idx: Tensor = idx) -> Tensor:
            if d_mlp is not None and act.shape[-1] != d_mlp:
                raise ValueError(
                    f"layer {layer} ({hook_names[layer]}): the activation "
                    f"has width {act.shape[-1]} but these interventions are for width {d_mlp}; they "
                    "belong to another model"
                )
            if int(idx.max()) >= act.shape[-1]:
                raise ValueError(f"neuron {int(idx.max())} is out of range for layer {layer} (width {act.shape[-1]})")
            i = idx.to(act.device)
            act = act.clone()
            if iv.positions == "all":
                cur = act[..., i]
            elif site is None:
                cur = act[:, -1, i]
            else:
                rows = torch.arange(act.shape[0], device=act.device)
                cur = act[rows[:, None], site.to(act.device)[:, None], i[None, :]]
            if iv.mode == "zero":
                new = torch.zeros_like(cur)
            elif iv.mode == "scale":
                new = cur * iv.factor
            else:
                val = _neuron_values(iv, layer, idx, act)
                new = torch.zeros_like(cur) + val
            if iv.positions == "all":
                act[..., i] = new
            elif site is None:
                act[:, -1, i] = new
            else:
                act[rows[:, None], site.to(act.device)[:, None], i[None, :]] = new
            return act

        hooks.append((hook_names[layer], fn))
    return hooks


@contextmanager
def own_hooks_removed(model: HookedModel) -> Iterator[Callable[[], None]]:
    """Remove, on exit, exactly the hooks registered between entering and calling the yielded ``mark()``.

    For blocks that attach their hooks and then run user code: hooks the user adds after ``mark()``
    are left in place (only ours are removed, also on error).
    """
    before = hook_snapshot(model) if isinstance(model, torch.nn.Module) else []
    ours: list[tuple[torch.nn.Module, str, Any]] = []

    def mark() -> None:
        for (mod, s0), (_, s1) in zip(before, hook_snapshot(model)):
            for attr, val in s1.items():
                old = s0.get(attr, set() if attr.startswith("_") else [])
                ours.extend((mod, attr, h) for h in val if h not in old)

    try:
        yield mark
    finally:
        for mod, attr, h in ours:
            if attr.startswith("_"):
                getattr(mod, attr).pop(h, None)
            else:
                lst = getattr(mod, attr, None)
                if isinstance(lst, list) and h in lst:
                    if hasattr(h, "hook") and hasattr(h.hook, "remove"):
                        h.hook.remove()
                    lst.remove(h)


@contextmanager
def intervene(model: HookedModel, hooks: Sequence[tuple[str, Any]]) -> Iterator[Any]:
    """Attach ``hooks`` to ``model`` for the block; only they are removed on exit (even on error).

    Hooks the user adds inside the block stay: the handles registered while *our* hooks were being
    attached are recorded and exactly those are removed.
    """
    with own_hooks_removed(model) as mark:
        with model.hooks(fwd_hooks=list(hooks)):
            mark()
            yield model
