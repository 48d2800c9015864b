"""Attribution methods as one interface, found in a registry by name.

An :class:`AttributionMethod` maps tokenized proxies (:class:`~tl_neuronllm.answers.ProxyPrompt`) to
an :class:`Attribution`: per-prompt neuron scores ``[prompts, n_layers, d_mlp]`` at the scored site,
the clean option probabilities and the clean site activations. The kernels live in
:mod:`tl_neuronllm.attribution`; a method is the choice of kernel and how prompts are batched.

Registered: ``"ig"`` (exact integrated gradients, :func:`~tl_neuronllm.attribution.ig_fast`, one
prompt at a time), ``"grad_x_act"`` and ``"activation"`` (:func:`~tl_neuronllm.attribution.grad_x_act`,
batched over prompts). A new method is one class registered with :func:`register_method`; it is then a
valid ``identify(method=...)`` and is reduced by the ACE score::

    @register_method
    class MyMethod(AttributionMethod):
        name = "my_method"

        def attribute(self, adapter, prompts, options):
            ...
            return Attribution(scores, probs, acts)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from .adapter import ModelAdapter
from .answers import ProxyPrompt, Target
from .attribution import Rule, grad_x_act, ig_fast


@dataclass(frozen=True)
class AttributionOptions:
    """The options every attribution method reads (a view of :class:`~tl_neuronllm.config.IdentifyConfig`).

    Attributes:
        steps, rule: IG steps and quadrature rule.
        target: The attributed function F (see :mod:`tl_neuronllm.answers`).
        layers: Layers to attribute (others get zeros); ``None`` for all.
        chunk_rows, memory_budget_mb: IG continuation rows per forward, or the memory to size them by.
        batch_size: Prompts per forward of the batched methods.
    """

    steps: int = 16
    rule: Rule = "riemann"
    target: Target = "ce"
    layers: tuple[int, ...] | None = None
    chunk_rows: int | None = None
    memory_budget_mb: float | None = None
    batch_size: int = 8

    @classmethod
    def from_config(cls, cfg: Any) -> AttributionOptions:
        """The options of an :class:`~tl_neuronllm.config.IdentifyConfig`."""
        return cls(
            steps=cfg.steps,
            rule=cfg.ig_rule,
            target=cfg.target,
            layers=cfg.layers,
            chunk_rows=cfg.chunk_rows,
            memory_budget_mb=cfg.memory_budget_mb,
            batch_size=cfg.batch_size,
        )

    def ig_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~tl_neuronllm.attribution.ig_fast`."""
        return dict(
            steps=self.steps,
            rule=self.rule,
            target=self.target,
            layers=self.layers,
            chunk_rows=self.chunk_rows,
            memory_budget_mb=self.memory_budget_mb,
        )


@dataclass
class Attribution:
    """What a method returns for a list of prompts.

    Attributes:
        scores: Per-prompt neuron attributions ``[prompts, n_layers, d_mlp]`` (float32, CPU).
        probs: Per prompt, the clean option probabilities.
        acts: Per-prompt clean site activations ``[prompts, n_layers, d_mlp]``.
    """

    scores: Float[Tensor, "prompts n_layers d_mlp"]
    probs: list[Float[Tensor, " n_options"]]
    acts: Float[Tensor, "prompts n_layers d_mlp"]


class AttributionMethod(ABC):
    """Attribution of the target F to every MLP neuron at each prompt's site.

    Attributes:
        name: The registry name (``identify(method=name)``).
        continues_prefixes: Whether the method runs prompts as continuations of a shared prefix cache
            (``identify`` then lets the adapter share the common prompt prefix).
    """

    name: ClassVar[str] = ""
    continues_prefixes: ClassVar[bool] = False

    def options(self, options: AttributionOptions) -> AttributionOptions:
        """The options this method runs with (a method may fix some, e.g. the target)."""
        return options

    @abstractmethod
    def attribute(
        self, adapter: ModelAdapter, prompts: Sequence[ProxyPrompt], options: AttributionOptions
    ) -> Attribution:
        """Attribute each prompt (see :class:`Attribution`)."""


ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}


def register_method(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Register an :class:`AttributionMethod` class under its ``name`` (a class decorator).

    Raises:
        ValueError: for a class without a name.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name; set the class attribute name")
    ATTRIBUTION_METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> AttributionMethod:
    """An instance of the registered method ``name``.

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if name not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {name!r}; registered: {sorted(ATTRIBUTION_METHODS)}")
    return ATTRIBUTION_METHODS[name]()


@register_method
class IntegratedGradients(AttributionMethod):
    """Exact per-layer IG through the prefix key/value cache, one prompt at a time."""

    name = "ig"
    continues_prefixes = True

    def attribute(
        self, adapter: ModelAdapter, prompts: Sequence[ProxyPrompt], options: AttributionOptions
    ) -> Attribution:
        L, d = adapter.n_layers, adapter.d_mlp
        scores = torch.zeros(len(prompts), L, d, dtype=torch.float32)
        acts = torch.zeros_like(scores)
        probs: list[Tensor] = []
        kw = self.options(options).ig_kwargs()
        for j, q in enumerate(prompts):
            s, pr, a = ig_fast(adapter, q, **kw)
            scores[j], acts[j] = s, a
            probs.append(pr)
        return Attribution(scores, probs, acts)


@register_method
class GradXAct(AttributionMethod):
    """``a * dF/da`` at ``alpha = 1`` (attribution patching), batched over prompts."""

    name = "grad_x_act"
    with_grad: ClassVar[bool] = True

    def attribute(
        self, adapter: ModelAdapter, prompts: Sequence[ProxyPrompt], options: AttributionOptions
    ) -> Attribution:
        o = self.options(options)
        s, pr, a = grad_x_act(
            adapter,
            list(prompts),
            target=o.target,
            layers=o.layers,
            batch_size=o.batch_size,
            with_grad=self.with_grad,
            memory_budget_mb=o.memory_budget_mb,
        )
        return Attribution(s, pr, a)


@register_method
class Activation(GradXAct):
    """The site activation itself (no gradient)."""

    name = "activation"
    with_grad = False


def attribute_items(
    method: AttributionMethod,
    adapter: ModelAdapter,
    items: Sequence[Sequence[ProxyPrompt]],
    options: AttributionOptions,
) -> tuple[
    Float[Tensor, "items proxies n_layers d_mlp"],
    Float[Tensor, "items proxies"],
    list[list[Tensor]],
    Float[Tensor, "n_layers d_mlp"],
]:
    """Attributions of a batch of items (all their proxies in one :meth:`AttributionMethod.attribute` call).

    Returns:
        ``(attributions, mask, probs, act_sum)``: ``[items, P, n_layers, d_mlp]`` scores, the ``[items, P]``
        proxy mask (items may have fewer proxies than the widest), per item the clean option probs of
        each proxy, and the float64 sum of the site activations.
    """
    P = max(len(qs) for qs in items)
    L, d = adapter.n_layers, adapter.d_mlp
    flat = [(i, p) for i, qs in enumerate(items) for p in range(len(qs))]
    out = method.attribute(adapter, [q for qs in items for q in qs], options)
    attr = torch.zeros(len(items), P, L, d, dtype=torch.float32)
    mask = torch.zeros(len(items), P, dtype=torch.float32)
    probs: list[list[Tensor]] = [[] for _ in items]
    act_sum = torch.zeros(L, d, dtype=torch.float64)
    for j, (i, p) in enumerate(flat):
        attr[i, p], mask[i, p] = out.scores[j], 1.0
        probs[i].append(out.probs[j])
    act_sum += out.acts.double().sum(0)
    return attr, mask, probs, act_sum


def correct_mask(items: Sequence[Sequence[ProxyPrompt]], probs: Sequence[Sequence[Tensor]], P: int) -> Tensor:
    """``[items, P]`` bool: whether the model's clean prediction (argmax over the options) is the gold one."""
    out = torch.zeros(len(items), P, dtype=torch.bool)
    for i, (qs, ps) in enumerate(zip(items, probs)):
        for p, (q, pr) in enumerate(zip(qs, ps)):
            out[i, p] = int(pr.argmax()) == q.gold
    return out


__all__ = [
    "ATTRIBUTION_METHODS",
    "Activation",
    "Attribution",
    "AttributionMethod",
    "AttributionOptions",
    "GradXAct",
    "IntegratedGradients",
    "attribute_items",
    "correct_mask",
    "get_method",
    "register_method",
]
