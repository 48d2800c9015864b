"""Common vs task-specific neurons across tasks.

``compare(results)`` takes the results of one model on several tasks (``{task name: NeuronResult}``)
and reports, for the good and for the bad sets:

* the overlap of every pair of tasks: the number of shared neurons, their Jaccard index, and what
  chance gives for sets of those sizes drawn uniformly from all neurons (expected overlap
  ``a * b / N``, the exact expected Jaccard under the hypergeometric distribution, and the
  probability of an overlap at least as large);
* the neurons that belong to the set of two or more tasks, which tasks, and their layers;
* a heatmap (:meth:`Comparison.heatmap`).

:func:`shared_vs_specific` adds the intervention check: on each task's held-out items, suppressing its
*task-specific* good neurons (in no other task's good set) vs its *shared* ones (in at least one other
task's good set), each cut to the same size (the top ones by the task's score), against matched random
sets (forward passes only, :func:`tl_neuronllm.evaluation.evaluate`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool
from safetensors.torch import load_file, save_file
from torch import Tensor

from tl_neuronllm.data.tasks import Task
from tl_neuronllm.errors import MismatchError
from tl_neuronllm.evaluation.stats import chance_overlap, overlap_p_value
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.result.neuron_result import NeuronResult

COMPARE_FILE = "comparison.safetensors"
COMPARE_JSON = "comparison.json"
COMPARE_FORMAT = "tl_neuronllm.Comparison/1"
SetRole = Literal["good", "bad"]
ROLES: tuple[SetRole, SetRole] = ("good", "bad")


@dataclass
class Comparison:
    """Overlap of the good and bad sets of one model's results on several tasks.

    Attributes:
        tasks: Task names, in the order of the mapping given to :func:`compare`.
        n_layers, d_mlp: The model's shape (``N = n_layers * d_mlp`` neurons).
        members: Role -> ``[tasks, n_layers, d_mlp]`` boolean membership of each task's set.
        pairs: One dict per (role, task pair): ``role, task_a, task_b, n_a, n_b, shared, jaccard,
            expected_shared, expected_jaccard, p_value`` (chance: random sets of the same sizes).
        shared: Role -> neurons in the sets of >= 2 tasks: ``{"label", "layer", "neuron", "tasks"}``, most
            tasks first.
        checks: Rows of :func:`shared_vs_specific` (empty until it runs).
        config: The tasks' identification options (k, z, ambiguity, mode, method), the model and versions.
    """

    tasks: list[str]
    n_layers: int
    d_mlp: int
    members: dict[str, Bool[Tensor, "tasks n_layers d_mlp"]]
    pairs: list[dict[str, Any]]
    shared: dict[str, list[dict[str, Any]]]
    checks: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp

    def shared_layers(self, role: str) -> list[int]:
        """Number of neurons in the ``role`` sets of >= 2 tasks, per layer.

        Raises:
            ValueError: for another role.
        """
        if role not in ROLES:
            raise ValueError(f"role must be 'good' or 'bad', got {role!r}")
        counts = [0] * self.n_layers
        for x in self.shared[role]:
            counts[x["layer"]] += 1
        return counts

    def pair(self, role: str, a: str, b: str) -> dict[str, Any]:
        """The overlap row of two tasks (in either order).

        Raises:
            KeyError: naming the role and tasks when there is no such row.
        """
        for p in self.pairs:
            if p["role"] == role and {p["task_a"], p["task_b"]} == {a, b}:
                return p
        raise KeyError(f"no {role} overlap between {a!r} and {b!r}; tasks: {self.tasks}")

    # ---- views ----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """The overlap table, the shared neurons per layer and (when run) the intervention check."""
        lines = [
            "| set | task A | task B | size A | size B | shared | Jaccard | chance shared | chance Jaccard | "
            "p (overlap >= shared) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in self.pairs:
            lines.append(
                f"| {p['role']} | {p['task_a']} | {p['task_b']} | {p['n_a']} | {p['n_b']} | {p['shared']} | "
                f"{p['jaccard']:.3f} | {p['expected_shared']:.1f} | {p['expected_jaccard']:.4f} | "
                f"{p['p_value']:.2g} |"
            )
        for role in ROLES:
            by_n: dict[int, int] = {}
            for x in self.shared[role]:
                by_n[len(x["tasks"])] = by_n.get(len(x["tasks"]), 0) + 1
            per_layer = self.shared_layers(role)
            nz = ", ".join(f"L{i}: {c}" for i, c in enumerate(per_layer) if c)
            lines += [
                "",
                f"{role} neurons in the sets of >= 2 tasks: {len(self.shared[role])} "
                f"({', '.join(f'{c} in {n} tasks' for n, c in sorted(by_n.items(), reverse=True)) or 'none'}); "
                f"by layer: {nz or '-'}",
            ]
        if self.checks:
            lines += [
                "",
                "| task | specific good | shared good | suppressed (each) | Δacc specific | Δacc shared | "
                "Δgold p specific | Δgold p shared | random Δgold p (specific / shared) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            f = lambda x: "n/a" if x is None else f"{x:+.3f}"
            for c in self.checks:
                lines.append(
                    f"| {c['task']} | {c['n_specific']} | {c['n_shared']} | {c['n_each']} | "
                    f"{f(c.get('specific', {}).get('d_acc'))} | {f(c.get('shared', {}).get('d_acc'))} | "
                    f"{f(c.get('specific', {}).get('d_gold'))} | {f(c.get('shared', {}).get('d_gold'))} | "
                    f"{f(c.get('specific', {}).get('random_d_gold'))} / "
                    f"{f(c.get('shared', {}).get('random_d_gold'))} |"
                )
        return "\n".join(lines) + "\n"

    def heatmap(self, path: str | Path) -> Path:
        """A PNG: per role, the tasks x tasks Jaccard matrix (cells: shared count, diagonal: set size), and
        the shared neurons per layer."""
        from matplotlib.figure import Figure

        path = Path(path)
        T = len(self.tasks)
        fig = Figure(figsize=(4.2 * 2 + 4.5, 3.2 + 0.25 * T), dpi=110, layout="constrained")
        axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.2])
        for ax, role in zip(axes[:2], ROLES):
            jac = torch.eye(T)
            cnt = [[0] * T for _ in range(T)]
            for i in range(T):
                cnt[i][i] = int(self.members[role][i].sum())
            for p in self.pairs:
                if p["role"] != role:
                    continue
                i, j = self.tasks.index(p["task_a"]), self.tasks.index(p["task_b"])
                jac[i, j] = jac[j, i] = p["jaccard"]
                cnt[i][j] = cnt[j][i] = p["shared"]
            off = jac[~torch.eye(T, dtype=torch.bool)]
            im = ax.imshow(
                jac.numpy(),
                vmin=0,
                vmax=max(0.05, float(off.max()) if off.numel() else 0.05),
                cmap="Blues" if role == "good" else "Reds",
            )
            for i in range(T):
                for j in range(T):
                    ax.text(j, i, str(cnt[i][j]), ha="center", va="center", fontsize=8)
            ax.set_xticks(range(T), self.tasks, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(T), self.tasks, fontsize=8)
            ax.set_title(f"{role} sets: Jaccard (cells: shared neurons)", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
        ax = axes[2]
        x = list(range(self.n_layers))
        ax.bar(x, self.shared_layers("good"), color="#2a7ab9", label="good")
        ax.bar(x, [-c for c in self.shared_layers("bad")], color="#d1495b", label="bad")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("layer")
        ax.set_ylabel("neurons in >= 2 tasks' sets (bad below 0)")
        ax.legend(frameon=False, fontsize=8)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``comparison.safetensors`` (memberships), ``comparison.json`` and ``comparison.md``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {f"members.{r}": self.members[r].to(torch.uint8).contiguous() for r in ROLES}, str(path / COMPARE_FILE)
        )
        meta = {k: v for k, v in asdict(self).items() if k != "members"}
        (path / COMPARE_JSON).write_text(json.dumps({"format": COMPARE_FORMAT, **meta}, indent=1, default=str))
        (path / "comparison.md").write_text(self.to_markdown())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Comparison:
        """Read a :class:`Comparison` written by :meth:`save`.

        Raises:
            FileNotFoundError: if the files are missing.
            ValueError: for another format or memberships that do not match the recorded tasks and shape.
        """
        path = Path(path)
        if not (path / COMPARE_FILE).exists() or not (path / COMPARE_JSON).exists():
            raise FileNotFoundError(f"{path} holds no {COMPARE_FILE} + {COMPARE_JSON}")
        meta = json.loads((path / COMPARE_JSON).read_text(encoding="utf-8"))
        if meta.pop("format", None) != COMPARE_FORMAT:
            raise ValueError(f"{path / COMPARE_JSON}: not a {COMPARE_FORMAT} file")
        t = load_file(str(path / COMPARE_FILE))
        members = {r: t[f"members.{r}"].bool() for r in ROLES}
        want = (len(meta["tasks"]), meta["n_layers"], meta["d_mlp"])
        if any(tuple(m.shape) != want for m in members.values()):
            raise ValueError(f"{path / COMPARE_FILE}: memberships do not have the recorded shape {want}")
        return cls(members=members, **meta)


def _check_results(results: Mapping[str, NeuronResult]) -> tuple[list[str], list[NeuronResult]]:
    """Task names and results, refusing fewer than two or results of different models (naming the two tasks)."""
    if not isinstance(results, Mapping):
        raise ValueError(f"results must be a mapping task name -> NeuronResult, got {type(results).__name__}")
    if len(results) < 2:
        raise ValueError(f"compare needs the results of at least 2 tasks, got {len(results)}")
    names = [str(n) for n in results]
    res = list(results.values())
    for name, r in zip(names, res):
        if not isinstance(r, NeuronResult):
            raise ValueError(f"results[{name!r}] is a {type(r).__name__}, not a NeuronResult")
    first, r0 = names[0], res[0]
    model0 = r0.config.get("model", {}).get("model_name")
    for name, r in zip(names[1:], res[1:]):
        if (r.n_layers, r.d_mlp) != (r0.n_layers, r0.d_mlp):
            raise ValueError(
                f"results[{name!r}] is for {r.n_layers} x {r.d_mlp} neurons but results[{first!r}] for "
                f"{r0.n_layers} x {r0.d_mlp}: compare results of one model"
            )
        if r.config.get("hook", "hook_post") != r0.config.get("hook", "hook_post"):
            raise ValueError(
                f"results[{name!r}] uses hook {r.config.get('hook')!r} but results[{first!r}] "
                f"{r0.config.get('hook')!r}: their neurons are not the same units"
            )
        m = r.config.get("model", {}).get("model_name")
        if m and model0 and m != model0:
            raise ValueError(f"results[{name!r}] is for model {m!r} but results[{first!r}] for {model0!r}")
        w, w0 = r.config.get("model", {}).get("weights"), r0.config.get("model", {}).get("weights")
        if w and w0 and w != w0:
            raise MismatchError(
                f"results[{name!r}] was identified on a model with other weights than results[{first!r}] (weight "
                f"fingerprints {w[:12]} and {w0[:12]}): compare results of one model"
            )
    return names, res


def _overlap_pairs(names: Sequence[str], members: Mapping[str, Tensor], n: int) -> list[dict[str, Any]]:
    """One overlap row per role and task pair, with what chance gives for sets of those sizes among ``n``."""
    pairs = []
    for role in ROLES:
        for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
            ma, mb = members[role][i], members[role][j]
            na, nb, n_shared = int(ma.sum()), int(mb.sum()), int((ma & mb).sum())
            union = int((ma | mb).sum())
            pairs.append(
                {
                    "role": role,
                    "task_a": a,
                    "task_b": b,
                    "n_a": na,
                    "n_b": nb,
                    "shared": n_shared,
                    "jaccard": n_shared / union if union else 0.0,
                    **chance_overlap(na, nb, n),
                    "p_value": overlap_p_value(n_shared, na, nb, n),
                }
            )
    return pairs


def _shared_neurons(names: Sequence[str], members: Mapping[str, Tensor]) -> dict[str, list[dict[str, Any]]]:
    """Per role, the neurons in the sets of two or more tasks, most tasks first."""
    shared: dict[str, list[dict[str, Any]]] = {}
    for role in ROLES:
        count = members[role].sum(0)
        rows = []
        for layer, neuron in (count >= 2).nonzero().tolist():
            tasks = [names[t] for t in range(len(names)) if bool(members[role][t, layer, neuron])]
            rows.append({"label": f"L{layer}N{neuron}", "layer": layer, "neuron": neuron, "tasks": tasks})
        rows.sort(key=lambda x: (-len(x["tasks"]), x["layer"], x["neuron"]))
        shared[role] = rows
    return shared


def compare(results: Mapping[str, NeuronResult]) -> Comparison:
    """Overlap of the good and bad sets of one model's results on several tasks.

    Args:
        results: Task name -> :class:`NeuronResult`, at least two, all of the same model shape and hook.

    Returns:
        A :class:`Comparison` (see its attributes; :meth:`Comparison.to_markdown`, :meth:`Comparison.heatmap`).

    Raises:
        ValueError: fewer than two results, a value that is not a NeuronResult, or results of different model
            shapes, hooks or models (naming the two tasks).
    """
    from tl_neuronllm.provenance import versions as _versions

    names, res = _check_results(results)
    r0 = res[0]
    L, d = r0.n_layers, r0.d_mlp
    members = {role: torch.stack([r.mask(role) for r in res]) for role in ROLES}
    keys = ("k", "z", "ambiguity", "mode", "method", "n_proxies", "steps", "ig_rule")
    config = {
        "model": r0.config.get("model", {}),
        "versions": _versions(),
        "per_task": {
            n: {k: r.config.get(k) for k in keys} | {"n_scored": r.config.get("task", {}).get("n_scored")}
            for n, r in zip(names, res)
        },
    }
    return Comparison(
        tasks=names,
        n_layers=L,
        d_mlp=d,
        members=members,
        pairs=_overlap_pairs(names, members, L * d),
        shared=_shared_neurons(names, members),
        config=json.loads(json.dumps(config, default=str)),
    )


def specific_and_shared(
    comparison: Comparison, results: Mapping[str, NeuronResult], task: str, role: SetRole = "good"
) -> tuple[list[Any], list[Any]]:
    """A task's ``role`` neurons split into task-specific ones (in no other task's set) and shared ones (in
    at least one other task's set), each best-scored first.

    Raises:
        KeyError: for a task not in the comparison.
    """
    if task not in comparison.tasks:
        raise KeyError(f"task {task!r} is not in the comparison; tasks: {comparison.tasks}")
    t = comparison.tasks.index(task)
    others = torch.cat([comparison.members[role][:t], comparison.members[role][t + 1 :]]).any(0)
    neurons = results[task].neurons(role)
    specific = [x for x in neurons if not bool(others[x.layer, x.neuron])]
    shared = [x for x in neurons if bool(others[x.layer, x.neuron])]
    return specific, shared


def shared_vs_specific(
    model: HookedModel,
    comparison: Comparison,
    results: Mapping[str, NeuronResult],
    heldout: Mapping[str, Task],
    *,
    demos: Mapping[str, Task | Sequence[Any] | None] | None = None,
    n_random: int = 3,
    min_size: int = 1,
    progress: bool = False,
    **eval_options: Any,
) -> list[dict[str, Any]]:
    """The intervention check: on each task, suppress its task-specific good neurons vs its shared ones.

    Both sets are cut to the same size ``m = min(|specific|, |shared|)`` (the top ``m`` by the task's score),
    so the comparison is about *which* neurons, not how many. Each is evaluated on the task's held-out items
    with :func:`tl_neuronllm.evaluation.evaluate` (``suppress_good`` only, ``n_random`` matched random sets); the rows are
    also stored in ``comparison.checks``.

    Args:
        model: The model of the results.
        comparison: From :func:`compare` on ``results``.
        results: The same mapping that was compared.
        heldout: Task name -> held-out items (disjoint from the identification items).
        demos: Task name -> demonstration items used at identification.
        n_random: Random sets per condition.
        min_size: Tasks where ``m`` is smaller are reported with ``n_each = m`` and no evaluation.
        progress: Progress bars.
        **eval_options: Other :class:`tl_neuronllm.evaluation.evaluate.EvalConfig` options (``n_boot``, ``seed``, ...).

    Returns:
        Per task: ``task, n_specific, n_shared, n_each`` and, when evaluated, ``specific`` / ``shared`` with
        ``d_acc``, ``d_gold``, their intervals, the random means and the baseline accuracy.

    Raises:
        KeyError: a compared task without held-out items; ValueError: results that are not the compared ones.
    """
    from tl_neuronllm.evaluation.evaluate import evaluate

    missing = [t for t in comparison.tasks if t not in heldout]
    if missing:
        raise KeyError(f"no held-out items for task(s) {missing}; give heldout={{task: Task}} for every compared task")
    for t in comparison.tasks:
        if t not in results or not torch.equal(
            results[t].mask("good"), comparison.members["good"][comparison.tasks.index(t)]
        ):
            raise ValueError(f"results[{t!r}] is not the result that was compared (its good set differs)")
    rows = []
    for t in comparison.tasks:
        specific, shared = specific_and_shared(comparison, results, t, "good")
        m = min(len(specific), len(shared))
        row: dict[str, Any] = {"task": t, "n_specific": len(specific), "n_shared": len(shared), "n_each": m}
        if m >= max(1, min_size):
            for label, subset in (("specific", specific[:m]), ("shared", shared[:m])):
                sub = dataclasses.replace(results[t], good=list(subset), bad=[])
                ev = evaluate(
                    model,
                    sub,
                    heldout[t],
                    demos=(demos or {}).get(t),
                    n_random=n_random,
                    interventions=("suppress_good",),
                    progress=progress,
                    **eval_options,
                )
                r = ev.row("suppress_good")
                rnd = r.random.get("metrics", {})
                row[label] = {
                    "d_acc": r.delta["accuracy"],
                    "d_gold": r.delta["gold_prob"],
                    "d_acc_ci": r.delta_ci["accuracy"],
                    "d_gold_ci": r.delta_ci["gold_prob"],
                    "random_d_acc": rnd.get("delta_accuracy", {}).get("mean"),
                    "random_d_gold": rnd.get("delta_gold_prob", {}).get("mean"),
                    "base_accuracy": ev.baseline.metrics["accuracy"],
                    "neurons": [x.label for x in subset],
                }
        rows.append(row)
    comparison.checks = rows
    return rows


__all__ = ["Comparison", "chance_overlap", "compare", "overlap_p_value", "shared_vs_specific", "specific_and_shared"]
