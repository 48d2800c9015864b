"""The README's guarantees, one test each that fails if the guarantee breaks (see docs/guarantees.md):
prompts are never truncated (also when the tokenizer cuts below ``n_ctx``), token ids and models are
checked before any model time, and the CLI checks the split before building the model."""

from __future__ import annotations

import pytest
from helpers import TEXT_KINDS, make_model, token_task

from tl_neuronllm import ContextLengthError, ModelError, Task, TokenFormat, identify
from tl_neuronllm.cli import app as cli


def _long_task(n_long_words: int = 300) -> Task:
    recs = [
        {
            "id": f"t{i}",
            "question": "what is the colour of the sky ?" + (" cat" * n_long_words if i == 1 else ""),
            "options": ["red", "blue", "green", "yellow"],
            "answer": 1,
        }
        for i in range(4)
    ]
    return Task.from_records(recs, name="words")


def _cut_below_n_ctx(model, *, margin: int = 5, takes_truncate: bool = True) -> None:
    """Make ``model.to_tokens`` truncate to ``n_ctx - margin`` tokens (as seen with real IMDB reviews on
    a 256-position GPT-2), with or without a ``truncate`` keyword."""
    orig = model.to_tokens
    cut = int(model.cfg.n_ctx) - margin

    if takes_truncate:

        def to_tokens(text, prepend_bos=True, truncate=True, **kw):
            toks = orig(text, prepend_bos=prepend_bos, truncate=False, **kw)
            return toks[:, :cut] if truncate else toks

    else:

        def to_tokens(text, prepend_bos=True):  # type: ignore[misc]
            return orig(text, prepend_bos=prepend_bos, truncate=False)[:, :cut]

    object.__setattr__(model, "to_tokens", to_tokens)


@pytest.mark.parametrize("kind", TEXT_KINDS)
@pytest.mark.parametrize("takes_truncate", [True, False], ids=["truncate-kw", "no-truncate-kw"])
def test_prompt_cut_below_n_ctx_by_the_tokenizer_is_refused(kind, takes_truncate):
    model = make_model(kind, False)
    _cut_below_n_ctx(model, takes_truncate=takes_truncate)
    assert model.to_tokens("cat " * 400).shape[-1] == int(model.cfg.n_ctx) - 5  # the tokenizer cuts below n_ctx
    with pytest.raises(ContextLengthError, match=r"item 't1': the prompt is 3\d\d tokens"):
        identify(model, _long_task(), n_shots=0, progress=False, steps=1)


def test_prompt_cut_below_n_ctx_is_refused_by_the_cli(tmp_path, capsys, monkeypatch):
    import json

    model = make_model("hf", False)
    _cut_below_n_ctx(model)
    cli.register_model("words-cut", lambda cache: model)
    f = tmp_path / "words.jsonl"
    recs = [dict(r, id=f"{r['id']}-{j}") for j in range(4) for r in _long_task().to_records()]
    f.write_text("\n".join(json.dumps(r) for r in recs))
    monkeypatch.chdir(tmp_path)
    args = f"identify --model words-cut --task {f} --mode letter --n-identify 8 --n-heldout 4 --n-shots 0"
    code = cli.main([*args.split(), "--k", "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the prompt is 3" in err and "context of 256 tokens" in err
    assert not (tmp_path / "o" / "result").exists()


def test_token_ids_beyond_d_vocab_name_the_item_and_field():
    model = make_model("native", False)  # d_vocab = 100
    task, fmt = token_task(6)
    recs = task.to_records()
    recs[3]["question"] = [*recs[3]["question"], 100]
    with pytest.raises(ModelError, match=rf"item {recs[3]['id']!r}: token id 100 in the prompt .*d_vocab = 100"):
        identify(model, Task.from_records(recs), token_format=fmt, n_shots=0, progress=False, steps=1)
    recs = task.to_records()
    recs[2]["options"][1] = [250]
    with pytest.raises(ModelError, match=rf"item {recs[2]['id']!r}: token id 250 in the option 1 "):
        identify(
            model,
            Task.from_records(recs),
            token_format=fmt,
            mode="cloze",
            show_options=False,
            n_proxies=1,
            n_shots=0,
            progress=False,
            steps=1,
        )
    bad_fmt = TokenFormat(letters=(1, 2, 3, 104), bos=fmt.bos)
    with pytest.raises(ModelError, match=r"item '\w+': token id 104 in the letter 3 \(TokenFormat.letters\)"):
        identify(model, task, token_format=bad_fmt, n_shots=0, progress=False, steps=1)


def test_model_on_the_meta_device_is_refused():
    model = make_model("native", False).to("meta")
    task, fmt = token_task(6)
    with pytest.raises(ModelError, match=r"parameter '[\w.]+' is on the meta device"):
        identify(model, task, token_format=fmt, progress=False, steps=1)


def test_cli_run_refuses_no_heldout_items_before_the_model(tmp_path, capsys, monkeypatch):
    from _scaffold import tiny_cli_args

    built = []
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: built.append(1))
    args = list(tiny_cli_args(steps=1))
    j = args.index("--n-heldout")
    args[j + 1] = "0"
    code = cli.main(["run", *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no held-out items" in err and "--n-heldout" in err
    assert built == [] and not (tmp_path / "o" / "result").exists()


# ---- "Bad input gets an error that names the item and the field" ---------------------------------
@pytest.mark.parametrize(
    "make, msg",
    [
        (
            lambda: Task.from_records([{"question": "q", "options": 5, "answer": 0}]),
            r"item '0' \(record 0\): field 'options' must be a list",
        ),
        (
            lambda: Task.from_records([{"question": "q", "options": ["a", "b"], "answer": 0}, ["q", ["a", "b"], 0]]),
            r"record 1: expected a dict",
        ),
        (lambda: Task.from_records("questions.jsonl"), r"records must be a list of dicts .* got a str"),
        (lambda: Task(None), r"task 'task': items must be a list of Item, got NoneType"),  # type: ignore[arg-type]
        (
            lambda: Task.from_records([{"question": "\u200b\u2060", "options": ["a", "b"], "answer": 0}]),
            r"record 0\): field 'question' is empty",
        ),
        (
            lambda: Task.from_records([{"question": "q", "options": ["é", "e\u0301"], "answer": 0}]),
            r"record 0\): field 'options' has duplicate options 0 and 1",
        ),
        (
            lambda: Task.from_records([{"question": "q", "options": ["a", "b"], "answer": True}]),
            r"record 0\): field 'answer' must be",
        ),
        (
            lambda: Task.from_classification([{"text": "t", "label": True}], label_names=["yes", "no"], question="Q?"),
            r"record 0\): field 'label' = True is a bool",
        ),
    ],
)
def test_bad_records_name_the_record_and_field(make, msg):
    from tl_neuronllm import TaskError

    with pytest.raises(TaskError, match=msg):
        make()


def test_bool_labels_read_as_true_false_keys_like_answers():
    rows = [{"text": "fine", "label": True}, {"text": "bad", "label": False}]
    task = Task.from_classification(rows, label_names={False: "no", True: "yes"}, question="Good?")
    assert [it.options[it.answer] for it in task] == ["yes", "no"]
    task = Task.from_classification(rows, label_names={"False": "no", "True": "yes"}, question="Good?")
    assert [it.options[it.answer] for it in task] == ["yes", "no"]


def test_answer_text_matches_its_option_after_normalisation():
    task = Task.from_records([{"question": "q", "options": ["cafe", "cafe\u0301"], "answer": "\u200bcafé"}])
    assert task[0].answer == 1


def test_csv_without_question_column_blames_it(tmp_path):
    from tl_neuronllm import TaskError

    f = tmp_path / "t.csv"
    f.write_text("q,A,B,answer\nwhat?,x,y,A\n")
    with pytest.raises(TaskError, match=r"t.csv:1: missing column 'question' .*rename column 'q' to 'question'"):
        Task.from_csv(f)
