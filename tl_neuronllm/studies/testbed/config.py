"""Testbed configuration: :class:`TestbedConfig` (task, imperfections, model shape, training recipe) and the
named :data:`TESTBEDS`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

__all__ = ["FORMAT_VERSION", "KINDS", "N_LETTERS", "POPULAR_VALUE", "TESTBEDS", "Kind", "TestbedConfig", "config_of"]

FORMAT_VERSION = 1
Kind = Literal["facts", "relations"]
KINDS = ("facts", "relations")
POPULAR_VALUE = 0  # the value index that popular_bias lures the model to
N_LETTERS = 8  # letter tokens A..H always exist, so n_options <= 8


@dataclass(frozen=True)
class TestbedConfig:
    """A testbed: task, imperfections, model shape and training recipe (all seeded).

    Attributes:
        name: Name used in cache file names and task names.
        kind: ``"facts"`` (entity -> value) or ``"relations"`` ((relation, entity) -> value).
        n_entities: Number of entities (the task has ``n_entities`` items, twice that for ``"relations"``).
        n_values: Number of attribute values.
        n_options: Options per question (2 to 8, at most ``n_values``).
        letter_bias: Share of the biased items' training prompts whose target is letter "A".
        popular_bias: Share of the biased items' training prompts showing the *popular value*
            (value 0) as a distractor whose target is that distractor's letter.
        biased_share: Share of the facts that are biased (1.0: every item).
        label_noise: Share of the facts trained on a wrong value (the task keeps the true one).
        n_layers, d_model, d_mlp, n_heads, act_fn: Model shape (``boot_native``).
        steps: Maximum training steps.
        target_accuracy: Training stops at the first check where the model's letter agrees with
            the training distribution's most likely answer on this share of a fixed probe batch of
            fresh prompts (the gold letter, or the bias's answer on biased items when the bias
            exceeds 0.5). Stopping depends only on the seeded run, so it is as deterministic as
            fixed steps.
        check_every: Steps between probe checks.
        batch_size: Prompts per step.
        lr: AdamW learning rate (constant after a 50-step linear warm-up).
        weight_decay: AdamW weight decay.
        train_shots: Demonstration counts drawn uniformly per step (default 1, the method's).
        seed: Seed of the facts, the initialisation and the training data.
    """

    __test__ = False  # not a pytest test class despite the name

    name: str = "testbed"
    kind: Kind = "facts"
    n_entities: int = 200
    n_values: int = 8
    n_options: int = 4
    letter_bias: float = 0.0
    popular_bias: float = 0.0
    biased_share: float = 1.0
    label_noise: float = 0.0
    n_layers: int = 1
    d_model: int = 128
    d_mlp: int = 512
    n_heads: int = 8
    act_fn: str = "gelu"
    steps: int = 3000
    target_accuracy: float = 0.99
    check_every: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    train_shots: tuple[int, ...] = (1,)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_shots", tuple(int(s) for s in self.train_shots))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 2 <= self.n_options <= N_LETTERS:
            raise ValueError(f"n_options must be in [2, {N_LETTERS}], got {self.n_options}")
        if self.n_values < self.n_options:
            raise ValueError(f"n_values ({self.n_values}) must be >= n_options ({self.n_options})")
        if self.n_entities < 2:
            raise ValueError(f"n_entities must be >= 2, got {self.n_entities}")
        if self.letter_bias > 0 and self.popular_bias > 0:
            raise ValueError("letter_bias and popular_bias cannot both be set; choose one kind of bias")
        for name in ("letter_bias", "popular_bias", "biased_share", "label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.train_shots or min(self.train_shots) < 0:
            raise ValueError(f"train_shots must be non-empty counts >= 0, got {self.train_shots}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        for name in ("steps", "check_every", "batch_size", "n_layers", "d_mlp"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def n_items(self) -> int:
        return self.n_entities if self.kind == "facts" else 2 * self.n_entities

    @property
    def imperfect(self) -> bool:
        """True when the testbed is imperfect by construction (a bias or label noise)."""
        return ((self.letter_bias > 0 or self.popular_bias > 0) and self.biased_share > 0) or self.label_noise > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_shots"] = list(self.train_shots)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TestbedConfig:
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: (tuple(v) if k == "train_shots" else v) for k, v in d.items() if k in names}
        return cls(**kwargs)

    def digest(self) -> str:
        """Hash of everything that determines the trained model (the name excluded)."""
        d = self.to_dict()
        d.pop("name")
        d["format_version"] = FORMAT_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# the model shape and step budget of the ``*-small`` testbeds
_SMALL = TestbedConfig(d_model=64, d_mlp=128, n_heads=8, n_layers=1, steps=3000)

#: Named testbeds. ``*-small`` ones (64 items, 1 layer, d_model 64, 128 neurons) are the ones the test
#: suite trains; the others have 200 entities, d_model 128 and 512 neurons.
TESTBEDS: dict[str, TestbedConfig] = {
    "facts-small": replace(_SMALL, name="facts-small", kind="facts", n_entities=64),
    "facts-lured-small": replace(_SMALL, name="facts-lured-small", kind="facts", n_entities=64, popular_bias=0.7),
    "relations-small": replace(_SMALL, name="relations-small", kind="relations", n_entities=32, n_options=3),
    "facts": TestbedConfig("facts", "facts", n_entities=200, steps=8000),
    "facts-lured": TestbedConfig("facts-lured", "facts", n_entities=200, popular_bias=0.7, steps=8000),
    "facts-biased": TestbedConfig(
        "facts-biased", "facts", n_entities=200, letter_bias=0.7, biased_share=0.5, steps=8000
    ),
    "facts-noisy": TestbedConfig("facts-noisy", "facts", n_entities=200, label_noise=0.2, steps=8000),
    "facts-2layer": TestbedConfig("facts-2layer", "facts", n_entities=200, n_layers=2, steps=8000),
    "relations": TestbedConfig("relations", "relations", n_entities=100, n_options=3, steps=8000),
}


def config_of(name: str | TestbedConfig) -> TestbedConfig:
    """The config of a testbed name (a key of :data:`TESTBEDS`), or ``name`` itself if it is a config.

    Raises:
        KeyError: for an unknown name.
    """
    if isinstance(name, TestbedConfig):
        return name
    if name in TESTBEDS:
        return TESTBEDS[name]
    raise KeyError(f"unknown testbed {name!r}; known: {sorted(TESTBEDS)} (or pass a TestbedConfig)")
