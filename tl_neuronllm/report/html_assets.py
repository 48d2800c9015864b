"""The stylesheet and the script of the single-file HTML report (:mod:`tl_neuronllm.report.html`).

``JS`` reads the neuron records from the ``<script type="application/json" id="neuron-data">`` block (one table:
``columns`` and ``rows``) and what they share from ``id="shared-data"`` (item texts, the traced prompts' tokens),
and renders the sortable, filterable neuron table and the neuron cards (text goes in through
``textContent``, never as HTML).
"""

from tl_neuronllm.html_view import STYLE

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1800px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
table{border-collapse:collapse}table.info th{text-align:left;padding:2px 14px 2px 0;color:#555;font-weight:600;vertical-align:top}
table.grid td,table.grid th{border-bottom:1px solid #e4e4e4;padding:3px 7px;text-align:right;white-space:nowrap}
table.grid td:first-child,table.grid th:first-child{text-align:left}table.grid thead th{background:#f4f4f4}
td.up{color:#2a7ab9}td.down{color:#d1495b}tr.na td{color:#999}.note{color:#666;font-size:12.5px}
figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}figure img{max-width:620px;border:1px solid #eee}
figure.wide{display:block}figure.wide img{max-width:100%;width:1150px}
.scroll{overflow-x:auto}#interventions{font-size:12.5px}#interventions th{white-space:normal;vertical-align:bottom}
#interventions small{color:#777}
#neurons{width:100%}#neurons td:last-child,#neurons th:last-child{text-align:left;white-space:normal;min-width:160px}
figcaption{color:#666;font-size:12px}
#controls{margin:6px 0}#controls label{margin-right:14px}
#neurons th{cursor:pointer;user-select:none}#neurons th.sorted-asc::after{content:" ▲"}#neurons th.sorted-desc::after{content:" ▼"}
#neurons tbody tr{cursor:pointer}#neurons tbody tr:hover{background:#f2f7fc}#neurons tbody tr.open{background:#e3eefa}
.role-good{color:#2a7ab9;font-weight:600}.role-bad{color:#d1495b;font-weight:600}
#layout{display:flex;gap:18px;align-items:flex-start}#table-wrap{flex:1 1 0;min-width:0;max-height:760px;overflow:auto}
#card{flex:0 0 520px;max-width:45%;border:1px solid #cfd8e3;border-radius:6px;padding:12px 14px;background:#fbfcfe;position:sticky;top:8px}
#card h3{margin:0 0 6px;font-size:17px}#card table td{padding:1px 10px 1px 0}#card ul{margin:2px 0 8px;padding-left:18px}
#card .close{float:right;cursor:pointer;border:none;background:none;font-size:18px}
.tok{font-family:ui-monospace,monospace;background:#eef1f5;border-radius:3px;padding:0 3px;margin:0 4px 2px 0;display:inline-block}
"""
CSS += STYLE  # the notebook displays' scoped styles (.tlnl: the token strips of "where it fires")

JS = r"""
(function () {
  "use strict";
  const table = JSON.parse(document.getElementById("neuron-data").textContent);  // {columns, rows}
  const data = table.rows.map(r => Object.fromEntries(table.columns.map((c, i) => [c, r[i]])));
  const shared = JSON.parse(document.getElementById("shared-data").textContent);
  const tbody = document.querySelector("#neurons tbody");
  const card = document.getElementById("card");
  const state = { key: null, dir: 1, role: "all", layer: "all", open: null };
  const fmt = (v, d = 3) => (v === null || v === undefined) ? "–" :
    (Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(d) : v.toExponential(2));
  // tokens with their whitespace visible: " A" -> "␣A", newlines and tabs escaped
  const tok = t => JSON.stringify(t).slice(1, -1).replace(/ /g, "␣");
  const el = (tag, text, cls) => { const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const shown = new Set([...document.querySelectorAll("#neurons th")].map(th => th.dataset.key));
  const cols = [["rank", v => v], ["label", v => v], ["role", v => v], ["layer", v => v], ["neuron", v => v],
    ["score", v => fmt(v, 4)], ["stability", v => fmt(v, 2)], ["dla_margin", v => fmt(v)], ["d", v => fmt(v, 2)],
    ["promoted", v => v ? v.slice(0, 4).map(t => tok(t[0])).join("  ") : "–"]].filter(c => shown.has(c[0]));

  function rows() {
    let r = data.filter(n => (state.role === "all" || n.role === state.role) &&
                             (state.layer === "all" || String(n.layer) === state.layer));
    if (state.key) {
      const k = state.key;
      r = r.slice().sort((a, b) => {
        const x = a[k], y = b[k];
        if (x === null || x === undefined) return 1;       // missing values last
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * state.dir;
      });
    }
    return r;
  }

  function render() {
    tbody.replaceChildren();
    for (const n of rows()) {
      const tr = el("tr");
      tr.dataset.label = n.label;
      if (n.label === state.open) tr.className = "open";
      for (const [k, f] of cols) {
        const td = el("td", String(f(n[k])));
        if (k === "role") td.className = "role-" + n.role;
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => openCard(n.label));
      tbody.appendChild(tr);
    }
    document.getElementById("shown").textContent = tbody.rows.length + " of " + data.length + " neurons";
    for (const th of document.querySelectorAll("#neurons th")) {
      th.classList.remove("sorted-asc", "sorted-desc");
      if (th.dataset.key === state.key) th.classList.add(state.dir > 0 ? "sorted-asc" : "sorted-desc");
    }
  }

  function histogram(h) {
    const ns = "http://www.w3.org/2000/svg", W = 470, H = 130, pad = 40;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H + 30); svg.setAttribute("class", "hist");
    if (!h || !h.right.length) return svg;
    const edges = h.right.concat([0]).map((_, i) => h.lo + (h.hi - h.lo) * i / h.right.length);
    const nb = h.right.length, max = Math.max(1, ...h.right, ...h.wrong), bw = (W - 2 * pad) / nb;
    const add = (tag, attrs, text) => { const e = document.createElementNS(ns, tag);
      for (const a in attrs) e.setAttribute(a, attrs[a]); if (text) e.textContent = text; svg.appendChild(e); return e; };
    for (let i = 0; i < nb; i++) {
      for (const [which, color, off] of [["right", "#2a7ab9", 0], ["wrong", "#d1495b", 0.5]]) {
        const c = h[which][i], bh = (H - 10) * c / max;
        add("rect", { x: pad + i * bw + off * bw, y: H - bh, width: bw / 2 - 1, height: bh, fill: color,
                      "class": "bar-" + which }).appendChild(document.createElementNS(ns, "title")).textContent =
          which + ": " + c + " in [" + fmt(edges[i]) + ", " + fmt(edges[i + 1]) + ")";
      }
    }
    add("line", { x1: pad, x2: W - pad, y1: H, y2: H, stroke: "#555" });
    add("line", { x1: pad - 3, x2: pad - 3, y1: H, y2: 10, stroke: "#555", "class": "y-axis" });
    for (const v of [0, Math.round(max / 2), max]) {
      if (v === Math.round(max / 2) && (v === 0 || v === max)) continue;
      const yv = H - (H - 10) * v / max;
      add("line", { x1: pad - 6, x2: pad - 3, y1: yv, y2: yv, stroke: "#555" });
      add("text", { x: pad - 8, y: yv + 4, "font-size": 11, "text-anchor": "end", "class": "y-tick" }, String(v));
    }
    add("text", { x: 12, y: H / 2 + 10, "font-size": 11, "text-anchor": "middle",
                  transform: "rotate(-90 12 " + (H / 2 + 10) + ")" }, "questions");
    add("text", { x: pad, y: H + 14, "font-size": 11 }, fmt(edges[0], 2));
    add("text", { x: W - pad, y: H + 14, "font-size": 11, "text-anchor": "end" }, fmt(edges[nb], 2));
    const total = k => h[k].reduce((a, b) => a + b, 0);
    add("text", { x: W / 2, y: H + 27, "font-size": 11, "text-anchor": "middle" },
        "site activation: right (blue, " + total("right") + ") vs wrong (red, " + total("wrong") + ") questions");
    return svg;
  }

  // where the neuron fires: its activation on every token of the traced prompts (ints in [-99, 99] of fire_scale)
  function fires(n) {
    const box = el("div", undefined, "fires tlnl");
    const traces = shared.traces || [];
    if (!traces.length) return box;
    if (!n.fire) {
      box.appendChild(el("p", "Where it fires: shown for the top " + shared.fire_top + " neurons of each role.", "note"));
      return box;
    }
    box.appendChild(el("div", "where it fires (activation on each token; max |activation| " + fmt(n.fire_scale) +
                              "; outlined: the answer position)"));
    traces.forEach((t, p) => {
      const strip = el("div", undefined, "fire");
      strip.dataset.item = t.item;
      if (t.start > 0) strip.appendChild(el("span", "… ", "gap"));
      t.tokens.forEach((token, i) => {
        const a = n.fire[p][i] / 99, pos = t.start + i;
        const s = el("span", token.replace(/\n/g, "↵\n"), pos === t.site ? "site" : undefined);
        s.style.background = a >= 0 ? "rgba(42,122,185," + (0.85 * a).toFixed(2) + ")"
                                    : "rgba(209,73,91," + (-0.85 * a).toFixed(2) + ")";
        s.title = tok(token) + " (position " + pos + (pos === t.site ? ", answer position" : "") + "): " +
                  fmt(a * n.fire_scale);
        strip.appendChild(s);
      });
      box.appendChild(el("div", "item " + t.item + (t.correct ? " (answered right)" : " (answered wrong)"), "note"));
      box.appendChild(strip);
    });
    return box;
  }

  function openCard(label) {
    const n = data.find(x => x.label === label);
    state.open = label;
    card.replaceChildren();
    const close = el("button", "×", "close");
    close.title = "close";
    close.addEventListener("click", () => { card.hidden = true; state.open = null; render(); });
    card.appendChild(close);
    card.appendChild(el("h3", n.label + " — " + n.role + " #" + n.rank));
    const t = el("table");
    const line = (k, v) => { const tr = el("tr"); tr.appendChild(el("td", k)); tr.appendChild(el("td", v)); t.appendChild(tr); };
    line("ACE score", fmt(n.score, 5));
    line("layer / index", n.layer + " / " + n.neuron);
    line("selection stability", n.stability === null ? "– (no kept attributions)" : fmt(n.stability, 2));
    if (n.hist) {
      line("membership (items)", fmt(n.membership, 2));
      if (shared.gold_equals_distractors)
        line("direct effect: gold / distractors", "equal (" + fmt(n.gold_effect) + "): every letter was gold " +
             "equally often, so see the effect on each letter");
      else line("direct effect: gold / distractors", fmt(n.gold_effect) + " / " + fmt(n.distractor_effect));
      line("activation × effect: gold − distractors", fmt(n.dla_margin));
      line("activation right / wrong (d)", fmt(n.act_right) + " / " + fmt(n.act_wrong) + "  (" + fmt(n.d, 2) + ")");
      line("questions right / wrong", n.n_right + " / " + n.n_wrong);
      const letters = Object.keys(n.option_effects || {});
      if (letters.length) line("direct effect on letters", letters.map(k => k + " " + fmt(n.option_effects[k])).join("   "));
      if (letters.length) line("activation × effect on letters",
                               letters.map(k => k + " " + fmt(n.letter_dla[k])).join("   "));
      const gl = Object.keys(n.act_by_gold_letter || {});
      if (gl.length) line("activation by gold letter", gl.map(k => k + " " + fmt(n.act_by_gold_letter[k])).join("   "));
    }
    card.appendChild(t);
    if (n.hist) {
      for (const [title, list] of [["promotes (direct path)", n.promoted], ["suppresses (direct path)", n.suppressed]]) {
        card.appendChild(el("div", title));
        const p = el("div");
        for (const [t, v] of list) { const s = el("span", tok(t), "tok"); s.title = fmt(v); p.appendChild(s); }
        card.appendChild(p);
      }
      card.appendChild(el("div", "items where it fires most"));
      const ul = el("ul");
      for (const [id, a] of n.items) ul.appendChild(el("li", id + " (" + fmt(a) + "): " + ((shared.items || {})[id] || "")));
      card.appendChild(ul);
      card.appendChild(histogram(n.hist));
      card.appendChild(fires(n));
    } else {
      card.appendChild(el("p", "No explanation in this report (run explain(result, model, task) or tl-neuronllm report)."));
    }
    card.hidden = false;
    render();
  }

  for (const th of document.querySelectorAll("#neurons th")) {
    th.addEventListener("click", () => {
      const k = th.dataset.key;
      if (state.key === k) state.dir = -state.dir;
      else { state.key = k; state.dir = ["score", "stability", "dla_margin", "d"].includes(k) ? -1 : 1; }
      render();
    });
  }
  document.getElementById("role-filter").addEventListener("change", e => { state.role = e.target.value; render(); });
  document.getElementById("layer-filter").addEventListener("change", e => { state.layer = e.target.value; render(); });
  render();
})();
"""

__all__ = ["CSS", "JS"]
