"""Shared helpers and the evaluation of the SmolLM2 letter "model organism" (issue 25).

Evaluation protocol (``python scripts/organism_eval.py --adapter organism/adapter.safetensors``):

* items: the LAST ``--n`` (default 200) items of each task file (never trained on);
* letter accuracy: each item is rendered in the package's letter format (0-shot: default
  instruction, ``Question: ...``, ``A. option`` lines, ``Answer:``) under EVERY cyclic permutation
  of its options; the prediction is the argmax over the option letters at the last prompt token,
  a letter's score being ``logsumexp`` of the logits of its forms ``"A"`` and ``" A"`` (as the
  package's ``letter_scores``); accuracy = mean over items and permutations, so a fixed-letter
  habit scores exactly chance;
* cloze accuracy: the options are not shown; score = mean log-probability of the option text
  (``" " + option``) after ``...Question: q\\nAnswer:`` (length-normalised), original order.

The shared question prefix is run once and kept in the KV cache (identical logits to a full
forward up to float error; checked by ``--selfcheck``).
Runs on one CPU thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import torch

torch.set_num_threads(1)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DEFAULT_INSTRUCTION = "The following are multiple choice questions. Answer with the letter of the correct option."
DEFAULT_CLOZE_INSTRUCTION = "The following are multiple choice questions. Answer with the correct option."
EVAL_TASKS = ("siqa", "piqa", "mmlu", "commonsenseqa", "openbookqa")
N_TEST = 200  # the last N_TEST items of every task are the test items (never trained on)
N_VAL = 60  # the N_VAL items before them are the learning-curve items (never trained on)


# ------------------------------------------------------------------------------------------------
# package access (read-only; the package is being restructured, so try both layouts)
# ------------------------------------------------------------------------------------------------
def pkg_loaders():
    """``(load_smollm2_hf, load_real_task)`` from the package, new layout first."""
    try:
        from tl_neuronllm.data.real_tasks import load_real_task
        from tl_neuronllm.data.smollm2 import load_smollm2_hf
    except ImportError:
        from tl_neuronllm.real_tasks import load_real_task  # type: ignore[no-redef]
        from tl_neuronllm.smollm2 import load_smollm2_hf  # type: ignore[no-redef]
    return load_smollm2_hf, load_real_task


def pkg_renderer():
    """``(Renderer, PromptConfig, AugmentConfig, Task, Item)`` from the package, or None."""
    try:
        try:
            from tl_neuronllm.data.tasks import Item, Task
            from tl_neuronllm.prompts.proxies import AugmentConfig, PromptConfig, Renderer
        except ImportError:
            from tl_neuronllm.proxies import AugmentConfig, PromptConfig, Renderer  # type: ignore[no-redef]
            from tl_neuronllm.tasks import Item, Task  # type: ignore[no-redef]
        return Renderer, PromptConfig, AugmentConfig, Task, Item
    except ImportError:
        return None


def load_model(attn: str = "sdpa"):
    load_smollm2_hf, _ = pkg_loaders()
    model, tok = load_smollm2_hf(attn_implementation=attn)
    model.eval()
    return model, tok


def load_items(name: str) -> list[dict]:
    """The task's items as plain dicts (question, options, answer, context), in file order."""
    _, load_real_task = pkg_loaders()
    task = load_real_task(name)
    return [
        {
            "question": str(it.question),
            "options": [str(o) for o in it.options],
            "answer": int(it.answer),
            "context": None if it.context is None else str(it.context),
        }
        for it in task.items
    ]


def split_indices(n_items: int) -> tuple[list[int], list[int], list[int]]:
    """(train pool, learning-curve items, test items): test = last N_TEST, curve = N_VAL before."""
    test = list(range(n_items - N_TEST, n_items))
    val = list(range(n_items - N_TEST - N_VAL, n_items - N_TEST))
    return list(range(n_items - N_TEST - N_VAL)), val, test


# ------------------------------------------------------------------------------------------------
# rendering: the package's letter layout (see tl_neuronllm proxies module docstring)
# ------------------------------------------------------------------------------------------------
def _block(item: dict, perm, show_options: bool = True) -> tuple[str, str]:
    """(question part, options+answer part) of one item block."""
    head = []
    if item.get("context"):
        head.append(str(item["context"]).strip())
    head.append(f"Question: {str(item['question']).strip()}")
    tail = []
    if show_options:
        for j, o in enumerate(perm):
            tail.append(f"{LETTERS[j]}. {str(item['options'][o]).strip()}")
    tail.append("Answer:")
    return "\n".join(head) + "\n", "\n".join(tail)


def render_letter(item: dict, perm, demos=(), instruction: str = DEFAULT_INSTRUCTION) -> tuple[str, str]:
    """Letter prompt split into (shared prefix, permutation-specific suffix); prefix+suffix is the prompt."""
    blocks = [instruction] if instruction else []
    for d in demos:
        h, t = _block(d, range(len(d["options"])))
        blocks.append(h + t + " " + LETTERS[d["answer"]])
    pre = "\n\n".join(blocks) + ("\n\n" if blocks else "")
    h, t = _block(item, perm)
    return pre + h, t


def render_cloze(item: dict, instruction: str = DEFAULT_CLOZE_INSTRUCTION) -> tuple[str, list[str]]:
    """Cloze prompt (options not shown) and the option continuations ``" " + option``."""
    h, t = _block(item, (), show_options=False)
    pre = (instruction + "\n\n" if instruction else "") + h + t
    return pre, [" " + str(o).strip() for o in item["options"]]


def check_render_against_package(items: list[dict], n: int = 5) -> str:
    """Compare render_letter with the package's Renderer on a few items (0 and 1 shot)."""
    got = pkg_renderer()
    if got is None:
        return "package renderer not importable; not checked"
    Renderer, PromptConfig, AugmentConfig, Task, Item = got
    its = [
        Item(d["question"], tuple(d["options"]), d["answer"], d["context"], str(i))
        for i, d in enumerate(items[: n + 1])
    ]
    task = Task(tuple(its[1:]), name="check")
    for shots in (0, 1):
        r = Renderer(
            task,
            PromptConfig(mode="letter", n_shots=shots),
            AugmentConfig(n_proxies=10, permutation="cyclic"),
            demos=its[:1] if shots else (),
        )
        for i, it in enumerate(task.items):
            for px in r.render(i, it):
                pre, suf = render_letter(items[i + 1], px.perm, demos=items[:1] if shots else ())
                if pre + suf != px.prompt:
                    raise AssertionError(f"render mismatch:\n{pre + suf!r}\n{px.prompt!r}")
    return "identical to the package Renderer (0 and 1 shot, cyclic proxies)"


# ------------------------------------------------------------------------------------------------
# tokens and scoring
# ------------------------------------------------------------------------------------------------
def encode(tok, text: str, bos: bool) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False)
    return ([tok.bos_token_id] if bos else []) + ids


def letter_token_ids(tok, n: int = 5) -> list[list[int]]:
    """Per letter its single-token forms "A" and " A" (as the package's letter_token_ids)."""
    out = []
    for letter in LETTERS[:n]:
        forms = []
        for form in (letter, " " + letter):
            ids = tok.encode(form, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in forms and tok.decode([ids[0]]).strip() == letter:
                forms.append(int(ids[0]))
        out.append(forms)
    return out


def letter_scores_from_logits(logits: torch.Tensor, lids: list[list[int]], n: int) -> torch.Tensor:
    """logsumexp over each letter's token forms; logits [..., vocab] -> [..., n]."""
    return torch.stack([torch.logsumexp(logits[..., ids], dim=-1) for ids in lids[:n]], dim=-1)


@torch.no_grad()
def letter_eval_item(model, tok, item: dict, perms, lids, demos=()) -> list[tuple[int, int]]:
    """[(predicted letter, gold letter)] per permutation, prefix in the KV cache."""
    pre, _ = render_letter(item, perms[0], demos)
    pre_ids = encode(tok, pre, bos=True)
    out = model(input_ids=torch.tensor([pre_ids]), use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    plen = len(pre_ids)
    res = []
    n = len(item["options"])
    for perm in perms:
        p2, suf = render_letter(item, perm, demos)
        assert p2 == pre
        suf_ids = tok.encode(suf, add_special_tokens=False)
        full = encode(tok, pre + suf, bos=True)
        if full == pre_ids + suf_ids:
            o = model(input_ids=torch.tensor([suf_ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
            _crop(cache, plen)
        else:  # tokenization differs at the boundary: full forward
            o = model(input_ids=torch.tensor([full]), logits_to_keep=1)
        s = letter_scores_from_logits(o.logits[0, -1].float(), lids, n)
        res.append((int(s.argmax()), list(perm).index(item["answer"])))
    return res


@torch.no_grad()
def cloze_scores(model, tok, item: dict) -> list[float]:
    """Mean log-prob of each option's tokens after the cloze prompt (prefix in the KV cache)."""
    pre, conts = render_cloze(item)
    pre_ids = encode(tok, pre, bos=True)
    out = model(input_ids=torch.tensor([pre_ids]), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)
    cache = out.past_key_values
    plen = len(pre_ids)
    scores = []
    for c in conts:
        cids = tok.encode(c, add_special_tokens=False)
        lp = [float(first[cids[0]])]
        if len(cids) > 1:
            o = model(input_ids=torch.tensor([cids[:-1]]), past_key_values=cache, use_cache=True)
            _crop(cache, plen)
            ls = torch.log_softmax(o.logits[0].float(), -1)
            lp += [float(ls[k, cids[k + 1]]) for k in range(len(cids) - 1)]
        scores.append(sum(lp) / len(lp))
    return scores


def _crop(cache, plen: int) -> None:
    """Cut the KV cache back to its first ``plen`` positions."""
    extra = cache.get_seq_length() - plen
    if extra > 0:
        cache.crop(-extra)


def cyclic_perms(n: int) -> list[tuple[int, ...]]:
    return [tuple((j - s) % n for j in range(n)) for s in range(n)]


def evaluate_task(model, tok, items: list[dict], lids, *, cloze: bool = True, letter: bool = True, log=None) -> dict:
    preds, correct = Counter(), []
    c_correct = []
    t0 = time.time()
    for k, it in enumerate(items):
        n = len(it["options"])
        for p, g in letter_eval_item(model, tok, it, cyclic_perms(n), lids) if letter else ():
            preds[LETTERS[p]] += 1
            correct.append(p == g)
        if cloze:
            sc = cloze_scores(model, tok, it)
            c_correct.append(int(max(range(n), key=lambda j: sc[j])) == it["answer"])
        if log and (k + 1) % 50 == 0:
            log(f"  {k + 1}/{len(items)} items, {time.time() - t0:.0f} s")
    n_opt = len(items[0]["options"])
    tot = sum(preds.values())
    return {
        "letter_accuracy": (sum(correct) / len(correct)) if letter else None,
        "cloze_accuracy": (sum(c_correct) / len(c_correct)) if cloze else None,
        "chance": 1.0 / n_opt,
        "n": len(items),
        "n_prompts": len(correct),
        "letter_distribution": {L: round(preds[L] / tot, 4) for L in LETTERS[:n_opt]} if letter else None,
        "seconds": round(time.time() - t0, 1),
    }


def versions() -> dict:
    import safetensors
    import transformers

    v = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": sys.version.split()[0],
        "peft": None,
    }
    try:
        import peft

        v["peft"] = peft.__version__
    except ImportError:
        pass
    return v


RESULT_FIELDS = ("letter_accuracy", "cloze_accuracy", "chance", "n", "trained_on", "letter_distribution")


def assemble(base_json: str, org_json: str, config_json: str, log_jsonl: str, out: str) -> dict:
    """Write benchmarks/results/organism.json from the two evaluations, the config and the training log."""
    base = json.loads(Path(base_json).read_text())
    org = json.loads(Path(org_json).read_text())
    cfg = json.loads(Path(config_json).read_text())
    trained = set(cfg["items"]["train_indices_used"])

    cloze_pass = Path(org_json).with_name(Path(org_json).stem + "_cloze.json")
    if cloze_pass.exists():  # the organism's cloze accuracies, run as a second pass
        for k, v in json.loads(cloze_pass.read_text())["tasks"].items():
            if k in org["tasks"] and org["tasks"][k].get("cloze_accuracy") is None:
                org["tasks"][k]["cloze_accuracy"] = v["cloze_accuracy"]
    for v in org["tasks"].values():
        v.setdefault("cloze_accuracy", None)

    def pick(r: dict, name: str) -> dict:
        d = dict(r, trained_on=name in trained)
        return {k: d[k] for k in RESULT_FIELDS}

    rows = [json.loads(line) for line in Path(log_jsonl).read_text().splitlines() if line.strip()]
    # the last run in the log (a log line "event": "start" opens a run)
    starts = [i for i, r in enumerate(rows) if r.get("event") == "start"]
    runs = [rows[i:j] for i, j in zip(starts, starts[1:] + [len(rows)])] if starts else [rows]
    # stage 1 from the last run that trained it, stage 2 from the last run
    s1_runs = [r for r in runs if any(x.get("stage") == "stage1" for x in r)]
    rows = (s1_runs[-1] if s1_runs and s1_runs[-1] is not runs[-1] else []) + runs[-1]
    tried = {}
    for key, stage, recipe in [("stage1_binding", "stage1", "binding")] + [(r, "stage2", r) for r in cfg["recipes"]]:
        cur = [r for r in rows if r.get("stage") == stage and r.get("recipe") == recipe and "curve_seconds" in r]
        if stage == "stage2" and not any(r["step"] == 0 for r in cur):  # shares step 0 with the first recipe
            cur = [r for r in rows if r.get("stage") == "stage2" and r.get("step") == 0 and "curve_seconds" in r][
                :1
            ] + cur
        final = dict(cur[-1]) if cur else {}
        if stage == "stage2":
            final.update({k: v for k, v in cfg["recipes"][recipe].items() if k != "final_curve"})
        else:
            final["train_seconds"] = cfg["stage1_train_seconds"]
        tried[key] = {"curve": cur, "final": final}
    res = {
        "tasks": {k: pick(v, k) for k, v in org["tasks"].items()},
        "base": {k: pick(v, k) for k, v in base["tasks"].items()},
        "recipe": cfg["recipe"],
        "recipes_tried": tried,
        "train_seconds": cfg["train_seconds"],
        "versions": cfg["versions"],
        "date": _dt.datetime.utcnow().strftime("%Y-%m-%d"),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1) + "\n")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default=None, help="adapter.safetensors to merge (none: base model)")
    ap.add_argument("--tasks", default=",".join(EVAL_TASKS))
    ap.add_argument("--n", type=int, default=N_TEST)
    ap.add_argument("--no-cloze", action="store_true")
    ap.add_argument("--out", required=True, help="JSON file for the per-task results")
    ap.add_argument("--no-letter", action="store_true", help="cloze only")
    ap.add_argument("--selfcheck", action="store_true")
    ap.add_argument(
        "--assemble",
        nargs=4,
        metavar=("BASE_JSON", "ORG_JSON", "CONFIG_JSON", "LOG_JSONL"),
        help="only write --out (benchmarks/results/organism.json) from finished evaluations",
    )
    a = ap.parse_args(argv)
    if a.assemble:
        assemble(*a.assemble, a.out)
        return
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)
    model, tok = load_model()
    if a.adapter:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from train_organism import merge_adapter

        merge_adapter(model, a.adapter)
        log(f"merged {a.adapter}")
    lids = letter_token_ids(tok)
    res = {"tasks": {}, "adapter": a.adapter, "versions": versions(), "date": _dt.datetime.utcnow().isoformat()}
    for name in a.tasks.split(","):
        items = load_items(name)
        if a.selfcheck:
            log(check_render_against_package(items))
            it = items[-1]
            n = len(it["options"])
            fast = letter_eval_item(model, tok, it, cyclic_perms(n), lids)
            for perm, (p, _) in zip(cyclic_perms(n), fast):
                pre, suf = render_letter(it, perm)
                with torch.no_grad():
                    lg = model(input_ids=torch.tensor([encode(tok, pre + suf, True)])).logits[0, -1]
                assert int(letter_scores_from_logits(lg, lids, n).argmax()) == p
            log("cache == full forward on one item")
        test = [items[i] for i in split_indices(len(items))[2][-a.n :]]
        log(f"{name}: {len(test)} test items")
        r = evaluate_task(model, tok, test, lids, cloze=not a.no_cloze, letter=not a.no_letter, log=log)
        r["test_indices"] = [len(items) - len(test), len(items) - 1]
        res["tasks"][name] = r
        log(f"{name}: {json.dumps({k: v for k, v in r.items() if k != 'test_indices'})}")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
