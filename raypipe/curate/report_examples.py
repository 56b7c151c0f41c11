"""The report's examples section: the picked records (raypipe.curate.examples) as the shared view
(raypipe.core.trace_view) in HTML, branch markers highlighted, long text folded, with a filter box (inline script:
the page stays one self-contained file)."""
from __future__ import annotations

import html

from raypipe.core.html import VERDICT_COLOURS
from raypipe.core.lexicon import Lexicon
from raypipe.core.trace_view import Pieces, RecordView, Step, branching, fold_point, split_at, view

STEP_CHARS = 600  # a longer step shows its first STEP_HEAD characters, the rest folded
STEP_HEAD = 300
RUN = 3  # this many plain steps in a row (no marker) are folded into one line
TEXT_FOLD = 400  # a problem or final part longer than this is folded

TITLES = {
    "most_branching": ("Most branching, dropped", "dropped rows of any reason, the highest branch_score first"),
    "over_threshold": ("Dropped by the rule, just over the cut", "the rule's lowest-ranked drops: the rows at the "
                       "threshold"),
    "under_threshold": ("Kept, just under the cut", "verified-correct rows kept with the highest rank: what the "
                        "rule kept next to what it dropped"),
}

STYLE = """<style>
mark.marker{background:#ffd54f;font-weight:bold;padding:0 .1em}
.example{border:1px solid #ccc;border-radius:4px;margin:.4em 0;padding:.3em .6em}
.example>summary{cursor:pointer}
.badge{display:inline-block;border-radius:3px;padding:0 .4em;color:#fff;font-size:.85em}
ol.steps{padding-left:3.5em}ol.steps li{white-space:pre-wrap;margin:.25em 0}
ol.steps li.branch{border-left:3px solid #ffb300;padding-left:.4em}
ol.steps li.plain{color:#555}ol.steps li.fold{list-style:none}
.filters{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ddd}
.filters input{width:16em}.note{color:#555;font-size:.9em}
pre.text{white-space:pre-wrap;background:#f7f7f7;padding:.4em}
</style>"""

SCRIPT = """<script>
(function(){
  var q=document.getElementById('ex-text'), sel=['source','verdict','decision'].map(function(k){
    return [k, document.getElementById('ex-'+k)];});
  function apply(){
    var text=q.value.trim().toLowerCase(), shown=0, all=document.querySelectorAll('.example');
    all.forEach(function(e){
      var ok=(!text || e.dataset.search.indexOf(text)>=0) && sel.every(function(s){
        return !s[1].value || e.dataset[s[0]]===s[1].value;});
      e.hidden=!ok; if(ok) shown++;
    });
    document.querySelectorAll('.ex-category, .ex-source').forEach(function(c){
      c.hidden=!c.querySelector('.example:not([hidden])');});
    document.getElementById('ex-count').textContent=shown+' of '+all.length+' examples';
  }
  q.addEventListener('input', apply); sel.forEach(function(s){s[1].addEventListener('change', apply);});
  apply();
})();
</script>"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def pieces_html(pieces: Pieces) -> str:
    return "".join(f"<mark class=marker>{_e(t)}</mark>" if m else _e(t) for t, m in pieces)


def step_html(step: Step) -> str:
    text, at = step.text, fold_point(step, STEP_HEAD)
    if len(text) > max(STEP_CHARS, at + STEP_CHARS - STEP_HEAD):
        head, tail = split_at(step.pieces, at)
        body = (f"{pieces_html(head)}<details><summary>… {len(text) - at:,} more characters</summary>"
                f"{pieces_html(tail)}</details>")
    else:
        body = pieces_html(step.pieces)
    return f"<li value={step.number} class={'branch' if step.branch else 'plain'}>{body}</li>"


def steps_html(steps: list[Step]) -> str:
    """Every step in order; runs of RUN or more plain steps folded."""
    out, run = [], []

    def flush():
        if len(run) >= RUN:
            inner = "".join(step_html(s) for s in run)
            out.append(f"<li class=fold value={run[0].number}><details><summary>steps {run[0].number}–"
                       f"{run[-1].number}: no marker</summary><ol class=steps start={run[0].number}>{inner}</ol>"
                       "</details></li>")
        else:
            out.extend(step_html(s) for s in run)
        run.clear()

    for s in steps:
        if s.branch:
            flush()
            out.append(step_html(s))
        else:
            run.append(s)
    flush()
    return f"<ol class=steps>{''.join(out)}</ol>"


def _text(label: str, text: str) -> str:
    if not text:
        return f"<p><b>{label}:</b> <i>empty</i></p>"
    if len(text) <= TEXT_FOLD:
        return f"<p><b>{label}:</b></p><pre class=text>{_e(text)}</pre>"
    return (f"<details><summary><b>{label}</b> ({len(text):,} characters)</summary><pre class=text>{_e(text)}</pre>"
            "</details>")


def badge(value: str | None, colour: str) -> str:
    return f"<span class=badge style='background:{colour}'>{_e(value or '-')}</span>"


def example_html(v: RecordView, output: str, open_: bool = False) -> str:
    verdict_colour = VERDICT_COLOURS.get(v.verdict or "", "#777")
    decision_colour = {"keep": "#228833", "drop": "#cc3311"}.get(v.decision or "", "#777")
    search = " ".join(str(x) for x in (v.id, v.source, v.verdict, v.decision, v.reason) if x).lower()
    cut = (f"<p class=note>… {v.cut_chars:,} more characters of reasoning are not kept in the report: "
           f"<code>raypipe inspect {_e(output)} --id {_e(v.id)}</code> shows them.</p>" if v.cut_chars else "")
    markers = sorted({m.lower() for s in v.steps for m in s.markers})
    return (
        f"<details class=example{' open' if open_ else ''} data-source='{_e(v.source)}' "
        f"data-verdict='{_e(v.verdict)}' data-decision='{_e(v.decision)}' data-id='{_e(v.id)}' "
        f"data-search='{_e(search)}'><summary><b>{_e(v.id)}</b> {badge(v.verdict, verdict_colour)} "
        f"{badge(v.decision, decision_colour)} {_e(v.reason)} · {_e(branching(v))}</summary>"
        f"<table><tr><th>extracted answer</th><td>{_e(v.answer) or '<i>none</i>'}</td></tr>"
        f"<tr><th>reference</th><td>{_e(v.reference) or '<i>none</i>'}</td></tr>"
        f"<tr><th>reason</th><td>{_e(v.reason)}</td></tr>"
        f"<tr><th>markers seen</th><td>{_e(', '.join(markers)) or '-'}</td></tr></table>"
        f"{_text('problem', v.problem)}<p><b>reasoning</b> ({len(v.steps)} steps shown; highlighted: branch "
        f"markers, a bar: a branch step)</p>{steps_html(v.steps)}{cut}{_text('final part', v.final)}</details>")


def _title(category: str) -> tuple[str, str]:
    if category in TITLES:
        return TITLES[category]
    kind = category.split(":", 1)[1]
    return f"Dropped: {kind}", "a deterministic sample (the smallest hashes of source and id)"


def examples_html(examples: dict[str, dict[str, list[dict]]], lexicon: Lexicon, segmenter: str, output: str) -> str:
    """The section: per source, per kind, the examples; a filter box on top."""
    if not any(examples.values()):
        return "<h2 id=examples>Examples</h2><p>No examples: no rows were kept or dropped.</p>"
    views = {s: {c: [view(e, lexicon, segmenter) for e in rows] for c, rows in cats.items()}
             for s, cats in sorted(examples.items())}
    every = [v for cats in views.values() for rows in cats.values() for v in rows]

    def options(name: str, values) -> str:
        opts = "".join(f"<option value='{_e(x)}'>{_e(x)}</option>" for x in sorted({x for x in values if x}))
        return f"<select id=ex-{name} aria-label='{name}'><option value=''>every {name}</option>{opts}</select>"

    order = [c for c in TITLES] + sorted({c for cats in views.values() for c in cats if c not in TITLES})
    parts, first = [], True
    for source, cats in views.items():
        inner = []
        for c in (c for c in order if c in cats):
            title, note = _title(c)
            rows = "".join(example_html(v, output, open_=first and i == 0) for i, v in enumerate(cats[c]))
            first = False
            inner.append(f"<div class=ex-category data-category='{_e(c)}'><h4>{_e(title)}</h4>"
                         f"<p class=note>{_e(note)}</p>{rows}</div>")
        parts.append(f"<section class=ex-source data-source='{_e(source)}'><h3>{_e(source)}</h3>{''.join(inner)}"
                     "</section>")
    return (f"{STYLE}<h2 id=examples>Examples</h2><p>Per source, a few records of each kind, the same whatever the "
            f"chunking (reasoning cut to its first characters). Steps as the scorer cut them ({_e(segmenter)}); "
            f"<mark class=marker>markers</mark> of the lexicon {_e(lexicon.tag)} highlighted.</p>"
            f"<div class=filters><input id=ex-text type=search placeholder='filter: id, source, verdict, reason' "
            f"aria-label='filter'> {options('source', [v.source for v in every])} "
            f"{options('verdict', [v.verdict for v in every])} {options('decision', [v.decision for v in every])} "
            f"<span id=ex-count>{len(every)} of {len(every)} examples</span></div>{''.join(parts)}{SCRIPT}")
