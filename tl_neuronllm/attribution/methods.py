"""Attribution methods as one interface, found in a registry by name.

An :class:`AttributionMethod` maps tokenized proxies (:class:`~tl_neuronllm.model.answers.ProxyPrompt`) to
an :class:`Attribution`: per-prompt neuron scores ``[prompts, n_layers, d_mlp]`` at the scored site,
the clean option probabilities and the clean site activations. The kernels live in
:mod:`tl_neuronllm.attribution.kernels`; a method is the choice of kernel and how prompts are batched.

Registered: ``"ig"`` (exact integrated gradients, :func:`~tl_neuronllm.attribution.kernels.ig_fast`, one
prompt at a time), ``"grad_x_act"`` and ``"activation"`` (:func:`~tl_neuronllm.attribution.kernels.grad_x_act`,
batched over prompts). A new method is one class registered with :func:`register_method`; it is then a
valid ``identify(method=...)``, reduced by the reducer it names (``reducer = "ace"`` unless it says
otherwise) and configured by its own ``Options`` dataclass (``identify(..., method_options={...})``)::

    @register_method
    class MyMethod(AttributionMethod):
        name = "my_method"

        def attribute(self, adapter, prompts, options):
            ...
            return Attribution(scores, probs, acts)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.attribution.kernels import Rule, grad_x_act, ig_fast
from tl_neuronllm.errors import ConfigError, ModelError, RegistryError
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt, Target


@dataclass(frozen=True)
class AttributionOptions:
    """The options every attribution method reads (a view of :class:`~tl_neuronllm.config.identify.IdentifyConfig`).

    Attributes:
        steps, rule: IG steps and quadrature rule.
        target: The attributed function F (see :mod:`tl_neuronllm.model.answers`).
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
        """The options of an :class:`~tl_neuronllm.config.identify.IdentifyConfig`."""
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
        """Keyword arguments of :func:`~tl_neuronllm.attribution.kernels.ig_fast`."""
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
    #: The registered reducer (:mod:`tl_neuronllm.scoring.reducers`) that turns this method's per-item
    #: attributions into task scores; ``"ace"`` is the method's own ACE score.
    reducer: ClassVar[str] = "ace"
    #: A frozen dataclass of the method's own options (``identify(..., method_options={...})``, the CLI's
    #: ``--method-option name=value``); ``None`` for a method without options.
    Options: ClassVar[type | None] = None

    def __init__(self, **method_options: Any) -> None:
        """Args:
            **method_options: Fields of :attr:`Options` (refused when the method has none).

        Raises:
            ConfigError: an option the method does not have, or a value its :attr:`Options` refuses.
        """
        if self.Options is None:
            if method_options:
                raise ConfigError(f"method {self.name!r} takes no method options; got {sorted(method_options)}")
            self.method_options: Any = None
            return
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(method_options) - known)
        if unknown:
            raise ConfigError(f"method {self.name!r} has no option {unknown[0]!r}; its options: {sorted(known)}")
        try:
            self.method_options = self.Options(**method_options)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"method {self.name!r}: bad method option ({e})") from None

    def options(self, options: AttributionOptions) -> AttributionOptions:
        """The options this method runs with (a method may fix some, e.g. the target)."""
        return options

    @abstractmethod
    def attribute(
        self, adapter: ModelAdapter, prompts: Sequence[ProxyPrompt], options: AttributionOptions
    ) -> Attribution:
        """Attribute each prompt (see :class:`Attribution`)."""


ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}


def register_method(cls: type[AttributionMethod] | None = None, *, replace: bool = False) -> Any:
    """Register an :class:`AttributionMethod` class under its ``name`` (a class decorator, bare or called:
    ``@register_method`` or ``@register_method(replace=True)``).

    Args:
        cls: The class (when used bare).
        replace: Allow replacing a method already registered under the same name (the built-in ``"ig"``
            included); without it a second registration of a name is refused, so a result's ``method``
            always names the code that ran.

    Raises:
        RegistryError: a class that is not an AttributionMethod subclass, one without a name, one whose
            ``reducer`` is not a non-empty string, or a name already registered (without ``replace=True``).
    """

    def deco(c: Any) -> type[AttributionMethod]:
        if not (isinstance(c, type) and issubclass(c, AttributionMethod)):
            raise RegistryError(f"register_method takes an AttributionMethod subclass, got {c!r}")
        if not isinstance(c.name, str) or not c.name:
            raise RegistryError(f"{c.__name__} has no name; set the class attribute name")
        if not isinstance(c.reducer, str) or not c.reducer:
            raise RegistryError(f"{c.__name__}.reducer must name a registered reducer, got {c.reducer!r}")
        old = ATTRIBUTION_METHODS.get(c.name)
        if old is not None and old is not c and not replace:
            raise RegistryError(
                f"method {c.name!r} is already registered ({old.__module__}.{old.__qualname__}); "
                "pass register_method(cls, replace=True) to replace it, or choose another name"
            )
        ATTRIBUTION_METHODS[c.name] = c
        return c

    return deco if cls is None else deco(cls)


def get_method(name: str, **method_options: Any) -> AttributionMethod:
    """An instance of the registered method ``name`` with its own options.

    Raises:
        ValueError: for an unknown name, listing the registered ones (a :class:`ConfigError`).
        ConfigError: for options the method does not take.
    """
    if name not in ATTRIBUTION_METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; registered: {sorted(ATTRIBUTION_METHODS)}")
    return ATTRIBUTION_METHODS[name](**method_options)


def method_names() -> tuple[str, ...]:
    """Every valid ``identify(method=...)``, in registration order."""
    return tuple(ATTRIBUTION_METHODS)


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

    Raises:
        ModelError: the method returned outputs of the wrong kind or shape (see :func:`check_attribution`).
    """
    P = max(len(qs) for qs in items)
    L, d = adapter.n_layers, adapter.d_mlp
    flat = [(i, p) for i, qs in enumerate(items) for p in range(len(qs))]
    prompts = [q for qs in items for q in qs]
    out = method.attribute(adapter, prompts, options)
    check_attribution(method, out, prompts, L, d)
    attr = torch.zeros(len(items), P, L, d, dtype=torch.float32)
    mask = torch.zeros(len(items), P, dtype=torch.float32)
    probs: list[list[Tensor]] = [[] for _ in items]
    act_sum = torch.zeros(L, d, dtype=torch.float64)
    for j, (i, p) in enumerate(flat):
        attr[i, p], mask[i, p] = out.scores[j], 1.0
        probs[i].append(out.probs[j])
    act_sum += out.acts.double().sum(0)
    return attr, mask, probs, act_sum


def check_attribution(
    method: AttributionMethod, out: Any, prompts: Sequence[ProxyPrompt], n_layers: int, d_mlp: int
) -> None:
    """Refuse a method's outputs that do not fit its prompts: an :class:`Attribution` whose ``scores`` and
    ``acts`` are ``[prompts, n_layers, d_mlp]`` tensors and whose ``probs`` hold one 1-D tensor of
    ``n_options`` probabilities per prompt.

    Raises:
        ModelError: naming the method, the output and the shape expected.
    """
    who = f"attribution method {method.name!r} ({type(method).__qualname__})"
    if not isinstance(out, Attribution):
        raise ModelError(f"{who} returned {type(out).__name__}, expected an Attribution(scores, probs, acts)")
    want = (len(prompts), n_layers, d_mlp)
    for name in ("scores", "acts"):
        t = getattr(out, name)
        if not isinstance(t, Tensor) or tuple(t.shape) != want:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ModelError(f"{who} returned {name} of shape {got}, expected [prompts, n_layers, d_mlp] = {want}")
    if not isinstance(out.probs, Sequence) or len(out.probs) != len(prompts):
        got = len(out.probs) if isinstance(out.probs, Sequence) else type(out.probs).__name__
        raise ModelError(f"{who} returned probs for {got} prompts, expected one tensor per prompt ({len(prompts)})")
    for j, (pr, q) in enumerate(zip(out.probs, prompts)):
        if not isinstance(pr, Tensor) or tuple(pr.shape) != (q.n_options,):
            got = tuple(pr.shape) if isinstance(pr, Tensor) else type(pr).__name__
            raise ModelError(
                f"{who} returned probs[{j}] of shape {got} for prompt {j} (item {q.item_index}, proxy "
                f"{q.proxy_index}), expected [n_options] = ({q.n_options},)"
            )


def code_fingerprint(cls: type) -> str:
    """A hash of a class's source code (and of its bases up to :class:`AttributionMethod`), so that a
    checkpoint can tell a method re-registered under the same name with other code; the qualified names
    when the source cannot be read (a class defined in an interactive session)."""
    import hashlib
    import inspect

    h = hashlib.sha256()
    for c in cls.__mro__:
        if c is AttributionMethod or c is object:
            break
        try:
            src = inspect.getsource(c)
        except (OSError, TypeError):
            src = f"{c.__module__}.{c.__qualname__}"
        h.update(src.encode("utf-8"))
    return h.hexdigest()[:16]


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
    "check_attribution",
    "code_fingerprint",
    "correct_mask",
    "get_method",
    "method_names",
    "register_method",
]
