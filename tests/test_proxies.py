"""Augmented question sets: pairwise-distinct gold letters, determinism, demos, rendering."""

import pytest

from tl_neuronllm import Item, Task, TokenFormat
from tl_neuronllm.prompts.proxies import AugmentConfig, PromptConfig, Renderer, proxy_permutations


def items(n=20, n_options=4):
    return [
        Item(question=f"q{i}", options=tuple(f"o{i}_{j}" for j in range(n_options)), answer=i % n_options, id=f"i{i}")
        for i in range(n)
    ]


@pytest.mark.parametrize("perm", ["cyclic", "random"])
@pytest.mark.parametrize("orig", [True, False])
@pytest.mark.parametrize("P", [1, 3, 4])
def test_gold_letters_pairwise_distinct(perm, orig, P):
    cfg = AugmentConfig(n_proxies=P, permutation=perm, include_original=orig, seed=3)
    for it in items():
        perms = proxy_permutations(it, cfg)
        assert len(perms) == P
        golds = [p.index(it.answer) for p in perms]
        assert len(set(golds)) == P
        for p in perms:
            assert sorted(p) == list(range(it.n_options))
        if orig:
            assert perms[0] == tuple(range(it.n_options))
        elif P < it.n_options:
            assert tuple(range(it.n_options)) not in perms


def test_deterministic_given_seed_and_clamped():
    it = items(1, 5)[0]
    a = proxy_permutations(it, AugmentConfig(n_proxies=3, permutation="random", seed=1))
    assert a == proxy_permutations(it, AugmentConfig(n_proxies=3, permutation="random", seed=1))
    seeds = {tuple(proxy_permutations(it, AugmentConfig(n_proxies=3, permutation="random", seed=s))) for s in range(10)}
    assert len(seeds) > 1
    two = Item(question="q", options=("a", "b"), answer=1)
    assert len(proxy_permutations(two, AugmentConfig(n_proxies=3))) == 2  # clamped to the option count


def test_text_rendering_layout_and_demos():
    its = items(3, 3)
    task = Task(tuple(its[1:]), name="t")
    r = Renderer(task, PromptConfig(instruction="Pick one."), AugmentConfig(n_proxies=3), [its[0]])
    proxies = r.render(0, task.items[0])
    p = proxies[0]
    assert p.prompt == (
        "Pick one.\n\nQuestion: q0\nA. o0_0\nB. o0_1\nC. o0_2\nAnswer: A\n\n"
        "Question: q1\nA. o1_0\nB. o1_1\nC. o1_2\nAnswer:"
    )
    for q in proxies:
        assert q.prompt.endswith("Answer:")
        assert f"{'ABC'[q.gold]}. {task.items[0].options[task.items[0].answer]}" in q.prompt
        assert q.options[q.gold] == " " + task.items[0].options[task.items[0].answer]


def test_cloze_without_options_and_token_rendering():
    its = items(2, 2)
    task = Task(tuple(its[1:]))
    r = Renderer(task, PromptConfig(mode="cloze", show_options=False, n_shots=0), AugmentConfig(n_proxies=1))
    assert r.render(0, task.items[0])[0].prompt.endswith("Question: q1\nAnswer:")
    tt = Task.from_records(
        [
            {"question": [10, 11], "options": [[20], [21, 22]], "answer": 1},
            {"question": [12], "options": [[23], [24]], "answer": 0},
        ]
    )
    fmt = TokenFormat(letters=[1, 2], bos=0, question_prefix=[7], option_sep=[8], answer_prefix=[9], demo_sep=[5])
    r = Renderer(tt.subset([0]), PromptConfig(token_format=fmt), AugmentConfig(n_proxies=1), [tt.items[1]])
    assert r.render(0, tt.items[0])[0].prompt == (
        0,
        7,
        12,
        1,
        23,
        8,
        2,
        24,
        8,
        9,
        1,
        5,
        7,
        10,
        11,
        1,
        20,
        8,
        2,
        21,
        22,
        8,
        9,
    )


def test_token_task_needs_format_and_enough_letters():
    tt = Task.from_records([{"question": [1], "options": [[2], [3], [4]], "answer": 0}])
    with pytest.raises(ValueError, match="token_format"):
        Renderer(tt, PromptConfig(), AugmentConfig())
    r = Renderer(tt, PromptConfig(token_format=TokenFormat(letters=[5, 6]), n_shots=0), AugmentConfig())
    with pytest.raises(ValueError, match="TokenFormat.letters has only 2"):
        r.render(0, tt.items[0])


def test_config_validation():
    with pytest.raises(ValueError):
        AugmentConfig(n_proxies=0)
    with pytest.raises(ValueError):
        AugmentConfig(permutation="sorted")
    with pytest.raises(ValueError):
        PromptConfig(mode="generate")
