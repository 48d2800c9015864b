"""Silent wrong answers from the model side: prompts past the context, non-finite activations."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import ModelError, Task, TokenFormat, evaluate, identify
from tl_neuronllm.model.answers import ContextLengthError


@pytest.fixture(scope="module")
def model():
    return make_model("native", False)  # n_ctx = 256


def _long_task(q_len: int, opt_len: int = 1) -> Task:
    recs = [
        {
            "id": f"q{i}",
            "question": [10 + (j % 20) for j in range(q_len if i == 2 else 3)],
            "options": [[40 + o] * opt_len for o in range(4)],
            "answer": i % 4,
        }
        for i in range(5)
    ]
    return Task.from_records(recs, name="long")


FMT = TokenFormat(letters=[1, 2, 3, 4], bos=0, question_prefix=[7], option_sep=[8], answer_prefix=[9], demo_sep=[8])


def test_prompt_longer_than_context_names_item_length_and_limit(model, monkeypatch):
    calls = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    task = _long_task(260)
    with pytest.raises(
        ContextLengthError,
        match=r"item 'q2': the prompt is \d+ tokens .* longer than the model's "
        r"context of 256 tokens \(model.cfg.n_ctx\)",
    ):
        identify(model, task, token_format=FMT, n_shots=0, progress=False)
    assert calls == []  # refused before any forward


def test_demos_count_towards_the_context(model):
    # each item fits alone (~180 tokens) but not with a demonstration in front
    recs = [
        {
            "id": f"d{i}",
            "question": [10 + (j % 20) for j in range(170)],
            "options": [[40 + o] for o in range(4)],
            "answer": 0,
        }
        for i in range(4)
    ]
    task = Task.from_records(recs, name="demo-long")
    identify(model, task, token_format=FMT, n_shots=0, steps=1, k=3, progress=False)  # fits
    with pytest.raises(ContextLengthError, match=r"item 'd\d': the prompt is \d+ tokens"):
        identify(model, task, token_format=FMT, n_shots=1, steps=1, progress=False)


def test_cloze_counts_the_longest_option(model):
    # the prompt fits, the prompt plus the longest option does not
    task = _long_task(200, opt_len=1)
    recs = task.to_records()
    recs[2]["options"][1] = [41] * 60
    task = Task.from_records(recs, name="cloze-long")
    with pytest.raises(ContextLengthError, match=r"item 'q2': the prompt is \d+ tokens \+ 60 for its longest option"):
        identify(model, task, token_format=FMT, n_shots=0, mode="cloze", progress=False)


def test_context_is_checked_in_evaluate_too(model):
    task, fmt = token_task(8)
    result = identify(model, task, token_format=fmt, steps=1, k=3, progress=False)
    with pytest.raises(ContextLengthError, match=r"item 'q2'.*context of 256 tokens"):
        evaluate(model, result, _long_task(300), progress=False, n_random=0, allow_overlap=True)


def _nan_model():
    m = make_model("native", False)
    with torch.no_grad():
        w = dict(m.named_parameters())
        name = next(n for n in w if n.startswith("layers.1.") and "fc_in" in n and n.endswith("bias"))
        w[name].fill_(float("nan"))
    return m, name


def test_nan_activations_name_the_layer_and_item():
    m, name = _nan_model()
    task, fmt = token_task(6)
    for method in ("ig", "grad_x_act", "activation"):
        with pytest.raises(
            ModelError, match=r"non-finite attribution \(nan\) at layer \d .*for item '\d+' \(proxy 0\)"
        ):
            identify(m, task, token_format=fmt, steps=1, progress=False, method=method)


def test_nan_logits_in_evaluate_are_refused():
    model = make_model("native", False)
    task, fmt = token_task(10)
    result = identify(model, task, token_format=fmt, steps=1, k=3, progress=False)
    m, _ = _nan_model()
    with pytest.raises(
        ModelError,
        match=r"evaluate \(baseline\): the model's option probabilities are non-finite"
        r" .* for item '\d+'",
    ):
        evaluate(m, result, task, progress=False, n_random=0, allow_overlap=True)


def test_text_prompt_is_not_truncated_silently_by_the_tokenizer():
    from helpers import has_bridge

    if not has_bridge():
        pytest.skip("needs TransformerBridge")
    m = make_model("hf", False)  # GPT-2 with 256 positions and a word tokenizer
    recs = [
        {
            "id": f"t{i}",
            "question": "what is the colour of the sky ?" + (" cat" * 300 if i == 1 else ""),
            "options": ["red", "blue", "green", "yellow"],
            "answer": 1,
        }
        for i in range(4)
    ]
    task = Task.from_records(recs, name="words")
    with pytest.raises(ContextLengthError, match=r"item 't1': the prompt is (3\d\d) tokens .*context of 256 tokens"):
        identify(m, task, n_shots=0, progress=False)
