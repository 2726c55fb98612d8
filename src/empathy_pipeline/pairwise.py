"""A pairwise LLM judge that is fair to both models: both orders, ties, unparsed kept apart, length shown.

`empathy judge-pairs --a MODEL --b MODEL` asks the judge, per test item and per criterion of
Synth-Empathy's human A/B test (coherence, empathy, informativeness, continuity), which of the two
replies is better, once with A shown first and once with B shown first (prompts.pairwise_chat),
greedily. LLM judges are known to prefer a position and longer replies, so:

- a verdict counts for a model only when both orders name it; a verdict that flips with the order
  (the judge preferred a position, not a reply) and an explicit tie count as a tie;
- a reply that does not parse makes the item unparsed for that criterion: counted on its own line,
  never a win and never a tie;
- the position-consistency rate (both orders agree) says how much of the judge is position;
- the A win rate within length bins (B longer / similar / A longer, by word count) shows whether
  the judge rewards length rather than quality;
- a warning says when the judge and either model share a base model (a judge prefers its own kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import yaml

from . import prompts
from .ab import Side, Tally, count_verdicts, format_tally, tally_json, with_context
from .errors import PipelineError
from .io import sample_rows
from .llm.base import ChatBackend, Sampling

CRITERIA = tuple(prompts.PAIRWISE_CRITERIA)
A, B, TIE = "a", "b", "tie"  # the verdicts of ab.count_verdicts
DEFAULT_SAMPLING = Sampling(max_new_tokens=6)  # greedy; the answer is "1", "2" or "tie"
LENGTH_BINS = ("B longer", "similar", "A longer")


# ---- the two sides ---------------------------------------------------------------------------------
# Read exactly as the human A/B sheet reads them (ab.load_side: an evaluated model's name or a
# predictions file; the context from the files, else from the prepared test split), so that judge
# and human verdicts are about the same items.

def pair_items(a: Side, b: Side, contexts: Path | None) -> pl.DataFrame:
    """Items both sides answered: sample_id, context, a, b (in A's file order)."""
    joined = a.table.rename({"prediction": "a"}).join(
        b.table.rename({"prediction": "b", **({"context": "context_b"} if "context" in b.table.columns else {})}),
        on="sample_id", how="inner", maintain_order="left")
    if joined.height == 0:
        raise PipelineError(f"{a.name} and {b.name}: no sample_id in common (were they evaluated on the same test set?)")
    return with_context(joined, a, b, contexts).select("sample_id", "context", "a", "b")


# ---- judging ---------------------------------------------------------------------------------------

def combine(a_first: str | None, b_first: str | None) -> str | None:
    """One verdict (A, B, tie or None = unparsed) from the parsed answers of the two orders.

    `a_first` is the answer with A shown as Response 1, `b_first` with B shown as Response 1.
    """
    if a_first is None or b_first is None:
        return None
    as_model = {  # what each answer says about the models, per order
        "a_first": {prompts.PREFER_FIRST: A, prompts.PREFER_SECOND: B, prompts.PREFER_TIE: TIE}[a_first],
        "b_first": {prompts.PREFER_FIRST: B, prompts.PREFER_SECOND: A, prompts.PREFER_TIE: TIE}[b_first],
    }
    return as_model["a_first"] if as_model["a_first"] == as_model["b_first"] else TIE


def consistent(a_first: str | None, b_first: str | None) -> bool | None:
    """Whether the two orders name the same model (or both a tie); None when either is unparsed."""
    if a_first is None or b_first is None:
        return None
    swap = {prompts.PREFER_FIRST: prompts.PREFER_SECOND, prompts.PREFER_SECOND: prompts.PREFER_FIRST,
            prompts.PREFER_TIE: prompts.PREFER_TIE}
    return swap[a_first] == b_first


def judge_pairs(backend: ChatBackend, items: pl.DataFrame, criteria: Sequence[str] = CRITERIA,
                sampling: Sampling = DEFAULT_SAMPLING) -> pl.DataFrame:
    """Per (item, criterion): both raw replies, both parsed answers, consistency and the verdict."""
    if sampling.temperature != 0:
        raise PipelineError("pairwise judge: temperature must be 0 (a sampled verdict is not reproducible)")
    rows = [(sid, c, ctx, a, b) for c in criteria for sid, ctx, a, b in items.select("sample_id", "context", "a", "b").iter_rows()]
    chats = [prompts.pairwise_chat(c, ctx, a, b) for _, c, ctx, a, b in rows]
    chats += [prompts.pairwise_chat(c, ctx, b, a) for _, c, ctx, a, b in rows]
    replies = backend.generate(chats, sampling) if chats else []
    if len(replies) != len(chats):
        raise PipelineError(f"pairwise judge: backend returned {len(replies)} replies for {len(chats)} prompts")
    raw_a_first, raw_b_first = replies[:len(rows)], replies[len(rows):]
    a_first = [prompts.parse_preference(r) for r in raw_a_first]
    b_first = [prompts.parse_preference(r) for r in raw_b_first]
    return pl.DataFrame({
        "sample_id": [r[0] for r in rows], "criterion": [r[1] for r in rows],
        "words_a": [len(r[3].split()) for r in rows], "words_b": [len(r[4].split()) for r in rows],
        "reply_a_first": raw_a_first, "reply_b_first": raw_b_first,
        "answer_a_first": a_first, "answer_b_first": b_first,
        "consistent": [consistent(x, y) for x, y in zip(a_first, b_first, strict=True)],
        "verdict": [combine(x, y) for x, y in zip(a_first, b_first, strict=True)],
    }, schema={"sample_id": pl.String, "criterion": pl.String, "words_a": pl.Int64, "words_b": pl.Int64,
               "reply_a_first": pl.String, "reply_b_first": pl.String, "answer_a_first": pl.String,
               "answer_b_first": pl.String, "consistent": pl.Boolean, "verdict": pl.String})


# ---- tallies ---------------------------------------------------------------------------------------
# The result shape is ab.Tally, the human A/B tally's: a row per criterion with A wins / ties /
# B wins over the N items with a verdict. Unparsed items go in its `skipped` (left out of N) and,
# with the position-consistency rate, in a judge-only table beside it.

def tally(verdicts: pl.DataFrame, criterion: str) -> Tally:
    rows = verdicts.filter(pl.col("criterion") == criterion)
    return count_verdicts(criterion, rows["verdict"].to_list())


def consistency(verdicts: pl.DataFrame, criterion: str) -> float | None:
    """Share of the items parsed in both orders whose two answers name the same model (or a tie)."""
    parsed = verdicts.filter(pl.col("criterion") == criterion).drop_nulls("consistent")
    return round(float(parsed["consistent"].mean()), 4) if parsed.height else None


def length_bin(words_a: int, words_b: int, margin: int) -> str:
    """B longer / similar / A longer: similar when the word counts differ by at most `margin`."""
    diff = words_a - words_b
    return LENGTH_BINS[0] if diff < -margin else LENGTH_BINS[2] if diff > margin else LENGTH_BINS[1]


def length_table(verdicts: pl.DataFrame, margin: int) -> dict:
    """Per criterion and length bin: items, A wins, ties, B wins, unparsed and A's win rate among verdicts."""
    binned = verdicts.with_columns(pl.Series("bin", [length_bin(x, y, margin) for x, y in
                                                     zip(verdicts["words_a"], verdicts["words_b"], strict=True)],
                                             dtype=pl.String))
    out: dict = {}
    for criterion in dict.fromkeys(binned["criterion"].to_list()):
        out[criterion] = {}
        for name in LENGTH_BINS:
            rows = binned.filter((pl.col("criterion") == criterion) & (pl.col("bin") == name))
            t = tally(rows, criterion)
            out[criterion][name] = {"items": rows.height, "a_wins": t.a_wins, "ties": t.ties, "b_wins": t.b_wins,
                                    "unparsed": t.skipped, "a_win_rate": round(t.a_wins / t.n, 4) if t.n else None}
    return out


# ---- shared base models ----------------------------------------------------------------------------
# The rule: an evaluated model's base is the `base` of its entry in dvc.yaml's `evaluate` foreach
# (synth, discriminator and synth_base -> models/synth_base; the Efficient-Empathy models ->
# models/efficient_base); a name without an entry stands for itself (models/<name> if it exists).
# A model (or the judge) is identified by the files of its directory (models.model_fingerprint) and,
# for models/<key> with a `models.<key>` param, by the model that param names (both branches' bases
# default to smollm2-135m-instruct, so they share a base although their directories differ); a name
# that is no directory (a served or hub model) is identified by that name. Two sides share a base
# model when these identities intersect.

def model_identity(model: str, repo: Path) -> set[str]:
    from .models import model_fingerprint

    path = Path(model) if Path(model).is_absolute() else repo / model
    keys = {f"name:{Path(model).name}"} if not path.is_dir() else {model_fingerprint(str(path))}
    params_models = _read_yaml(repo / "params.yaml").get("models", {})
    if isinstance(params_models, dict) and isinstance(params_models.get(Path(model).name), str):
        keys.add(f"name:{params_models[Path(model).name]}")
    return keys


def evaluated_base(name: str, repo: Path) -> str:
    """The base model directory of an evaluated model, by the rule above."""
    stages = _read_yaml(repo / "dvc.yaml").get("stages", {})
    entries = stages.get("evaluate", {}).get("foreach", {}) if isinstance(stages, dict) else {}
    entry = entries.get(name) if isinstance(entries, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("base"), str):
        return entry["base"]
    return f"models/{name}" if (repo / "models" / name).is_dir() else name


def shared_base_warnings(judge: str, sides: Sequence[Side], repo: Path) -> list[str]:
    judge_keys = model_identity(judge, repo)
    warnings = []
    for flag, side in zip(("A", "B"), sides, strict=True):
        base = evaluated_base(side.name, repo)
        if judge_keys & model_identity(base, repo):
            warnings.append(f"warning: the judge {judge} and {flag} ({side.name}, base {base}) share a base model; "
                            "a judge tends to prefer replies of its own kind")
    return warnings


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


# ---- the command -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairwiseResult:
    """What `empathy judge-pairs` prints: the ab tally of the judge's verdicts and what only a judge has."""

    tallies: list[Tally]          # skipped = unparsed items
    consistency: dict[str, float | None]
    model_a: str
    model_b: str
    judge: str
    backend: str
    items: int
    seed: int
    mean_words: dict[str, float | None]   # {"a": ..., "b": ...}
    length_margin: int
    length_bins: dict
    warnings: list[str]

    def text(self) -> str:
        title = (f"LLM judge {self.judge} ({self.backend}): {self.items} item(s), seed {self.seed}, each asked in both "
                 "orders; a verdict that flips with the order is a tie")
        # The human tally's table, unparsed items left out of it (its `skipped` line means blank cells).
        lines = [format_tally([replace(t, skipped=0) for t in self.tallies], self.model_a, self.model_b, title=title),
                 "", "| criterion | unparsed | position-consistent |", "|---|---:|---:|"]
        for t in self.tallies:
            lines.append(f"| {t.criterion} | {t.skipped} | {_percent(self.consistency[t.criterion])} |")
        lines += ["", f"mean reply length (words): A {self.mean_words['a']}, B {self.mean_words['b']}", "",
                  f"A win rate by reply length (similar: within {self.length_margin} words; items in brackets):", "",
                  "| criterion | " + " | ".join(LENGTH_BINS) + " |", "|---|" + "---:|" * len(LENGTH_BINS)]
        for criterion, bins in self.length_bins.items():
            cells = [f"{_percent(cell['a_win_rate'])} ({cell['items']})" for cell in (bins[name] for name in LENGTH_BINS)]
            lines.append(f"| {criterion} | " + " | ".join(cells) + " |")
        if self.warnings:
            lines += ["", *self.warnings]
        return "\n".join(lines)

    def as_json(self) -> dict:
        criteria_extra = {t.criterion: {"unparsed": t.skipped, "position_consistency": self.consistency[t.criterion]}
                          for t in self.tallies}
        out = tally_json(self.tallies, self.model_a, self.model_b, judge=self.judge, backend=self.backend,
                         items=self.items, seed=self.seed, mean_words=self.mean_words,
                         length_margin_words=self.length_margin, length_bins=self.length_bins, warnings=self.warnings)
        out["criteria"] = [{**row, **criteria_extra[row["criterion"]]} for row in out["criteria"]]
        return out


def run(a: Side, b: Side, backend: ChatBackend, *, judge: str, backend_name: str, n: int | None, seed: int,
        contexts: Path | None, repo: Path, length_margin: int = 3,
        criteria: Sequence[str] = CRITERIA) -> tuple[PairwiseResult, pl.DataFrame]:
    """Judge `n` seeded common items (all when None); (result, per-item verdicts)."""
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise PipelineError(f"judge-pairs: unknown criterion(s) {', '.join(unknown)} (use {', '.join(CRITERIA)})")
    if n is not None and n < 1:
        raise PipelineError(f"--n {n}: need at least one item")
    items = sample_rows(pair_items(a, b, contexts), n, seed)
    verdicts = judge_pairs(backend, items, criteria)
    result = PairwiseResult(
        tallies=[tally(verdicts, c) for c in criteria], consistency={c: consistency(verdicts, c) for c in criteria},
        model_a=a.name, model_b=b.name, judge=judge, backend=backend_name, items=items.height, seed=seed,
        mean_words={"a": _mean([len(t.split()) for t in items["a"].to_list()]),
                    "b": _mean([len(t.split()) for t in items["b"].to_list()])},
        length_margin=length_margin, length_bins=length_table(verdicts, length_margin),
        warnings=shared_base_warnings(judge, (a, b), repo))
    return result, verdicts


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
