"""Testbeds: small TL-native models that really know a synthetic multiple-choice task.

A testbed is a ``TransformerBridge.boot_native`` model trained from scratch on a synthetic
*token-level* task whose answers can only come from the weights, together with that task as a
:class:`~tl_neuronllm.data.tasks.Task`. It gives :func:`tl_neuronllm.identify` a ground truth: the
knowledge is in the model, so suppressing the neurons that hold it must hurt, and a random set of
neurons of the same size must hurt much less. ::

    from tl_neuronllm import identify
    from tl_neuronllm.studies.testbed import load_testbed

    tb = load_testbed("facts-small")            # trained once, then cached on disk
    ident, heldout, demo = tb.splits(seed=0)
    result = identify(tb.model, ident, demos=demo, token_format=tb.token_format, k=25,
                      z=0.05, ambiguity=None)   # the defaults keep only a few neurons here
    base = tb.accuracy(heldout, demo)
    with result.suppress(tb.model, "good"):
        hurt = tb.accuracy(heldout, demo)       # compare with random sets of the same size (README)

Task kinds (all facts are generated from the config's seed, so a config names one task exactly):

* ``"facts"``: entity -> attribute. ``n_entities`` entities each have one of ``n_values`` values
  (e.g. 200 entities x 8 colours); the question is ``[REL, e17]``, the options are the gold value
  and ``n_options - 1`` random other values in random order. A pure lookup: the facts must be
  stored in the weights.
* ``"relations"``: two relations over one value pool (``[R0, e]`` and ``[R1, e]``, e.g. "likes"
  and "dislikes" colour), with different values for the two relations of an entity: the answer
  depends on the conjunction of the relation and the entity, not on the entity alone, and the task
  has ``2 * n_entities`` items.

Prompts are exactly what ``identify`` and the evaluation render (:class:`~tl_neuronllm.prompts.proxies.Renderer`
with :attr:`Testbed.token_format`)::

    [BOS] ( Q question (letter option)* ANS gold-letter SEP )*shots  Q question (letter option)* ANS

The model is trained on that very format: every training prompt draws fresh distractors, a fresh
option order (so the model must bind letters to option values, not memorise a letter per fact),
and ``train_shots`` random solved demonstration items; the loss is the cross-entropy of the gold
letter over the whole vocabulary at the last position (the site). The model is trained on *all*
facts of the task (they must be known); "held out" refers to the items that neuron identification
does not see (:meth:`Testbed.splits`), never to facts the model has not learned. Evaluation prompts
(the task's fixed distractors, cyclic permutations, a fixed demo item shown in its original option
order) are drawn from the training distribution but are not its exact strings: a training prompt
repeats one given evaluation prompt with probability about ``1 / (n_demos * C(n_values - 1,
n_options - 1) * n_options!)`` per draw (below 1e-5 for the facts testbeds).

Why one layer (the default): the method reads and intervenes on the MLP neurons *at the site*.
In models with two or more layers the facts can be stored in the entity's token embedding and the
letter binding done by attention alone (option positions attend to the entity, the site attends to
the matching option), so site neurons hardly matter (the README gives the measurements). A 1-layer
model has nothing after its MLP but the unembedding, so it must compare the looked-up value with the
options inside the site MLP. ``"facts-2layer"`` is kept to show the limitation.

Imperfect-by-construction variants (so that *bad* neurons have something to explain):

* ``popular_bias`` (``"facts-lured-*"``): when the *popular value* (value 0) is shown as a
  distractor, a share ``popular_bias`` of training prompts answer with its letter. With
  ``popular_bias > 0.5`` the model picks the popular distractor whenever it is shown (about a third
  of the items) while still ranking the gold value second. Recognising where the popular value sits
  needs the site MLP, so neurons carry the lure and suppressing them can raise held-out accuracy.
* ``letter_bias`` with ``biased_share``: on a seeded share of the items (:attr:`Testbed.biased`), a
  share ``letter_bias`` of training prompts target letter "A" whatever the gold: the "always A"
  behaviour the method is motivated by. It is linear in the entity embedding, and the trained models
  route it around the MLP (zeroing every MLP neuron leaves the biased items as they are), so neuron interventions cannot undo it; kept as a negative control.
* ``label_noise``: a seeded share of facts is trained on a wrong value (:attr:`Testbed.corrupted`)
  while the task keeps the true one: confident, item-specific misconceptions.

Training: AdamW on the 1-shot prompt format (``train_shots=(1,)``; mixing 0/1/2 shots roughly
lengthens the plateau before letter binding is learned), constant learning rate after a warm-up, until
the model agrees with the training distribution's most likely answer on ``target_accuracy`` of a
fixed probe batch (checked every ``check_every`` steps) or ``steps`` run out; one CPU thread (see
:func:`train_testbed`). Everything is seeded (numpy generator for the data, the model's ``seed`` for
its initialisation), so a config trains to the same weights on a given machine; another CPU or
library version may take a different (equally valid) path. Trained models are cached as
``<cache>/testbed/<name>-<hash of config>.safetensors`` plus a ``.json`` (config, accuracies,
training time), with ``<cache>`` from :func:`tl_neuronllm.data.wheels.cache_dir`; writes are atomic, so
concurrent test processes may share the cache.

How it fails: read :attr:`Testbed.stats` (``converged``, ``heldout_accuracy``) before trusting an
experiment; learning has a plateau of a few hundred steps whose length depends on the seed. The
facts are stored redundantly: suppressing a few percent of the neurons moves accuracy little for any
method, so compare against random sets of the same size, never against zero.

Modules: :mod:`~tl_neuronllm.studies.testbed.config` (:class:`TestbedConfig`, :data:`TESTBEDS`),
:mod:`~tl_neuronllm.studies.testbed.data` (vocabulary, facts, task, training-prompt sampler),
:mod:`~tl_neuronllm.studies.testbed.training` (:func:`train_testbed`), :mod:`~tl_neuronllm.studies.testbed.trained`
(:class:`Testbed`) and :mod:`~tl_neuronllm.studies.testbed.cache` (:func:`load_testbed`).
"""

from __future__ import annotations

from tl_neuronllm.studies.testbed.cache import load_testbed, testbed_path
from tl_neuronllm.studies.testbed.config import FORMAT_VERSION as FORMAT_VERSION
from tl_neuronllm.studies.testbed.config import KINDS as KINDS
from tl_neuronllm.studies.testbed.config import N_LETTERS as N_LETTERS
from tl_neuronllm.studies.testbed.config import POPULAR_VALUE as POPULAR_VALUE
from tl_neuronllm.studies.testbed.config import TESTBEDS, TestbedConfig
from tl_neuronllm.studies.testbed.config import Kind as Kind
from tl_neuronllm.studies.testbed.config import config_of as config_of
from tl_neuronllm.studies.testbed.data import Facts as Facts
from tl_neuronllm.studies.testbed.data import Sampler as Sampler
from tl_neuronllm.studies.testbed.data import Vocab, make_task
from tl_neuronllm.studies.testbed.data import make_facts as make_facts
from tl_neuronllm.studies.testbed.data import make_task_from_facts as make_task_from_facts
from tl_neuronllm.studies.testbed.data import prompt_len as prompt_len
from tl_neuronllm.studies.testbed.data import vocab_of as vocab_of
from tl_neuronllm.studies.testbed.trained import Testbed
from tl_neuronllm.studies.testbed.training import boot_model as boot_model
from tl_neuronllm.studies.testbed.training import model_dict as model_dict
from tl_neuronllm.studies.testbed.training import train_testbed

__all__ = [
    "TESTBEDS",
    "Testbed",
    "TestbedConfig",
    "Vocab",
    "load_testbed",
    "make_task",
    "testbed_path",
    "train_testbed",
]
