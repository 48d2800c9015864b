"""The conditions of a held-out evaluation: what is done to which neurons, as one :class:`Condition` record each.

The baseline (no intervention) and the interventions of :data:`INTERVENTIONS` (suppress good, suppress bad,
Enhance, Degrade; the table is in :mod:`tl_neuronllm.evaluation.evaluate`, which documents the protocol).

Each intervention runs on the identified neurons and again on ``n_random`` random neuron sets of the same size
and the same per-layer counts, disjoint from each other and from the identified neurons. ``random_match``
says how the stand-ins are drawn: ``"layer"`` (:func:`matched_random_sets`: uniformly within each layer;
where a layer has too few other neurons, from all of them) or ``"activation"`` (the default of
:func:`tl_neuronllm.evaluate`; :func:`activation_matched_sets`: each identified neuron's stand-in is drawn
from the :data:`MATCH_WINDOW` other neurons of its layer nearest to it in activation magnitude, the
magnitude of its mean site activation over the identification proxies, ``|result.act_mean|``), or ``"auto"``
(the default of :func:`tl_neuronllm.evaluate`: activation-matched where that can be satisfied, else layer-matched
with a :class:`~tl_neuronllm.errors.RandomMatchWarning`; the plan records which was used). The random set
``s`` is drawn with seed ``seed + s`` and shared by all interventions. :func:`plan_conditions` lists them all;
conditions that need a set the result does not have (no bad set) are recorded as unavailable.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from torch import Tensor

from tl_neuronllm.errors import ConfigError, RandomMatchWarning
from tl_neuronllm.result.interventions import Intervention, Mode, Positions
from tl_neuronllm.result.neuron_result import NeuronResult

SetRole = Literal["good", "bad"]
RandomMatch = Literal["auto", "activation", "layer"]
#: ``random_match="activation"``: each stand-in is drawn from this many free neurons of the layer nearest in
#: activation magnitude to the identified neuron it stands for.
MATCH_WINDOW = 8
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


def activation_magnitude(result: NeuronResult) -> Tensor:
    """``|act_mean|``: the magnitude of each neuron's mean site activation over the identification proxies.

    Raises:
        ConfigError: a result without recorded activations (it cannot be activation-matched).
    """
    if result.act_mean is None:
        raise ConfigError(
            "random_match='activation' needs the result's mean site activations (act_mean), which this result "
            "does not hold; pass random_match='layer'"
        )
    return result.act_mean.detach().abs().double().cpu()


def activation_matched_sets(
    identified: Mapping[str, Sequence[Neuron]],
    magnitude: Tensor,
    *,
    seed: int,
    window: int = MATCH_WINDOW,
) -> dict[str, list[Neuron]]:
    """Random stand-ins matched neuron by neuron in layer and activation magnitude.

    For every identified neuron (in a seeded order) a stand-in is drawn uniformly from the ``window`` free
    neurons of its layer whose ``magnitude`` is nearest to its own; free means neither identified (in any
    role) nor already drawn, so the sets are disjoint from each other and from the identified neurons.

    Args:
        identified: Role -> ``(layer, neuron)`` pairs.
        magnitude: ``[n_layers, d_mlp]`` per-neuron activation magnitudes.
        seed: Seed of the draw.
        window: How many nearest free neurons each stand-in is drawn from.

    Returns:
        Role -> sorted stand-ins, as many per layer as the role has identified neurons there.

    Raises:
        ConfigError: a layer with fewer free neurons than identified ones (the match cannot be satisfied).
    """
    rng = random.Random(seed)
    taken = {(int(a), int(b)) for pairs in identified.values() for a, b in pairs}
    by_layer: dict[int, list[tuple[str, int]]] = {}
    for role, pairs in identified.items():
        for layer, n in pairs:
            by_layer.setdefault(int(layer), []).append((role, int(n)))
    out: dict[str, list[Neuron]] = {r: [] for r in identified}
    d_mlp = magnitude.shape[1]
    for layer, members in sorted(by_layer.items()):
        free = [i for i in range(d_mlp) if (layer, i) not in taken]
        if len(free) < len(members):
            raise ConfigError(
                f"random_match='activation': layer {layer} has {len(members)} identified neurons but only "
                f"{len(free)} others to match them with; pass random_match='layer' or a smaller k"
            )
        mag = magnitude[layer].detach().double().cpu().numpy()
        pool = np.asarray(free, dtype=np.int64)
        order = list(range(len(members)))
        rng.shuffle(order)
        for j in order:
            role, n = members[j]
            # the window nearest free neurons, ties in free-list (neuron) order
            near = np.argsort(np.abs(mag[pool] - mag[n]), kind="stable")[: max(1, window)]
            k = int(near[rng.randrange(len(near))])
            out[role].append((layer, int(pool[k])))
            pool = np.delete(pool, k)
    return {r: sorted(v) for r, v in out.items()}


def match_ratio(
    sets: Mapping[str, Sequence[Neuron]], identified: Mapping[str, Sequence[Neuron]], magnitude: Tensor
) -> dict[str, float]:
    """Per role: mean activation magnitude of the random set over that of the identified set (nan when empty)."""
    out = {}
    for role, pairs in identified.items():
        if not pairs or not sets.get(role):
            out[role] = float("nan")
            continue
        mean = lambda ps: float(sum(float(magnitude[a, b]) for a, b in ps) / len(ps))
        ident = mean(pairs)
        out[role] = mean(sets[role]) / ident if ident > 0 else float("nan")
    return out


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
        random_match: ``"activation"`` or ``"layer"``.
        match_ratio: Per role, the random sets' mean activation magnitude over the identified set's (mean
            over the random sets; empty without them or without recorded activations).
    """

    conditions: list[Condition]
    unavailable: dict[str, str]
    identified: dict[str, list[Neuron]]
    seeds: list[int]
    excluded_identified: bool
    random_match: RandomMatch = "layer"
    match_ratio: dict[str, float] = field(default_factory=dict)

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
    random_match: RandomMatch = "layer",
) -> ConditionPlan:
    """The conditions that evaluate ``result``: the baseline, and each intervention on the identified neurons
    and on ``n_random`` matched random sets (seeds ``seed``, ``seed + 1``, ...), drawn as ``random_match``
    says (see the module docstring).

    Raises:
        ValueError: an unknown intervention, or a layer too small for the random sets.
        ConfigError: ``random_match="activation"`` that cannot be satisfied (no recorded activations, a layer
            without enough other neurons).
    """
    ident: dict[str, list[Neuron]] = {
        "good": [(n.layer, n.neuron) for n in result.good],
        "bad": [(n.layer, n.neuron) for n in result.bad],
    }
    counts = {"good": result.layer_counts("good"), "bad": result.layer_counts("bad")}
    exclude = result.mask("both")
    seeds = [seed + s for s in range(n_random)]
    random_sets: list[dict[str, list[Neuron]]] = []
    excluded_all = True
    if random_match not in ("auto", "activation", "layer"):
        raise ConfigError(f"random_match must be 'auto', 'activation' or 'layer', got {random_match!r}")
    mag = None
    if random_match != "layer" and seeds:
        try:
            mag = activation_magnitude(result)
            activation_matched_sets(ident, mag, seed=seeds[0])  # can it be satisfied? (before any model time)
            random_match = "activation"
        except ConfigError as e:
            if random_match == "activation":
                raise
            warnings.warn(f"{e}; matching the random sets on layer counts only", RandomMatchWarning, stacklevel=3)
            mag, random_match = None, "layer"
    for sd in seeds:
        if mag is not None:
            random_sets.append(activation_matched_sets(ident, mag, seed=sd))
            continue
        sets, ok = matched_random_sets(counts, result.d_mlp, seed=sd, exclude=exclude)
        random_sets.append(sets)
        excluded_all &= ok
    ratios: dict[str, float] = {}
    if random_sets and result.act_mean is not None:
        m = result.act_mean.detach().abs().double().cpu()
        per = [match_ratio(s, ident, m) for s in random_sets]
        ratios = {r: float(sum(p[r] for p in per) / len(per)) for r in ident}
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
    return ConditionPlan(conditions, unavailable, ident, seeds, excluded_all, random_match, ratios)


__all__ = [
    "BASELINE",
    "EXPECTED_DIRECTION",
    "INTERVENTIONS",
    "MATCH_WINDOW",
    "PAPER_NAMES",
    "RandomMatch",
    "activation_magnitude",
    "activation_matched_sets",
    "match_ratio",
    "Condition",
    "ConditionPlan",
    "matched_random_sets",
    "plan_conditions",
]
