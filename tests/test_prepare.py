"""prepare(): one step for the adapter, the demonstrations and the tokenized proxies."""

from __future__ import annotations

import pytest
from helpers import text_task, token_task

from tl_neuronllm import IdentifyConfig, TaskError
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt, Query
from tl_neuronllm.pipeline.prepare import Prepared, build_queries, choose_demos, prepare


def test_prepare_equals_the_steps_it_bundles(token_model):
    task, fmt = token_task(6)
    cfg = IdentifyConfig(token_format=fmt, n_proxies=2, seed=3)
    prep = prepare(token_model, task, cfg)
    assert isinstance(prep, Prepared) and isinstance(prep.adapter, ModelAdapter)
    scored, demos = choose_demos(task, cfg.n_shots, cfg.seed, None)
    assert [it.id for it in prep.task.items] == [it.id for it in scored.items] == prep.item_ids
    assert [d.id for d in prep.demo_items] == [d.id for d in demos]
    eager = build_queries(ModelAdapter(token_model), scored, cfg, demos)
    assert list(prep.queries) == eager and prep.queries[1:3] == eager[1:3] and len(prep.queries) == len(eager)
    assert list(prep.queries.subset(range(0, 5, 2))) == [eager[i] for i in range(0, 5, 2)]
    q = prep.queries[0][0]
    assert isinstance(q, ProxyPrompt) and Query is ProxyPrompt
    assert q.site_rule == "last" and q.site == len(q.prompt) - 1
    given = prepare(token_model, task.subset([1, 2, 3]), cfg, demos=[task.items[0]])
    assert [d.id for d in given.demo_items] == [task.items[0].id] and len(given.queries) == 3


def test_prepare_errors_before_model_time(token_model, text_model):
    task, fmt = token_task(4)
    with pytest.raises(TaskError, match="must be a tl_neuronllm.Task"):
        prepare(token_model, list(task.items), IdentifyConfig(token_format=fmt))
    with pytest.raises(ValueError, match="layer 99 is out of range"):
        prepare(token_model, task, IdentifyConfig(token_format=fmt, layers=(99,)))
    with pytest.raises(TaskError, match="too few"):
        prepare(token_model, task.subset([0]), IdentifyConfig(token_format=fmt))
    with pytest.raises(ValueError, match="context"):
        long = text_task(3)
        prepare(text_model, long, IdentifyConfig(instruction="cat " * 5000))


def test_prefix_witnesses_give_share_prefix_the_same_length():
    from tl_neuronllm.pipeline.prepare import prefix_witnesses

    def shared(seqs):  # the rule of ModelAdapter.share_prefix
        if len(seqs) < 2:
            return 0
        n = min(len(p) - 2 for p in seqs)
        for p in seqs[1:]:
            i = 0
            while i < n and p[i] == seqs[0][i]:
                i += 1
            n = i
        return n

    base = list(range(40))
    cases = [
        [base + [1, 2], base + [3], base[:30] + [9] * 20, base[:35]],
        [base[:12], base + [5] * 10, base[:20] + [7]],
        [base, base],
        [base],
        [[5, 6, 7], base],
    ]
    for prompts in cases:
        w = prefix_witnesses(iter(prompts))
        assert len(w) <= 3 and w[0] == prompts[0] and shared(w) == shared(prompts)
    assert prefix_witnesses(iter([])) == []


def test_demos_of_a_classification_task_clash_only_with_the_same_text():
    """Classification items share their question and options; only the same text (context) is the same item."""
    from tl_neuronllm import Task

    rows = [{"text": f"review number {i} " + ("good" if i % 2 else "bad"), "label": str(i % 2)} for i in range(8)]
    task = Task.from_classification(rows, label_names={"0": "negative", "1": "positive"}, question="Positive?")
    demo = task.items[0]
    rest = task.subset(list(range(1, 8)))
    scored, demos = choose_demos(rest, 1, 0, [demo])
    assert scored is rest and demos == [demo]
    with pytest.raises(TaskError, match="is both a demo and a scored item"):
        choose_demos(task, 1, 0, [demo])
