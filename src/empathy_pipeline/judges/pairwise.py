"""A pairwise LLM judge that is fair to both models: both orders, ties, unparsed kept apart, length shown.

`empathy judge-pairs --a MODEL --b MODEL` asks the judge, per test item and per criterion of
Synth-Empathy's human A/B test (coherence, empathy, informativeness, continuity), which of the two
replies is better, once with A shown first and once with B shown first (pairwise_chat),
greedily. LLM judges are known to prefer a position and longer replies, so:

- a verdict counts for a model only when both orders name it; a verdict that flips with the order
  (the judge preferred a position, not a reply) and an explicit tie count as a tie;
- a reply that does not parse is asked again up to `retries` times at `retry_temperature`
  (judges/ask.py, the rate stage's rule; counted as retried); one that still does not parse makes the
  item unparsed for that criterion: counted on its own line, never a win and never a tie;
- the position-consistency rate (both orders agree) says how much of the judge is position;
- the A win rate within length bins (B longer / similar / A longer, by word count) shows whether
  the judge rewards length rather than quality;
- a warning says when the judge and either model share a base model (a judge prefers its own kind).

Given a filled human A/B sheet and its key (`empathy ab export` / `ab tally`), it also reports,
per criterion, how often the judge and the human rater give the same verdict on the items both
judged, with Cohen's κ, beside both tallies of those items.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from empathy_pipeline.analysis import ab
from empathy_pipeline.analysis.ab import Side, Tally, count_verdicts, format_tally, tally_json, with_context
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import sample_rows
from empathy_pipeline.judges.ask import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_TEMPERATURE,
    NEGATIVE_ANSWER,
    SHORT_ANSWER,
    ask_until_parsed,
)
from empathy_pipeline.llm.base import Chat, ChatBackend, Sampling, prompt_chat, transcript

# ---- the prompt and its parser: pairwise preference: which of two replies is better on one criterion ---
# The four criteria of Synth-Empathy's human A/B test (§4), defined by us from the paper's one-line
# descriptions. The judge sees the conversation and "Response 1" / "Response 2" and answers 1, 2 or
# tie; pairwise.py asks each pair in both orders, so a preference for a position cancels out.

PAIRWISE_SYSTEM_PROMPT = (
    "You are a careful, impartial judge of dialogue responses. You answer only with 1, 2 or tie."
)

PAIRWISE_CRITERIA = {
    "coherence": "Coherence - which response fits the conversation better: it makes sense as the listener's "
                 "next turn and matches what a good reply would say.",
    "empathy": "Empathy - which response better grasps the speaker's situation and feelings and shows "
               "appropriate concern or care.",
    "informativeness": "Informativeness - which response carries more relevant content (specific remarks, "
                       "questions or suggestions rather than generic filler).",
    "continuity": "Continuity - which response better keeps the conversation flowing, so that the speaker "
                  "can naturally go on talking.",
}

PAIRWISE_PROMPT = """You will be given a conversation between a speaker and a listener, followed by two candidate responses for the listener's next turn.

Your task is to compare the two responses on one criterion. Ignore their length and their order.

Criterion:

{criterion}

Conversation:

{conversation}

Response 1:

{first}

Response 2:

{second}

Which response is better on this criterion? Answer with "1", "2", or "tie" if they are equally good."""

PAIRWISE_PREFILL = "Better response: "

PREFER_FIRST, PREFER_SECOND, PREFER_TIE = "1", "2", "tie"


def pairwise_chat(criterion: str, context: Sequence[str], first: str, second: str,
                  prefill: str | None = PAIRWISE_PREFILL) -> Chat:
    """Chat asking which of `first` (Response 1) and `second` (Response 2) is better on `criterion`."""
    if criterion not in PAIRWISE_CRITERIA:
        raise PipelineError(f"pairwise judge: unknown criterion {criterion!r} (use {', '.join(PAIRWISE_CRITERIA)})")
    return prompt_chat(PAIRWISE_SYSTEM_PROMPT,
                       PAIRWISE_PROMPT.format(criterion=PAIRWISE_CRITERIA[criterion], conversation=transcript(context),
                                              first=first, second=second), prefill)


_PREFERENCE_ANSWER = r"(?:response\s*|#\s*)?([12])(?![\w.]*\d)(?![A-Za-z])"
_TIE_WORDS = ("tie", "equal", "equally", "both", "neither", "same")


def parse_preference(reply: str) -> str | None:
    """PREFER_FIRST, PREFER_SECOND or PREFER_TIE from a judge reply, or None (counted, never a win).

    The reply normally continues the prefilled "Better response: ", so it starts with the answer
    ("1", "Response 2", "**tie**", "Both are equally good"); a reply that restarts the form is read
    by its label ("Better response: 2", "Answer: tie"). Anything else, including a reply that only
    discusses both responses, is None.
    """
    if not reply or not reply.strip() or NEGATIVE_ANSWER.match(reply):
        return None
    labelled = re.search(r"\b(?:better\s+response|answer|verdict|winner)\s*[*_]*\s*[:=]\s*[*_\"']*\s*"
                         r"(tie\b|" + _PREFERENCE_ANSWER + ")", reply, re.IGNORECASE)
    head = labelled or re.match(r"[\s*_:=\"'(-]*(" + r"|".join(rf"{w}\b" for w in _TIE_WORDS) + "|"
                                + _PREFERENCE_ANSWER + ")", reply, re.IGNORECASE)
    if head is None:
        return None
    if head.group(2) is not None:
        return PREFER_FIRST if head.group(2) == "1" else PREFER_SECOND
    return PREFER_TIE


CRITERIA = tuple(PAIRWISE_CRITERIA)
A, B, TIE = "a", "b", "tie"  # the verdicts of ab.count_verdicts
LENGTH_BINS = ("B longer", "similar", "A longer")
ORDERS = ("a_first", "b_first")


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
        "a_first": {PREFER_FIRST: A, PREFER_SECOND: B, PREFER_TIE: TIE}[a_first],
        "b_first": {PREFER_FIRST: B, PREFER_SECOND: A, PREFER_TIE: TIE}[b_first],
    }
    return as_model["a_first"] if as_model["a_first"] == as_model["b_first"] else TIE


def consistent(a_first: str | None, b_first: str | None) -> bool | None:
    """Whether the two orders name the same model (or both a tie); None when either is unparsed."""
    if a_first is None or b_first is None:
        return None
    swap = {PREFER_FIRST: PREFER_SECOND, PREFER_SECOND: PREFER_FIRST,
            PREFER_TIE: PREFER_TIE}
    return swap[a_first] == b_first


def judge_pairs(backend: ChatBackend, items: pl.DataFrame, criteria: Sequence[str] = CRITERIA,
                sampling: Sampling = SHORT_ANSWER, *, retries: int = DEFAULT_RETRIES,
                retry_temperature: float = DEFAULT_RETRY_TEMPERATURE) -> pl.DataFrame:
    """Per (item, criterion): both raw replies, both parsed answers, the calls each took, consistency, verdict."""
    if sampling.temperature != 0:
        raise PipelineError("pairwise judge: temperature must be 0 (a sampled verdict is not reproducible)")
    rows = [(sid, c, ctx, a, b) for c in criteria for sid, ctx, a, b in items.select("sample_id", "context", "a", "b").iter_rows()]
    chats = [pairwise_chat(c, ctx, a, b) for _, c, ctx, a, b in rows]
    chats += [pairwise_chat(c, ctx, b, a) for _, c, ctx, a, b in rows]
    keys = [f"{sid}:{c}:{order}" for order in ORDERS for sid, c, *_ in rows]  # seeds of the retries
    asked = ask_until_parsed(backend, chats, keys, parse_preference, sampling=sampling, retries=retries,
                             retry_temperature=retry_temperature, what="pairwise judge")
    n = len(rows)
    a_first, b_first = asked.parsed[:n], asked.parsed[n:]
    return pl.DataFrame({
        "sample_id": [r[0] for r in rows], "criterion": [r[1] for r in rows],
        "words_a": [len(r[3].split()) for r in rows], "words_b": [len(r[4].split()) for r in rows],
        "reply_a_first": asked.replies[:n], "reply_b_first": asked.replies[n:],
        "answer_a_first": a_first, "answer_b_first": b_first,
        "attempts_a_first": asked.attempts[:n], "attempts_b_first": asked.attempts[n:],
        "consistent": [consistent(x, y) for x, y in zip(a_first, b_first, strict=True)],
        "verdict": [combine(x, y) for x, y in zip(a_first, b_first, strict=True)],
    }, schema={"sample_id": pl.String, "criterion": pl.String, "words_a": pl.Int64, "words_b": pl.Int64,
               "reply_a_first": pl.String, "reply_b_first": pl.String, "answer_a_first": pl.String,
               "answer_b_first": pl.String, "attempts_a_first": pl.Int64, "attempts_b_first": pl.Int64,
               "consistent": pl.Boolean, "verdict": pl.String})


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


def reply_counts(verdicts: pl.DataFrame, criterion: str) -> dict[str, int]:
    """Judge replies (two per item) that were asked again, and those still unparsed after the retries."""
    rows = verdicts.filter(pl.col("criterion") == criterion)
    return {"retried_replies": sum(int((rows[f"attempts_{o}"] > 1).sum()) for o in ORDERS),
            "unparsed_replies": sum(rows[f"answer_{o}"].null_count() for o in ORDERS)}


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


# ---- agreement with a human A/B sheet -------------------------------------------------------------
# The sheet (ab.export, filled, read by ab.tally) and the judge speak of the same item when they share
# a test sample_id: the key says which sample each sheet item shows. The sheet's A and B are its key's
# model_a and model_b; they must be the judge's two models, in either order (the verdicts are turned
# round when the key has them the other way). Where the sheet shows a context it must be the one the
# judge saw, so a sheet of another test set whose ids clash is an error, not a silent match. A blank
# cell of the sheet and an unparsed judge item are left out of that criterion and counted.

HUMAN_VERDICTS = ("a", "tie", "b")
_TURNED_ROUND = {"a": "b", "b": "a", "tie": "tie"}


def human_verdicts(sheet: Path, key: Path, a: Side, b: Side) -> pl.DataFrame:
    """The sheet's rated rows as sample_id, context and one verdict column per criterion, about the judge's A and B."""
    human = ab.tally(sheet, key, allow_incomplete=True)
    if (human.model_a, human.model_b) == (a.name, b.name):
        return human.rated
    if (human.model_a, human.model_b) == (b.name, a.name):
        return human.rated.with_columns(pl.col(c).replace_strict(_TURNED_ROUND, default=None) for c in ab.CRITERIA)
    raise PipelineError(f"{key}: the sheet compares {human.model_a} (A) with {human.model_b} (B), "
                        f"the judge {a.name} with {b.name}")


def shared_items(human: pl.DataFrame, items: pl.DataFrame, sheet: Path) -> pl.DataFrame:
    """The sheet's rows of the items to be judged; an error when there are none or a context differs."""
    shared = human.join(items.select("sample_id", judged_context="context"), on="sample_id", how="inner")
    if shared.height == 0:
        raise PipelineError(f"{sheet}: none of its {human.height} rated item(s) is among the {items.height} to be "
                            "judged (matched by sample_id); judge with the export's --n and --seed, or all items "
                            "with --n 0")
    for sample_id, shown, judged in shared.select("sample_id", "context", "judged_context").iter_rows():
        if shown.strip() and _words(shown) != _words(ab.context_text(judged)):
            raise PipelineError(f"{sheet}: sample_id {sample_id} shows another context than the judged "
                                "predictions (a sheet of another test set?)")
    return shared.drop("judged_context")


def _words(text: str) -> str:
    return " ".join(text.split())  # a spreadsheet may rewrite line ends and spaces


@dataclass(frozen=True)
class HumanAgreement:
    """Judge vs human rater on the items both judged, per criterion."""

    sheet: str
    sheet_items: int     # rated rows of the sheet
    shared_items: int    # of them, judged here
    criteria: list[dict]  # criterion, n, agreement, kappa, judge / human tallies, judge_unparsed, human_blank

    def text(self) -> str:
        lines = [f"Judge vs human ({self.sheet}): {self.shared_items} of the sheet's {self.sheet_items} rated "
                 "item(s) judged here, matched by sample_id; N counts items with a verdict from both", "",
                 "| criterion | N | agreement | Cohen's kappa | judge A / tie / B | human A / tie / B "
                 "| judge unparsed | human blank |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in self.criteria:
            j, h = row["judge"], row["human"]
            kappa = "-" if row["kappa"] is None else f"{row['kappa']:.3f}"
            lines.append(f"| {row['criterion']} | {row['n']} | {_percent(row['agreement'])} | {kappa} "
                         f"| {j['a_wins']} / {j['ties']} / {j['b_wins']} | {h['a_wins']} / {h['ties']} / {h['b_wins']} "
                         f"| {row['judge_unparsed']} | {row['human_blank']} |")
        lines += ["", "agreement: the same verdict (A better, tie, B better); kappa: Cohen's, unweighted, "
                  "over the three verdicts"]
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"sheet": self.sheet, "sheet_items": self.sheet_items, "shared_items": self.shared_items,
                "criteria": self.criteria}


def human_agreement(verdicts: pl.DataFrame, shared: pl.DataFrame, criteria: Sequence[str], sheet: Path,
                    sheet_items: int) -> HumanAgreement:
    """Per criterion, over the shared items with both a judge verdict and a human one: raw agreement,
    Cohen's κ and both tallies; items one side left without a verdict are counted apart."""
    from sklearn.metrics import cohen_kappa_score

    rows = []
    for criterion in criteria:
        judged = dict(verdicts.filter(pl.col("criterion") == criterion).select("sample_id", "verdict").iter_rows())
        pairs = [(judged[sample_id], human) for sample_id, human in shared.select("sample_id", criterion).iter_rows()]
        both = [(j, h) for j, h in pairs if j is not None and h is not None]
        kappa = None
        if both:
            with np.errstate(divide="ignore", invalid="ignore"):  # one verdict only on both sides: κ is 0/0
                value = cohen_kappa_score([j for j, _ in both], [h for _, h in both], labels=list(HUMAN_VERDICTS))
            kappa = None if np.isnan(value) else round(float(value), 4)
        judge_tally = count_verdicts(criterion, [j for j, _ in both])
        human_tally = count_verdicts(criterion, [h for _, h in both])
        rows.append({
            "criterion": criterion, "n": len(both),
            "agreement": round(sum(j == h for j, h in both) / len(both), 4) if both else None, "kappa": kappa,
            "judge": {"a_wins": judge_tally.a_wins, "ties": judge_tally.ties, "b_wins": judge_tally.b_wins},
            "human": {"a_wins": human_tally.a_wins, "ties": human_tally.ties, "b_wins": human_tally.b_wins},
            "judge_unparsed": sum(j is None for j, _ in pairs),
            "human_blank": sum(h is None for _, h in pairs),
        })
    return HumanAgreement(str(sheet), sheet_items, shared.height, rows)


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
    from empathy_pipeline.modeling.models import model_fingerprint

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
    replies: dict[str, dict[str, int]]   # per criterion: retried_replies, unparsed_replies
    retries: int
    retry_temperature: float
    human: HumanAgreement | None = None

    def text(self) -> str:
        title = (f"LLM judge {self.judge} ({self.backend}): {self.items} item(s), seed {self.seed}, each asked in both "
                 "orders; a verdict that flips with the order is a tie")
        # The human tally's table, unparsed items left out of it (its `skipped` line means blank cells).
        lines = [format_tally([replace(t, skipped=0) for t in self.tallies], self.model_a, self.model_b, title=title),
                 "", "| criterion | unparsed | position-consistent | retried replies | unparsed replies |",
                 "|---|---:|---:|---:|---:|"]
        for t in self.tallies:
            r = self.replies[t.criterion]
            lines.append(f"| {t.criterion} | {t.skipped} | {_percent(self.consistency[t.criterion])} "
                         f"| {r['retried_replies']} | {r['unparsed_replies']} |")
        lines += ["", f"unparsed: items without a verdict (a reply of either order unparsed); retried replies: "
                  f"re-asked up to {self.retries} time(s) at temperature {self.retry_temperature}"]
        lines += ["", f"mean reply length (words): A {self.mean_words['a']}, B {self.mean_words['b']}", "",
                  f"A win rate by reply length (similar: within {self.length_margin} words; items in brackets):", "",
                  "| criterion | " + " | ".join(LENGTH_BINS) + " |", "|---|" + "---:|" * len(LENGTH_BINS)]
        for criterion, bins in self.length_bins.items():
            cells = [f"{_percent(cell['a_win_rate'])} ({cell['items']})" for cell in (bins[name] for name in LENGTH_BINS)]
            lines.append(f"| {criterion} | " + " | ".join(cells) + " |")
        if self.human is not None:
            lines += ["", self.human.text()]
        if self.warnings:
            lines += ["", *self.warnings]
        return "\n".join(lines)

    def as_json(self) -> dict:
        criteria_extra = {t.criterion: {"unparsed": t.skipped, "position_consistency": self.consistency[t.criterion],
                                        **self.replies[t.criterion]} for t in self.tallies}
        out = tally_json(self.tallies, self.model_a, self.model_b, judge=self.judge, backend=self.backend,
                         items=self.items, seed=self.seed, retries=self.retries,
                         retry_temperature=self.retry_temperature, mean_words=self.mean_words,
                         length_margin_words=self.length_margin, length_bins=self.length_bins, warnings=self.warnings)
        out["criteria"] = [{**row, **criteria_extra[row["criterion"]]} for row in out["criteria"]]
        if self.human is not None:
            out["human"] = self.human.as_json()
        return out


def run(a: Side, b: Side, backend: ChatBackend, *, judge: str, backend_name: str, n: int | None, seed: int,
        contexts: Path | None, repo: Path, length_margin: int = 3, criteria: Sequence[str] = CRITERIA,
        retries: int = DEFAULT_RETRIES, retry_temperature: float = DEFAULT_RETRY_TEMPERATURE,
        human: tuple[Path, Path] | None = None) -> tuple[PairwiseResult, pl.DataFrame]:
    """Judge `n` seeded common items (all when None); (result, per-item verdicts).

    `human` = (filled sheet, key) adds the judge's agreement with that rater on the items both judged.
    """
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise PipelineError(f"judge-pairs: unknown criterion(s) {', '.join(unknown)} (use {', '.join(CRITERIA)})")
    if n is not None and n < 1:
        raise PipelineError(f"--n {n}: need at least one item")
    items = sample_rows(pair_items(a, b, contexts), n, seed)
    # The sheet is read and matched before any judge call: a wrong sheet costs no judge time.
    rated = human_verdicts(*human, a, b) if human else None
    shared = shared_items(rated, items, human[0]) if human else None
    verdicts = judge_pairs(backend, items, criteria, retries=retries, retry_temperature=retry_temperature)
    agreement = human_agreement(verdicts, shared, criteria, human[0], rated.height) if human else None
    result = PairwiseResult(
        tallies=[tally(verdicts, c) for c in criteria], consistency={c: consistency(verdicts, c) for c in criteria},
        model_a=a.name, model_b=b.name, judge=judge, backend=backend_name, items=items.height, seed=seed,
        mean_words={"a": _mean([len(t.split()) for t in items["a"].to_list()]),
                    "b": _mean([len(t.split()) for t in items["b"].to_list()])},
        length_margin=length_margin, length_bins=length_table(verdicts, length_margin),
        warnings=shared_base_warnings(judge, (a, b), repo),
        replies={c: reply_counts(verdicts, c) for c in criteria}, retries=retries,
        retry_temperature=retry_temperature, human=agreement)
    return result, verdicts


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
