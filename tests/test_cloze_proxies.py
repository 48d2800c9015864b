"""Cloze proxies (issue 21, part 1) and the ``mean_ig`` baseline (part 2): with the options not listed, the
proxies of an item differ by instruction template and demonstration; P = 1 renders today's prompt; ``mean_ig``
is the mean signed attribution over items and proxies (a naive loop), and ``rescore(method="mean_ig")`` of an
IG run equals ``identify(method="mean_ig")``."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, text_task

from tl_neuronllm import identify, rescore
from tl_neuronllm.attribution.methods import get_method
from tl_neuronllm.errors import ConfigError
from tl_neuronllm.pipeline.identify import IdentifyConfig
from tl_neuronllm.pipeline.prepare import choose_demos
from tl_neuronllm.prompts.proxies import (
    CLOZE_TEMPLATES,
    DEFAULT_CLOZE_INSTRUCTION,
    AugmentConfig,
    PromptConfig,
    Renderer,
    demo_pool_size,
)
from tl_neuronllm.scoring.ace import ScoringConfig
from tl_neuronllm.scoring.reducers import reducer_class


def _renderer(n_proxies, n_shots=1, pool=3):
    task = text_task(8)
    prompt = PromptConfig(mode="cloze", show_options=False, n_shots=n_shots)
    scored, demos = choose_demos(task, n_shots, 0, None, demo_pool_size(prompt, AugmentConfig(n_proxies)))
    return Renderer(scored, prompt, AugmentConfig(n_proxies), demos), scored, demos


def test_cloze_proxies_differ_and_p1_is_todays_prompt():
    r, scored, demos = _renderer(3)
    assert len(demos) == 3  # one demonstration per proxy
    for i, item in enumerate(scored.items):
        ps = r.render(i, item)
        assert len({p.prompt for p in ps}) == 3  # three distinct prompts per item
        for p, instr in zip(ps, (DEFAULT_CLOZE_INSTRUCTION, *CLOZE_TEMPLATES)):
            assert p.prompt.startswith(instr + "\n\n")
            assert f"Question: {demos[p.proxy_index].question}" in p.prompt  # proxy p's own demonstration
            assert sorted(p.options) == sorted(" " + o for o in item.options)  # the scored texts stay the same
            assert p.options[p.gold] == " " + item.options[item.answer]
        assert len({p.gold for p in ps}) == 3  # and the gold answer moves among the scored options
    # P = 1: exactly the prompt of a plain one-demo renderer (today's)
    r1, scored1, demos1 = _renderer(1)
    plain = Renderer(scored1, PromptConfig(mode="cloze", show_options=False), AugmentConfig(1), demos1[:1])
    assert len(demos1) == 1
    assert [p.prompt for p in r1.render(0, scored1.items[0])] == [p.prompt for p in plain.render(0, scored1.items[0])]
    assert r1.render(0, scored1.items[0])[0].prompt == (
        f"{DEFAULT_CLOZE_INSTRUCTION}\n\nQuestion: {demos1[0].question}\nAnswer: {demos1[0].options[demos1[0].answer]}"
        f"\n\nQuestion: {scored1.items[0].question}\nAnswer:"
    )


def test_letter_mode_and_listed_options_unchanged():
    task = text_task(6)
    for prompt in (PromptConfig(), PromptConfig(mode="cloze", show_options=True)):
        assert demo_pool_size(prompt, AugmentConfig(3)) == 1
        r = Renderer(task.subset(range(1, 6)), prompt, AugmentConfig(3), [task.items[0]])
        ps = r.render(0, task.items[1])
        prefixes = {p.prompt.split("Question:")[0] for p in ps}
        assert len(prefixes) == 1  # same instruction and demo in every proxy


def test_identify_cloze_renders_three_proxies_without_warning():
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        cfg = IdentifyConfig(mode="cloze", show_options=False, n_proxies=3)
    assert cfg.n_proxies == 3
    model = make_model("hf", False)
    res = identify(model, text_task(8), k=4, mode="cloze", show_options=False, n_proxies=3, progress=False)
    assert len(res.config["task"]["demo_ids"]) == 3
    assert res.config["task"]["n_scored"] == 5


def _naive_mean(attr, mask):
    tot = torch.zeros(attr.shape[2:], dtype=torch.float64)
    n = 0
    for i in range(attr.shape[0]):
        for p in range(attr.shape[1]):
            if mask[i, p] > 0:
                tot += attr[i, p].double()
                n += 1
    return (tot / n).float()


def test_mean_ig_reducer_equals_naive_loop():
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(5, 3, 2, 7, generator=g)
    mask = torch.ones(5, 3)
    mask[1, 2] = 0
    mask[3, 1:] = 0
    red = reducer_class("mean_ig").create(2, 7, ScoringConfig())
    red.update(attr[:2], mask[:2])
    other = reducer_class("mean_ig").create(2, 7, ScoringConfig())
    other.update(attr[2:], mask[2:])
    got = red.merge(other).result()
    assert torch.equal(got.scores, _naive_mean(attr, mask))
    assert not got.positive_only and got.info["n_rows"] == 12
    assert get_method("mean_ig").reducer == "mean_ig"


@pytest.mark.slow
def test_mean_ig_identify_equals_rescore_of_ig():
    model = make_model("hf", False)
    task = text_task(8)
    ig = identify(model, task, k=5, progress=False, keep_attributions=True)
    direct = identify(model, task, k=5, method="mean_ig", progress=False, keep_attributions=True)
    assert ig.attributions is not None and direct.attributions is not None
    assert torch.allclose(direct.attributions, ig.attributions, atol=1e-6)
    want = _naive_mean(ig.attributions, ig.proxy_mask if ig.proxy_mask is not None else torch.ones(8, 3))
    assert torch.allclose(direct.scores, want, atol=1e-6)
    re = rescore(ig, method="mean_ig")
    assert torch.equal(re.scores, _naive_mean(ig.attributions, ig.proxy_mask))
    assert re.config["method"] == "mean_ig" and re.config["reducer"] == "mean_ig"
    assert [(n.layer, n.neuron) for n in re.good] == [(n.layer, n.neuron) for n in direct.good]
    with pytest.raises(ConfigError, match="attributes differently"):
        rescore(ig, method="knowledge_neurons")


def test_cloze_listing_lists_the_options_unlettered_in_each_proxys_order():
    task = text_task(8)
    prompt = PromptConfig(mode="cloze", show_options=False, n_shots=1, cloze_listing=True)
    scored, demos = choose_demos(task, 1, 0, None, demo_pool_size(prompt, AugmentConfig(3)))
    r = Renderer(scored, prompt, AugmentConfig(3), demos)
    for i, item in enumerate(scored.items):
        ps = r.render(i, item)
        for p in ps:
            d = demos[p.proxy_index]
            instr = (DEFAULT_CLOZE_INSTRUCTION, *CLOZE_TEMPLATES)[p.proxy_index]
            # naive rendering: the demo lists its options in their own order, the item in the proxy's order
            want = (
                f"{instr}\n\nQuestion: {d.question}\nOptions:\n"
                + "".join(f"- {o}\n" for o in d.options)
                + f"Answer: {d.options[d.answer]}\n\nQuestion: {item.question}\nOptions:\n"
                + "".join(f"- {item.options[o]}\n" for o in p.perm)
                + "Answer:"
            )
            assert p.prompt == want
            assert p.options == tuple(" " + item.options[o] for o in p.perm)
            assert "A." not in p.prompt.split("Options:")[-1]  # unlettered
        assert len({p.perm for p in ps}) == 3
    # without the listing, no "Options:" line (the default prompt is unchanged)
    plain = Renderer(scored, PromptConfig(mode="cloze", show_options=False), AugmentConfig(3), demos)
    assert all("Options:" not in p.prompt for p in plain.render(0, scored.items[0]))


def test_cloze_listing_of_token_tasks_drops_the_letters():
    from helpers import token_task

    tt, fmt = token_task()
    item = tt.items[0]
    r = Renderer(
        tt.subset([0]),
        PromptConfig(mode="cloze", show_options=False, token_format=fmt, n_shots=0, cloze_listing=True),
        AugmentConfig(n_proxies=2),
    )
    for p in r.render(0, item):
        want = [] if fmt.bos is None else [fmt.bos]
        want += list(item.context or ()) + list(fmt.question_prefix) + list(item.question)
        for o in p.perm:
            want += [*item.options[o], *fmt.option_sep]
        assert list(p.prompt) == want + list(fmt.answer_prefix)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "letter", "cloze_listing": True}, "cloze_listing .* applies to mode='cloze' with show_options=False"),
        ({"mode": "cloze", "show_options": True, "cloze_listing": True}, "got mode='cloze', show_options=True"),
    ],
)
def test_cloze_listing_outside_cloze_proxies_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        IdentifyConfig(**kwargs)


def test_cloze_listing_must_be_a_bool():
    with pytest.raises(ConfigError, match="cloze_listing must be True or False, got 1"):
        IdentifyConfig(mode="cloze", show_options=False, cloze_listing=1)


def test_identify_with_cloze_listing_records_it_and_reloads():
    model = make_model("hf", False)
    res = identify(
        model, text_task(8), k=4, mode="cloze", show_options=False, cloze_listing=True, n_proxies=3, progress=False
    )
    assert res.config["cloze_listing"] is True
    assert res.identify_config().prompt.cloze_listing
    plain = identify(model, text_task(8), k=4, mode="cloze", show_options=False, n_proxies=3, progress=False)
    assert not plain.identify_config().prompt.cloze_listing
    # the listing changes the prompts, so the attributions differ
    assert not torch.equal(res.scores, plain.scores)
