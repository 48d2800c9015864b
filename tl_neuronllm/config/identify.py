"""Typed configuration records: :class:`IdentifyConfig` (every option of ``identify``) and
:class:`ResultConfig` (what a :class:`~tl_neuronllm.result.neuron_result.NeuronResult` records about its run).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from tl_neuronllm.attribution.kernels import Rule
from tl_neuronllm.attribution.methods import get_method, method_names
from tl_neuronllm.errors import ConfigError
from tl_neuronllm.model.adapter import HOOK_CHOICES
from tl_neuronllm.model.answers import TARGETS
from tl_neuronllm.prompts.proxies import AugmentConfig, PromptConfig, TokenFormat
from tl_neuronllm.scoring.ace import ScoringConfig
from tl_neuronllm.validate import check_bool, check_choice, check_float, check_int


@dataclass(frozen=True)
class IdentifyConfig:
    """Every option of :func:`identify` (see the README for the choices; :data:`PRESETS` for the method's own).

    Attributes:
        method: ``"ig"`` (exact integrated gradients, default), ``"grad_x_act"``, ``"activation"``, another
            registered attribution method (:mod:`tl_neuronllm.attribution.methods`) or a baseline (:mod:`tl_neuronllm.attribution.baselines`).
        mode: ``"letter"`` (option-letter logits) or ``"cloze"`` (option-text log-likelihood).
        target: ``"ce"`` (log-softmax over options at gold, default), ``"prob"`` (softmax over
            options) or ``"vocab_prob"`` (full-vocabulary probability of the gold answer).
        n_proxies: Proxies per item (P, default 3), pairwise-distinct gold letters.
        permutation: ``"cyclic"`` or ``"random"``.
        include_original: Whether the unpermuted item is one of the proxies.
        n_shots: Solved demonstrations in each prompt (default 1), from items not scored.
        instruction: Instruction line (default: the task's, else a standard one).
        token_format: Prompt format for token-level tasks.
        show_options: Cloze mode: list the lettered options in the prompt. Without them the proxies of an
            item differ by instruction template and demonstrations (:mod:`tl_neuronllm.prompts.proxies`).
        cloze_listing: Cloze mode without listed options: also list the options unlettered, in each proxy's
            permuted order, so the proxies differ by option order too (default off).
        steps: IG steps m (default 8, with ``ig_rule="gauss"``; the method's setting is 16 Riemann steps).
        ig_rule: ``"riemann"`` (alpha_k = k/m) or ``"gauss"`` (Gauss-Legendre).
        hook: Neuron hook: ``"hook_post"``, ``"hook_pre"`` or ``"hook_pre_linear"``.
        layers: Layers to score (default all).
        candidates, z, tau, ambiguity: Per-item candidate sets and ambiguity filter (:class:`ScoringConfig`).
            Default z = 10% and no filter: the setting cross-validation (:func:`tl_neuronllm.select_cv`)
            chose on every benchmark task where the model has the skill; ``preset="paper"`` gives the method's
            z = 1% and strict filter.
        seed: Seed for permutations and the demo choice.
        batch_size: Items per scoring batch (and prompts per forward for grad_x_act / activation).
        chunk_rows: IG continuation rows per forward (default: from ``memory_budget_mb``).
        memory_budget_mb: Activation memory to aim for per IG chunk (default: half the free memory of a
            CUDA device, 1024 MB on CPU).
        kv_cache: ``"auto"`` or ``"off"`` (re-run the prefix in every row; for testing).
        method_options: The method's own options (fields of its ``Options`` dataclass), e.g.
            ``{"threshold": 0.3}``; checked against the method when it is registered in this process.
    """

    method: str = "ig"
    mode: Literal["letter", "cloze"] = "letter"
    target: Literal["ce", "prob", "vocab_prob"] = "ce"
    n_proxies: int = 3
    permutation: Literal["cyclic", "random"] = "cyclic"
    include_original: bool = True
    n_shots: int = 1
    instruction: str | None = None
    token_format: TokenFormat | None = None
    show_options: bool = True
    cloze_listing: bool = False
    steps: int = 8
    ig_rule: Rule = "gauss"
    hook: str = "hook_post"
    layers: tuple[int, ...] | None = None
    candidates: Literal["topk", "threshold"] = "topk"
    z: float = 0.1
    tau: float = 0.2
    ambiguity: float | None = None
    seed: int = 0
    batch_size: int = 8
    chunk_rows: int | None = None
    memory_budget_mb: float | None = None
    kv_cache: Literal["auto", "off"] = "auto"
    method_options: Any = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, method_names())
        self._check_method_options()
        check_choice("mode", self.mode, ("letter", "cloze"))
        check_choice("target", self.target, TARGETS)
        check_int("n_proxies", self.n_proxies, min_value=1)
        check_choice("permutation", self.permutation, ("cyclic", "random"))
        check_bool("include_original", self.include_original)
        check_int("n_shots", self.n_shots, min_value=0)
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise ValueError(f"instruction must be a string or None, got {type(self.instruction).__name__}")
        check_bool("show_options", self.show_options)
        check_bool("cloze_listing", self.cloze_listing)
        check_int("steps", self.steps, min_value=1)
        check_choice("ig_rule", self.ig_rule, ("riemann", "gauss"))
        check_choice("hook", self.hook, HOOK_CHOICES)
        check_int("seed", self.seed)
        check_int("batch_size", self.batch_size, min_value=1)
        check_int("chunk_rows", self.chunk_rows, min_value=1, allow_none=True)
        check_float("memory_budget_mb", self.memory_budget_mb, low=0, low_open=True, allow_none=True)
        check_choice("kv_cache", self.kv_cache, ("auto", "off"))
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Iterable):
                raise ValueError(f"layers must be a list of layer indices or None, got {self.layers!r}")
            layers = tuple(check_int(f"layers[{i}]", x, min_value=0) for i, x in enumerate(self.layers))
            if not layers or len(set(layers)) != len(layers):
                raise ValueError(f"layers must be distinct layer indices (at least one), got {list(self.layers)}")
            object.__setattr__(self, "layers", layers)
        # these validate themselves
        _ = (self.scoring, self.prompt, self.augment)

    def _check_method_options(self) -> None:
        opts = self.method_options
        if opts is None or (isinstance(opts, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in opts)):
            pairs = tuple(opts or ())
        elif isinstance(opts, Mapping):
            pairs = tuple(sorted(opts.items()))
        else:
            raise ConfigError(f"method_options must be a dict of the method's options, got {type(opts).__name__}")
        for key, _ in pairs:
            if not isinstance(key, str):
                raise ConfigError(f"method_options keys must be option names (str), got {key!r}")
        object.__setattr__(self, "method_options", pairs or None)
        if self.method in method_names():
            get_method(self.method, **self.method_kwargs)  # refuses options the method does not take

    @property
    def method_kwargs(self) -> dict[str, Any]:
        """The method's own options as keyword arguments (``{}`` when none)."""
        return dict(self.method_options or ())

    @property
    def scoring(self) -> ScoringConfig:
        return ScoringConfig(self.candidates, self.z, self.tau, self.ambiguity)

    @property
    def prompt(self) -> PromptConfig:
        return PromptConfig(
            self.mode, self.instruction, self.n_shots, self.token_format, self.show_options, self.cloze_listing
        )

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig(self.n_proxies, self.permutation, self.include_original, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON values (``layers`` a list, ``token_format`` a dict of lists)."""
        d = asdict(self)
        tf = None if self.token_format is None else asdict(self.token_format)
        d["token_format"] = None if tf is None else {k: list(v) if isinstance(v, tuple) else v for k, v in tf.items()}
        d["layers"] = None if self.layers is None else list(self.layers)
        d["method_options"] = self.method_kwargs or None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, strict: bool = True) -> IdentifyConfig:
        """The config of :meth:`to_dict` (other keys are ignored; missing ones take their defaults).

        With ``strict=False`` a method that is not registered in this process (a result written with a
        custom method) is kept as recorded instead of refused.

        Raises:
            ValueError: for an invalid option (or, when ``strict``, an unknown method).
        """
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("token_format"), Mapping):
            kw["token_format"] = TokenFormat(**kw["token_format"])
        if kw.get("layers") is not None:
            kw["layers"] = tuple(kw["layers"])
        method = kw.get("method", "ig")
        if strict or method in method_names():
            return cls(**kw)
        out = cls(**{**kw, "method": "ig", "method_options": None})
        object.__setattr__(out, "method", method)
        opts = kw.get("method_options")
        object.__setattr__(
            out, "method_options", tuple(sorted(opts.items())) if isinstance(opts, Mapping) and opts else None
        )
        return out

    @classmethod
    def from_options(
        cls, config: IdentifyConfig | None = None, *, preset: str | None = None, **options: Any
    ) -> IdentifyConfig:
        """A config from keyword options, over ``config`` or a named preset (:data:`PRESETS`).

        Raises:
            TypeError: for unknown option names (listing the valid ones).
            ValueError: for an unknown preset, or a preset together with ``config``.
        """
        if preset is not None:
            check_choice("preset", preset, tuple(PRESETS))
            if config is not None:
                raise ValueError("give either config= or preset=, not both (a preset is a base config)")
            config = cls(**PRESETS[preset])
        return config_from_options(cls, config, options)


#: Named base configs of :func:`identify`. ``"default"``: the shipped defaults. ``"paper"``: the method's own
#: fixed values as reconstructed in the method notes (z = 1% per item, strict ambiguity filter, 16 Riemann IG
#: steps); the shipped default replaces the selection knobs with what cross-validation chose wherever the model
#: has the skill (z = 10%, no filter; README, "Cross-validated selection on SmolLM2") and the quadrature with 8
#: Gauss-Legendre steps.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"z": 0.01, "ambiguity": 0.0, "steps": 16, "ig_rule": "riemann"},
}


def config_from_options(cls: type, config: Any, options: dict[str, Any]) -> Any:
    """``config`` (or ``cls()``) with ``options`` replacing its fields; unknown names raise a ``TypeError``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        hints = [
            f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, names, n=1)) else repr(u)
            for u in unknown
        ]
        raise TypeError(f"unknown option(s) {', '.join(hints)}; valid options: {sorted(names)}")
    return replace(config or cls(), **options)


__all__ = ["PRESETS", "IdentifyConfig", "config_from_options"]
