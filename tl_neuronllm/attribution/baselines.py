"""Peer methods as scoring variants of the same harness (same proxies, prompts and budget).

Each baseline is an attribution method (:mod:`tl_neuronllm.attribution.methods`) and a reducer
(:mod:`tl_neuronllm.scoring.reducers`) over the same per-item ``[P, n_layers, d_mlp]`` attributions as the
method's ACE score, so :func:`tl_neuronllm.identify` runs it through the same streaming path
(``identify(model, task, method="qr_neuron")``), with checkpoints, ``keep_attributions`` / ``rescore``
and ``identify_distributed``.
Positive-only methods (QR-Neuron, knowledge neurons) return no negative scores, so their bad set is
empty (report it as n/a). The IG baselines use the same exact prefix-cache IG as the method
(:class:`GoldProbIG`: ``cfg.steps`` steps, ``cfg.ig_rule``) but attribute the gold option's probability
under the full vocabulary (``target="vocab_prob"``), as the original papers do. Every baseline records
its wall time in ``info["baseline_seconds"]``.

* ``"qr_neuron"`` (Chen, Dejl, Toni 2024, arXiv 2406.10868). Per proxy ``p`` of item ``j``:
  ``IG_{j,p}``; coarse set ``S_{j,p} = {w : IG_{j,p}(w) > t * max_w IG_{j,p}(w)}`` (``t = 0.2``).
  Cluster of the item (the query): ``C_j = U_p S_{j,p}``. Normalised attribution
  ``A_j = mean_p IG_{j,p} / max_w mean_p IG_{j,p}``. Inverse cluster frequency
  ``icf(w) = log(N / (n_w + 1))`` with ``N`` clusters and ``n_w`` the clusters holding ``w``.
  Neurons in more than 30% of the clusters are *common* and dropped. Task score
  ``(1/N) sum_j 1[w in C_j] * max(A_j(w), 0) * icf(w)`` (0 for common neurons). Note that with
  few items (``N <= 3``) every clustered neuron is common.
* ``"knowledge_neurons"`` (Dai et al. 2022). Per proxy: the same coarse sets on the gold
  probability's IG; refined set of the item ``R_j = {w : #{p : w in S_{j,p}} >= 0.5 * P_j}``
  (shared by at least half of the item's prompts). Task score
  ``(1/N) sum_j 1[w in R_j] * max(mean_p IG_{j,p}(w), 0)``: the attribution-weighted frequency of
  ``w`` among the items' refined sets, which ranks neurons refined for more items (and, among
  those, more strongly attributed) first.
* ``"activation_contrast"``: mean site activation over the correctly answered proxies minus the
  mean over the incorrectly answered ones (argmax over the options, clean run). Signed: positive
  scores are neurons more active when the model is right. With no wrong (or no right) proxy the
  contrast is undefined; the scores are then zero (nothing is selected) and
  ``info["contrast_defined"]`` is False. Its reducer needs whether each proxy was answered right,
  which kept attributions do not hold, so its results cannot be rescored.

* ``"mean_ig"``: the method's own IG (same target, steps and rule as ``"ig"``), reduced by plain averaging:
  the score of a neuron is its mean signed attribution over all items and proxies, with no per-item
  candidate sets and no ambiguity filter. Top-K of it is what ACE reduces to when its candidates and filter
  add nothing, so every table can show whether they do.

``grad_x_act`` (attribution patching) is ``identify(method="grad_x_act")`` and the random control
with matched per-layer counts lives in the evaluation, so neither is repeated here.
"""

from __future__ import annotations

from dataclasses import replace

from tl_neuronllm.attribution.methods import Activation, AttributionOptions, IntegratedGradients, register_method


class GoldProbIG(IntegratedGradients):
    """Exact IG of the gold option's full-vocabulary probability (``target="vocab_prob"``), the attribution
    of knowledge neurons and QR-Neuron."""

    name = "gold_prob_ig"

    def options(self, options: AttributionOptions) -> AttributionOptions:
        return replace(options, target="vocab_prob")


@register_method
class ActivationContrast(Activation):
    """Site activations, reduced by the ``activation_contrast`` reducer (right minus wrong proxies)."""

    name = "activation_contrast"
    reducer = "activation_contrast"


@register_method
class KnowledgeNeurons(GoldProbIG):
    """The gold probability's IG, reduced by the ``knowledge_neurons`` reducer (refined coarse sets)."""

    name = "knowledge_neurons"
    reducer = "knowledge_neurons"


@register_method
class QRNeuron(GoldProbIG):
    """The gold probability's IG, reduced by the ``qr_neuron`` reducer (clusters, inverse cluster frequency)."""

    name = "qr_neuron"
    reducer = "qr_neuron"


@register_method
class MeanIG(IntegratedGradients):
    """The method's IG, reduced by the ``mean_ig`` reducer (mean signed attribution, no candidates, no filter)."""

    name = "mean_ig"
    reducer = "mean_ig"


#: The registered baseline methods (each with its own reducer), in registration order.
BASELINES = ("activation_contrast", "knowledge_neurons", "qr_neuron", "mean_ig")

__all__ = ["BASELINES", "ActivationContrast", "GoldProbIG", "KnowledgeNeurons", "MeanIG", "QRNeuron"]
