"""The human A/B kit: a blind rating sheet of two models' replies (CSV + a self-contained HTML page) and its tally.

`export` draws a seeded sample of test contexts both models answered and shows the two replies
as "Reply 1"/"Reply 2" in a seeded random order per item; which model is which is written only to
a separate key, so a rater sees nothing but text. `tally` joins a filled sheet with its key and
counts, per criterion (the papers' four), how often A's reply was judged better, equal or worse.

`Tally` and `format_tally` are the one result shape of every pairwise comparison in the project:
the LLM pairwise judge prints its verdicts through them as well.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path, read_predictions, sample_rows
from empathy_pipeline.llm.base import transcript

# The papers' human-evaluation criteria (Synth-Empathy, human evaluation), in their order.
CRITERIA = ("coherence", "empathy", "informativeness", "continuity")
CRITERION_HELP = {
    "coherence": "Which reply fits the dialogue better: on topic, logical, answering what was said?",
    "empathy": "Which reply shows more understanding of the speaker's feelings and situation?",
    "informativeness": "Which reply says more that is specific and useful, rather than generic?",
    "continuity": "After which reply would the speaker rather go on talking?",
}
SHEET_COLUMNS = ("item", "context", "reply_1", "reply_2", *CRITERIA)
KEY_COLUMNS = ("item", "sample_id", "reply_1", "model_a", "model_b", "seed")
# What a rater may write: reply 1 better, reply 2 better, or a tie ('=' is the spreadsheet habit).
VERDICTS = {"1": "1", "2": "2", "tie": "tie", "=": "tie"}
PREDICTIONS_DIR = Path("outputs/predictions")
TEST_SPLIT = Path("data/prepared/test.parquet")
FILLED_NAME = "sheet-filled.csv"
MAX_LISTED = 8  # rows named in one error line before "and N more"


# ---- the result shape shared with the LLM pairwise judge ----------------------------------------


@dataclass(frozen=True)
class Tally:
    """One criterion's verdicts of A against B; `skipped` counts items left out (blank or missing)."""

    criterion: str
    a_wins: int
    ties: int
    b_wins: int
    skipped: int = 0

    @property
    def n(self) -> int:
        return self.a_wins + self.ties + self.b_wins

    def rate(self, count: int) -> float | None:
        return count / self.n if self.n else None

    @property
    def sign_test_p(self) -> float | None:
        """Two-sided sign test of A against B, ties left out (the usual test for pairwise preferences)."""
        if self.a_wins + self.b_wins == 0:
            return None
        from scipy.stats import binomtest

        return float(binomtest(self.a_wins, self.a_wins + self.b_wins, 0.5).pvalue)

    def as_dict(self) -> dict:
        rates = {f"{k}_rate": None if r is None else round(r, 4)
                 for k, r in (("a_win", self.rate(self.a_wins)), ("tie", self.rate(self.ties)),
                              ("b_win", self.rate(self.b_wins)))}
        p = self.sign_test_p
        return {"criterion": self.criterion, "a_wins": self.a_wins, "ties": self.ties, "b_wins": self.b_wins,
                "n": self.n, **rates, "skipped": self.skipped, "sign_test_p": None if p is None else round(p, 4)}


def count_verdicts(criterion: str, verdicts: Iterable[str | None]) -> Tally:
    """A Tally from per-item verdicts 'a', 'b', 'tie' (None = skipped)."""
    counts = {"a": 0, "tie": 0, "b": 0, None: 0}
    for v in verdicts:
        if v not in counts:
            raise ValueError(f"verdict {v!r} is not 'a', 'b', 'tie' or None")
        counts[v] += 1
    return Tally(criterion, counts["a"], counts["tie"], counts["b"], counts[None])


def _cell(count: int, rate: float | None) -> str:
    return f"{count} ({rate:.1%})" if rate is not None else f"{count} (-)"


def format_tally(tallies: Sequence[Tally], model_a: str, model_b: str, *, title: str | None = None) -> str:
    """A Markdown table, one row per criterion: criterion | A wins | ties | B wins | N (counts with rates)."""
    lines = [title] if title else []
    lines += [f"A = {model_a}, B = {model_b}", "",
              "| criterion | A wins | ties | B wins | N |", "|---|---:|---:|---:|---:|"]
    for t in tallies:
        lines.append(f"| {t.criterion} | {_cell(t.a_wins, t.rate(t.a_wins))} | {_cell(t.ties, t.rate(t.ties))} "
                     f"| {_cell(t.b_wins, t.rate(t.b_wins))} | {t.n} |")
    skipped = [f"{t.criterion} {t.skipped}" for t in tallies if t.skipped]
    if skipped:
        lines += ["", "skipped (blank or missing): " + ", ".join(skipped)]
    return "\n".join(lines)


def tally_json(tallies: Sequence[Tally], model_a: str, model_b: str, **extra) -> dict:
    return {"model_a": model_a, "model_b": model_b, **extra, "criteria": [t.as_dict() for t in tallies]}


# ---- export -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str
    table: pl.DataFrame   # sample_id, prediction and, where the file has it, context


def load_side(spec: str, predictions_dir: Path = PREDICTIONS_DIR) -> Side:
    """An evaluated model's predictions by name (predictions_dir/NAME.parquet) or a predictions file path."""
    path = Path(spec)
    is_file = path.suffix.lower() in (".parquet", ".jsonl", ".ndjson", ".csv")
    if not is_file:
        path = predictions_dir / f"{spec}.parquet"
        if not path.exists():
            raise PipelineError(f"{path}: no predictions for model {spec!r} (run its evaluate stage, or give a file)")
    df = read_predictions(path)
    missing = [c for c in ("sample_id", "prediction") if c not in df.columns]
    if missing or df.height == 0:
        raise PipelineError(f"{path}: " + (f"missing column(s) {', '.join(missing)}" if missing else "no predictions"))
    df = df.with_columns(pl.col("sample_id").cast(pl.String))
    for column in ("sample_id", "prediction"):
        nulls = df.filter(pl.col(column).is_null())
        if nulls.height:
            raise PipelineError(f"{path}: {nulls.height} row(s) with no {column}"
                                + (f", first sample_id {nulls['sample_id'][0]}" if column != "sample_id" else ""))
    dupes = df["sample_id"].filter(df["sample_id"].is_duplicated()).unique().sort().to_list()
    if dupes:
        raise PipelineError(f"{path}: duplicated sample_id(s) {_listed(dupes)}")
    name = spec
    if is_file:  # a file names its model in the `model` column (evaluate writes one), else by its stem
        models = df["model"].unique().to_list() if "model" in df.columns else []
        name = str(models[0]) if len(models) == 1 and models[0] else path.stem
    keep = [c for c in ("sample_id", "prediction", "context") if c in df.columns]
    return Side(name, df.select(keep))


def context_text(turns) -> str:
    """The dialogue before the reply, one turn per line, labelled as ED's two roles (speaker first)."""
    if turns is None:
        return ""
    if isinstance(turns, str):
        from empathy_pipeline.data.ed import PAPER_TURN_SEPARATOR

        turns = turns.split(PAPER_TURN_SEPARATOR)
    return transcript(turns)


def with_context(joined: pl.DataFrame, a: Side, b: Side, contexts: Path | None) -> pl.DataFrame:
    """Attach `context`: from the predictions (A's, checked against B's), else from the test split."""
    if "context" in joined.columns and "context_b" in joined.columns:
        for row in joined.select("sample_id", "context", "context_b").iter_rows(named=True):
            if row["context"] != row["context_b"]:
                raise PipelineError(f"{a.name} and {b.name} give different contexts for sample_id "
                                    f"{row['sample_id']}: they were not evaluated on the same test set")
    if "context_b" in joined.columns:
        joined = joined.drop("context") if "context" in joined.columns else joined
        return joined.rename({"context_b": "context"})
    if "context" in joined.columns:
        return joined
    # Predictions written before `evaluate` kept the context: look it up in the test split.
    if contexts is None or not contexts.exists():
        raise PipelineError(f"{a.name}, {b.name}: predictions have no 'context' column and no test split at "
                            f"{contexts} to look it up (rerun evaluate, or pass --contexts)")
    split = pl.read_parquet(contexts)
    if not {"sample_id", "context"} <= set(split.columns):
        raise PipelineError(f"{contexts}: missing column(s) sample_id/context")
    # In the joined order: judge-pairs samples after this lookup, export before it, and both must draw the same items.
    found = joined.join(split.select(pl.col("sample_id").cast(pl.String), "context"), on="sample_id", how="left",
                        maintain_order="left")
    lost = found.filter(pl.col("context").is_null())
    if lost.height:
        raise PipelineError(f"{contexts}: no context for {lost.height} sample_id(s), first {lost['sample_id'][0]}")
    return found


@dataclass(frozen=True)
class Export:
    out_dir: Path
    n: int
    note: str | None   # e.g. the sample was capped at the overlap


def export(a_spec: str, b_spec: str, n: int, seed: int, out_dir: Path | None = None, *,
           predictions_dir: Path = PREDICTIONS_DIR, contexts: Path | None = TEST_SPLIT) -> Export:
    """Write sheet.csv, sheet.html (for the rater) and key.csv (for the tally only) into out_dir."""
    if n < 1:
        raise PipelineError(f"--n {n}: need at least one item")
    a, b = load_side(a_spec, predictions_dir), load_side(b_spec, predictions_dir)
    joined = a.table.rename({"prediction": "reply_a"}).join(
        b.table.rename({"prediction": "reply_b", **({"context": "context_b"} if "context" in b.table.columns else {})}),
        on="sample_id", how="inner", maintain_order="left")
    if joined.height == 0:
        raise PipelineError(f"{a.name} and {b.name}: no sample_id in common (were they evaluated on the same test set?)")
    note = None
    if n > joined.height:
        note = f"--n {n} is more than the {joined.height} items both models answered: the sheet has {joined.height}"
        n = joined.height
    joined = with_context(sample_rows(joined, n, seed), a, b, contexts)
    # Separate streams for presentation order and reply order: changing n reshuffles both, but
    # the sampled items depend on the seed alone (io.sample_rows, the pipeline's one sampling rule).
    order_rng = np.random.default_rng([seed, 1])
    joined = joined[order_rng.permutation(joined.height)]
    # Balanced: half the items show A first (the odd one out by coin), in a random pattern, so
    # a position bias of the rater cancels out instead of leaning towards one model.
    a_first = np.zeros(n, dtype=bool)
    a_first[: n // 2 + int(order_rng.integers(0, 2)) * (n % 2)] = True
    order_rng.shuffle(a_first)

    sheet, key = [], []
    for i, (row, first) in enumerate(zip(joined.iter_rows(named=True), a_first), start=1):
        r1, r2 = (row["reply_a"], row["reply_b"]) if first else (row["reply_b"], row["reply_a"])
        sheet.append({"item": str(i), "context": context_text(row["context"]), "reply_1": r1, "reply_2": r2,
                      **dict.fromkeys(CRITERIA, "")})
        key.append({"item": str(i), "sample_id": row["sample_id"], "reply_1": "A" if first else "B",
                    "model_a": a.name, "model_b": b.name, "seed": str(seed)})
    out = out_dir or Path("outputs/ab") / f"{_slug(a.name)}_vs_{_slug(b.name)}_seed{seed}"
    _write_text(out / "sheet.csv", rows_to_csv(sheet, SHEET_COLUMNS))
    _write_text(out / "sheet.html", sheet_html(sheet))
    _write_text(out / "key.csv", rows_to_csv(key, KEY_COLUMNS))
    return Export(out, n, note)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """RFC 4180 CSV (CRLF, minimal quoting): what the HTML page's Save writes, byte for byte."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ---- the HTML page ------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{position:sticky;top:0;z-index:1;background:#263238;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header h1{font-size:1.1em;margin:0;flex:1}
#progress{font-variant-numeric:tabular-nums}
button{font:inherit;padding:.35em 1.2em;border:0;border-radius:4px;background:#ffca28;cursor:pointer}
main{max-width:1100px;margin:0 auto;padding:1em}
.help{background:#fff;border-radius:6px;padding:.6em 1.2em;margin-bottom:1em}
.help dt{font-weight:600}.help dd{margin:0 0 .3em 1em}
.item{background:#fff;border-radius:6px;padding:.8em 1.2em;margin-bottom:1em;border-left:6px solid #b0bec5}
.item.done{border-left-color:#43a047}
.item h2{font-size:1em;margin:0 0 .4em}
.context{white-space:pre-wrap;background:#eceff1;padding:.5em .8em;border-radius:4px}
.replies{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.7em 0}
.reply{white-space:pre-wrap;border:1px solid #cfd8dc;border-radius:4px;padding:.5em .8em}
.reply b{display:block;color:#546e7a;font-size:.85em}
table{border-collapse:collapse}td,th{padding:.2em .7em;text-align:left}
th{font-weight:600;text-transform:capitalize}
label{cursor:pointer;white-space:nowrap}
"""

_JS = """
const DATA = JSON.parse(document.getElementById('sheet-data').textContent);
const COLUMNS = DATA.columns, CRITERIA = DATA.criteria, ITEMS = DATA.items;
const STORE = 'empathy-ab:' + DATA.id;
let answers = {};
try { answers = JSON.parse(localStorage.getItem(STORE) || '{}'); } catch (e) { answers = {}; }
const CHOICES = [['1', 'Reply 1 better'], ['tie', 'Tie'], ['2', 'Reply 2 better']];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function render() {
  const main = document.getElementById('items');
  ITEMS.forEach((it, idx) => {
    const table = el('table');
    for (const c of CRITERIA) {
      const row = el('tr', {}, el('th', {}, c));
      for (const [value, text] of CHOICES) {
        const input = el('input', {type: 'radio', name: `c-${idx}-${c}`, value: value, id: `r-${idx}-${c}-${value}`,
                                   'data-item': it.item, 'data-criterion': c});
        if ((answers[it.item] || {})[c] === value) input.checked = true;
        input.addEventListener('change', () => {
          (answers[it.item] = answers[it.item] || {})[c] = value;
          try { localStorage.setItem(STORE, JSON.stringify(answers)); } catch (e) {}
          update();
        });
        row.append(el('td', {}, el('label', {}, input, ' ' + text)));
      }
      table.append(row);
    }
    main.append(el('section', {class: 'item', id: `item-${idx}`},
      el('h2', {}, `Item ${it.item}`),
      el('div', {class: 'context'}, it.context),
      el('div', {class: 'replies'},
         el('div', {class: 'reply'}, el('b', {}, 'Reply 1'), it.reply_1),
         el('div', {class: 'reply'}, el('b', {}, 'Reply 2'), it.reply_2)),
      table));
  });
  update();
}

function complete(it) { return CRITERIA.every(c => (answers[it.item] || {})[c]); }

function update() {
  let done = 0;
  ITEMS.forEach((it, idx) => {
    const ok = complete(it); done += ok;
    document.getElementById(`item-${idx}`).classList.toggle('done', ok);
  });
  document.getElementById('progress').textContent = `${done} of ${ITEMS.length} done`;
}

function csvField(v) {
  const s = v == null ? '' : String(v);
  return /[",\\r\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

function toCsv() {
  const lines = [COLUMNS.map(csvField).join(',')];
  for (const it of ITEMS) {
    const row = Object.assign({}, it, answers[it.item] || {});
    lines.push(COLUMNS.map(c => csvField(row[c])).join(','));
  }
  return lines.join('\\r\\n') + '\\r\\n';
}

function save() {
  const blob = new Blob([toCsv()], {type: 'text/csv;charset=utf-8'});
  const a = el('a', {href: URL.createObjectURL(blob), download: DATA.filled_name});
  document.body.append(a); a.click(); a.remove();
  document.getElementById('saved').textContent = 'saved ' + new Date().toLocaleTimeString();
}

document.getElementById('save').addEventListener('click', save);
render();
"""


def sheet_html(sheet: Sequence[dict]) -> str:
    """One self-contained page (inline CSS/JS, no network): the items, radios per criterion, Save as CSV."""
    from html import escape

    payload = {"columns": list(SHEET_COLUMNS), "criteria": list(CRITERIA), "filled_name": FILLED_NAME,
               "items": [{k: row[k] for k in ("item", "context", "reply_1", "reply_2")} for row in sheet]}
    # The answers autosave in the browser under this id, so two sheets never share answers.
    payload["id"] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    # '<' escaped: no reply text can close the <script> element it travels in.
    data = json.dumps(payload, ensure_ascii=False).replace("<", "\\u003c")
    helps = "".join(f"<dt>{escape(c.capitalize())}</dt><dd>{escape(h)}</dd>" for c, h in CRITERION_HELP.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>A/B rating sheet ({len(sheet)} items)</title>
<style>{_CSS}</style></head>
<body>
<header><h1>Which reply is better?</h1><span id="progress"></span><span id="saved"></span>
<button id="save" type="button">Save</button></header>
<main>
<div class="help"><p>Each item is a dialogue and two candidate next replies of the listener, in no
particular order. For every criterion pick the better reply, or Tie. Your answers are kept in this
browser as you go; <b>Save</b> downloads them as <code>{FILLED_NAME}</code>: send that file back.</p>
<dl>{helps}</dl></div>
<div id="items"></div>
</main>
<script type="application/json" id="sheet-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""


# ---- tally --------------------------------------------------------------------------------------


def _read_csv(path: Path, what: str) -> tuple[list[str], list[dict]]:
    if not path.exists():
        raise PipelineError(f"{path}: {what} not found")
    try:
        # utf-8-sig: spreadsheet programs often save a byte-order mark in front of the header.
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in (reader.fieldnames or [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PipelineError(f"{path}: not a readable CSV {what} ({exc})") from None
    rows = [{(k or "").strip(): (v if isinstance(v, str) else "") for k, v in r.items()} for r in rows]
    return header, rows


def _listed(things: Sequence, limit: int = MAX_LISTED, sep: str = ", ") -> str:
    shown = sep.join(str(t) for t in things[:limit])
    return shown + (f" and {len(things) - limit} more" if len(things) > limit else "")


@dataclass(frozen=True)
class Key:
    model_a: str
    model_b: str
    seed: str
    reply_1: dict[str, str]   # item -> 'A' or 'B'
    sample_id: dict[str, str]  # item -> the test sample it shows


def read_key(path: Path) -> Key:
    header, rows = _read_csv(path, "key")
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing or not rows:
        raise PipelineError(f"{path}: " + (f"missing key column(s) {', '.join(missing)}" if missing else "empty key"))
    bad = [i for i, r in enumerate(rows, start=2) if r["reply_1"].strip().upper() not in ("A", "B")]
    if bad:
        raise PipelineError(f"{path}: reply_1 is not A or B in row(s) {_listed(bad)}")
    names = {(r["model_a"], r["model_b"], r["seed"]) for r in rows}
    if len(names) != 1:
        raise PipelineError(f"{path}: rows disagree on model_a/model_b/seed (a key of one export only)")
    items = [r["item"].strip() for r in rows]
    if len(set(items)) != len(items):
        raise PipelineError(f"{path}: duplicated item(s) {_listed(sorted({i for i in items if items.count(i) > 1}))}")
    a, b, seed = names.pop()
    return Key(a, b, seed, {r["item"].strip(): r["reply_1"].strip().upper() for r in rows},
               {r["item"].strip(): r["sample_id"].strip() for r in rows})


@dataclass(frozen=True)
class TallyResult:
    tallies: list[Tally]
    model_a: str
    model_b: str
    seed: str
    items: int        # rows of the sheet
    missing_items: int  # items of the key with no row in the sheet (only with allow_incomplete)
    # Per rated row: sample_id, context (as the sheet shows it, "" without the column) and the verdict
    # 'a' / 'b' / 'tie' / null (blank) per criterion: what a judge's verdicts are matched against.
    rated: pl.DataFrame

    def text(self) -> str:
        title = f"Human A/B: {self.items} item(s) rated, seed {self.seed}" + (
            f", {self.missing_items} item(s) of the key not in the sheet" if self.missing_items else "")
        return format_tally(self.tallies, self.model_a, self.model_b, title=title)

    def as_json(self) -> dict:
        return tally_json(self.tallies, self.model_a, self.model_b, seed=self.seed, items=self.items,
                          missing_items=self.missing_items)


def tally(sheet_path: Path, key_path: Path, *, allow_incomplete: bool = False) -> TallyResult:
    """Win/tie/lose of A against B per criterion; any malformed cell is a one-line error naming its rows."""
    key = read_key(key_path)
    header, rows = _read_csv(sheet_path, "sheet")
    missing = [c for c in ("item", *CRITERIA) if c not in header]
    if missing:
        raise PipelineError(f"{sheet_path}: missing column(s) {', '.join(missing)}")
    if not rows:
        raise PipelineError(f"{sheet_path}: no rows")
    problems: list[str] = []
    blanks: list[str] = []
    seen: dict[str, int] = {}
    rated: list[dict] = []  # per rated row: sample_id, context, a verdict per criterion (None = blank)
    for line, row in enumerate(rows, start=2):  # row 1 is the header, as a spreadsheet numbers them
        item = row["item"].strip()
        where = f"row {line} (item {item or '?'})"
        if item not in key.reply_1:
            problems.append(f"{where}: item not in the key")
            continue
        if item in seen:
            problems.append(f"{where}: item also in row {seen[item]}")
            continue
        seen[item] = line
        rated.append({"sample_id": key.sample_id[item], "context": row.get("context", "")})
        empty = []
        for c in CRITERIA:
            raw = row[c].strip().lower()
            if not raw:
                empty.append(c)
                rated[-1][c] = None
            elif raw not in VERDICTS:
                problems.append(f"{where}: {c}={row[c].strip()!r} is not 1, 2 or tie")
            else:
                first = VERDICTS[raw] == "1"
                rated[-1][c] = ("tie" if VERDICTS[raw] == "tie" else
                                ("a" if first == (key.reply_1[item] == "A") else "b"))
        if empty:
            blanks.append(f"{where}: {'all criteria' if len(empty) == len(CRITERIA) else ', '.join(empty)}")
    if problems:
        raise PipelineError(f"{sheet_path}: {len(problems)} malformed row(s): {_listed(problems, sep='; ')}")
    absent = [i for i in key.reply_1 if i not in seen]
    if (blanks or absent) and not allow_incomplete:
        parts = ([f"blank cells in {_listed(blanks, sep='; ')}"] if blanks else []) + (
            [f"item(s) of the key missing: {_listed(absent)}"] if absent else [])
        raise PipelineError(f"{sheet_path}: incomplete, {'; '.join(parts)} (fill them, or --allow-incomplete "
                            f"to count them as skipped)")
    tallies = [count_verdicts(c, [r[c] for r in rated] + [None] * len(absent)) for c in CRITERIA]
    return TallyResult(tallies, key.model_a, key.model_b, key.seed, len(rows), len(absent),
                       pl.DataFrame(rated, schema={"sample_id": pl.String, "context": pl.String,
                                                   **dict.fromkeys(CRITERIA, pl.String)}))

