"""The conditions of a held-out evaluation: what is done to which neurons, as one :class:`Condition` record each.

The baseline (no intervention) and the interventions of :data:`INTERVENTIONS` (suppress good, suppress bad,
Enhance, Degrade; the table is in :mod:`tl_neuronllm.evaluation.evaluate`, which documents the protocol).

Each intervention runs on the identified neurons and again on ``n_random`` random neuron sets of the same size
and the same per-layer counts (:func:`matched_random_sets`: a random stand-in for the good set and one for the
bad set, disjoint from each other and, when the layer has room, from the identified neurons). The random set
``s`` is drawn with seed ``seed + s`` and shared by all interventions. :func:`plan_conditions` lists them all;
conditions that need a set the result does not have (no bad set) are recorded as unavailable.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from tl_neuronllm.result.interventions import Intervention, Mode, Positions
from tl_neuronllm.result.neuron_result import NeuronResult

SetRole = Literal["good", "bad"]
Neuron = tuple[int, int]
BASELINE = "baseline"

#: Condition name -> (description, [(role, mode)]); ``mode`` is ``"zero"`` or ``"scale"``.
INTERVENTIONS: dict[str, tuple[str, tuple[tuple[SetRole, Mode], ...]]] = {
    "suppress_good": ("suppress good", (("good", "zero"),)),
    "suppress_bad": ("suppress bad", (("bad", "zero"),)),
    "enhance_good_suppress_bad": ("Enhance: enhance good + suppress bad", (("good", "scale"), ("bad", "zero"))),
    "enhance_bad_suppress_good": ("Degrade: enhance bad + suppress good", (("bad", "scale"), ("good", "zero"))),
}
#: The paper's names of the joint conditions: Degrade = suppress good + enhance bad, Enhance =
#: enhance good + suppress bad. The single-role conditions keep their plain names.
PAPER_NAMES = {"enhance_good_suppress_bad": "Enhance", "enhance_bad_suppress_good": "Degrade"}
#: The direction method.md expects: +1 scores rise, -1 scores fall.
EXPECTED_DIRECTION = {
    "suppress_good": -1,
    "suppress_bad": 1,
    "enhance_good_suppress_bad": 1,
    "enhance_bad_suppress_good": -1,
}


@dataclass(frozen=True)
class Condition:
    """One evaluated condition: the baseline, or an intervention on the identified neurons or on one random set.

    Attributes:
        name: ``"baseline"`` or a key of :data:`INTERVENTIONS`.
        neurons: Role (``"good"`` / ``"bad"``) -> the ``(layer, neuron)`` pairs the role stands for here (the
            identified set, or random set ``random_index``).
        factor: Enhancement factor of the ``"scale"`` actions.
        positions: ``"site"`` or ``"all"``.
        random_index: ``s`` for random set ``s`` (drawn with seed ``seed``); ``None`` for the identified neurons.
        seed: The seed random set ``random_index`` was drawn with (``None`` for the identified neurons).
        interventions: The :class:`Intervention` of every action whose role has neurons (derived).

    Raises:
        ValueError: for an unknown name, or a random index without a seed.
    """

    name: str
    neurons: Mapping[str, Sequence[Neuron]] = field(default_factory=dict)
    factor: float = 2.0
    positions: Positions = "site"
    random_index: int | None = None
    seed: int | None = None
    interventions: tuple[Intervention, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name != BASELINE and self.name not in INTERVENTIONS:
            raise ValueError(f"unknown condition {self.name!r}; known: {[BASELINE, *INTERVENTIONS]}")
        if (self.random_index is None) != (self.seed is None):
            raise ValueError("a random condition needs both random_index and seed, an identified one neither")
        neurons = {role: tuple((int(layer), int(n)) for layer, n in pairs) for role, pairs in self.neurons.items()}
        object.__setattr__(self, "neurons", neurons)
        ivs = tuple(
            Intervention(neurons[role], mode, self.factor, None, self.positions)
            for role, mode in self.actions
            if neurons.get(role)
        )
        object.__setattr__(self, "interventions", ivs)

    @property
    def actions(self) -> tuple[tuple[SetRole, Mode], ...]:
        """``(role, mode)`` of each action (none for the baseline)."""
        return INTERVENTIONS[self.name][1] if self.name != BASELINE else ()

    @property
    def roles(self) -> set[SetRole]:
        """The roles the condition acts on."""
        return {role for role, _ in self.actions}

    @property
    def description(self) -> str:
        return INTERVENTIONS[self.name][0] if self.name != BASELINE else BASELINE

    @property
    def paper_name(self) -> str:
        """``"Enhance"`` / ``"Degrade"`` for the joint conditions, else ``""``."""
        return PAPER_NAMES.get(self.name, "")

    @property
    def is_random(self) -> bool:
        return self.random_index is not None

    @property
    def key(self) -> str:
        """A unique string name: the condition's name, ``"<name>@random<s>"`` for random set ``s``."""
        return self.name if self.random_index is None else f"{self.name}@random{self.random_index}"


def matched_random_sets(
    counts: Mapping[str, Sequence[int]],
    d_mlp: int,
    *,
    seed: int,
    exclude: Tensor | None = None,
) -> tuple[dict[str, list[Neuron]], bool]:
    """Random neuron sets with exactly the given per-layer counts, pairwise disjoint.

    Args:
        counts: Role -> neurons per layer (e.g. ``{"good": [3, 0, 2], "bad": [1, 1, 0]}``).
        d_mlp: Neurons per layer.
        seed: Seed of the draw.
        exclude: Optional ``[n_layers, d_mlp]`` boolean mask of neurons to avoid (the identified
            ones). Where a layer has too few other neurons for all roles, that layer draws from all
            neurons not taken by another role instead.

    Returns:
        ``(sets, excluded_all)``: role -> sorted ``(layer, neuron)`` pairs, and whether every layer
        could avoid ``exclude``.

    Raises:
        ValueError: if a layer needs more neurons than it has.
    """
    rng = random.Random(seed)
    roles = list(counts)
    n_layers = max((len(c) for c in counts.values()), default=0)
    out: dict[str, list[Neuron]] = {r: [] for r in roles}
    excluded_all = True
    for layer in range(n_layers):
        need = [int(counts[r][layer]) if layer < len(counts[r]) else 0 for r in roles]
        total = sum(need)
        if total == 0:
            continue
        if total > d_mlp:
            raise ValueError(f"layer {layer} needs {total} random neurons but has only {d_mlp}")
        pool = list(range(d_mlp))
        if exclude is not None:
            allowed = [i for i in pool if not bool(exclude[layer, i])]
            if len(allowed) >= total:
                pool = allowed
            else:
                excluded_all = False
        picked = rng.sample(pool, total)
        pos = 0
        for r, n in zip(roles, need):
            out[r] += [(layer, i) for i in sorted(picked[pos : pos + n])]
            pos += n
    return out, excluded_all


@dataclass
class ConditionPlan:
    """Every condition of one evaluation.

    Attributes:
        conditions: Baseline first, then per available intervention (in the requested order) the identified
            condition followed by its random conditions ``0..n_random-1``.
        unavailable: Intervention name -> why it is n/a (a role without neurons).
        identified: Role -> the identified neurons.
        seeds: The seeds of the random sets.
        excluded_identified: Whether every random set avoided the identified neurons.
    """

    conditions: list[Condition]
    unavailable: dict[str, str]
    identified: dict[str, list[Neuron]]
    seeds: list[int]
    excluded_identified: bool

    def index(self, name: str, random_index: int | None = None) -> int:
        """Position in :attr:`conditions` of the named condition (of its random set ``random_index``).

        Raises:
            KeyError: for a condition not in the plan.
        """
        for i, c in enumerate(self.conditions):
            if c.name == name and c.random_index == random_index:
                return i
        raise KeyError(f"no condition {name!r} (random set {random_index}) in the plan")

    def random_indices(self, name: str) -> list[int]:
        """Positions in :attr:`conditions` of the random conditions of ``name``, random set 0 first."""
        found = [(c.random_index, i) for i, c in enumerate(self.conditions) if c.name == name and c.is_random]
        return [i for _, i in sorted(found)]


def _unavailable_note(missing: Sequence[str], positive_only: bool) -> str:
    if positive_only and "bad" in missing:
        return "positive-only method: no bad set"
    return f"no {' / '.join(sorted(missing))} neurons"


def plan_conditions(
    result: NeuronResult,
    interventions: Sequence[str],
    *,
    factor: float,
    positions: Positions,
    n_random: int,
    seed: int,
) -> ConditionPlan:
    """The conditions that evaluate ``result``: the baseline, and each intervention on the identified neurons
    and on ``n_random`` matched random sets (seeds ``seed``, ``seed + 1``, ...).

    Raises:
        ValueError: an unknown intervention, or a layer too small for the random sets.
    """
    ident: dict[str, list[Neuron]] = {
        "good": [(n.layer, n.neuron) for n in result.good],
        "bad": [(n.layer, n.neuron) for n in result.bad],
    }
    counts = {"good": result.layer_counts("good"), "bad": result.layer_counts("bad")}
    exclude = result.mask("both")
    seeds = [seed + s for s in range(n_random)]
    random_sets = []
    excluded_all = True
    for sd in seeds:
        sets, ok = matched_random_sets(counts, result.d_mlp, seed=sd, exclude=exclude)
        random_sets.append(sets)
        excluded_all &= ok
    positive_only = bool(result.stats.get("positive_only", False))
    conditions = [Condition(BASELINE, factor=factor, positions=positions)]
    unavailable: dict[str, str] = {}
    for name in interventions:
        if name not in INTERVENTIONS:
            raise ValueError(f"unknown intervention {name!r}; known: {list(INTERVENTIONS)}")
        missing = [r for r in {role for role, _ in INTERVENTIONS[name][1]} if not ident[r]]
        if missing:
            unavailable[name] = _unavailable_note(missing, positive_only)
            continue
        conditions.append(Condition(name, ident, factor, positions))
        for s, sets in enumerate(random_sets):
            conditions.append(Condition(name, sets, factor, positions, random_index=s, seed=seeds[s]))
    return ConditionPlan(conditions, unavailable, ident, seeds, excluded_all)


__all__ = [
    "BASELINE",
    "EXPECTED_DIRECTION",
    "INTERVENTIONS",
    "PAPER_NAMES",
    "Condition",
    "ConditionPlan",
    "matched_random_sets",
    "plan_conditions",
]
