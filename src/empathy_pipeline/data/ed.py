"""EmpatheticDialogues readers: the official CSV layout and the papers' preprocessed JSON.

Both produce the samples table (one row per listener turn):
    sample_id, conv_id, split, emotion, situation, context: list[str], response
`context` holds the prior turns with the speaker first; `response` is the listener's next turn.

The official CSVs are NOT quoted CSV: fields are joined by plain commas, a comma inside text is
written `_comma_`, and a bare `"` is just text. So lines are split on ",", never parsed with a
quoting CSV reader (which would merge lines that start with a quote, as HF `datasets` does).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import read_json_list

__all__ = ["PipelineError", "paper_normalize", "expand_contractions", "read_ed_csv", "read_paper_json", "read_split", "check_bad_fraction"]

REQUIRED_COLUMNS = ["conv_id", "utterance_idx", "context", "prompt", "utterance"]
SPLITS = ("train", "valid", "test")
PAPER_JSON_FILES = {"train": "train_results.json", "valid": "val_results.json", "test": "test_results.json"}
PAPER_TURN_SEPARATOR = " </s> "

SAMPLES_SCHEMA = {
    "sample_id": pl.String,
    "conv_id": pl.String,
    "split": pl.String,
    "emotion": pl.String,
    "situation": pl.String,
    "context": pl.List(pl.String),
    "response": pl.String,
}

# The contraction table of the MoEL/CEM preprocessing that produced the papers' test files
# ("i was not hit", but "should n't": only these are expanded, the rest is left to the tokenizer).
_PAPER_CONTRACTIONS = {
    "it's": "it is", "don't": "do not", "doesn't": "does not", "didn't": "did not", "you'd": "you would",
    "you're": "you are", "you'll": "you will", "i'm": "i am", "they're": "they are", "that's": "that is",
    "what's": "what is", "couldn't": "could not", "i've": "i have", "we've": "we have", "can't": "cannot",
    "i'd": "i would", "aren't": "are not", "isn't": "is not", "wasn't": "was not", "weren't": "were not",
    "won't": "will not", "there's": "there is", "there're": "there are",
}


@dataclass
class ReadReport:
    """What happened to the rows of one file: kept counts and every skip with its file:line."""

    path: str
    rows: int = 0
    conversations: int = 0
    samples: int = 0
    bad: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def skip(self, line: int | None, reason: str, detail: str) -> None:
        self.bad[reason] += 1
        where = f"{self.path}:{line}" if line is not None else self.path
        self.problems.append(f"{where}: {detail}")

    @property
    def bad_rows(self) -> int:
        return sum(n for reason, n in self.bad.items() if reason != "no_listener_turn")

    def as_dict(self, max_problems: int = 50) -> dict:
        return {
            "rows": self.rows,
            "conversations": self.conversations,
            "samples": self.samples,
            "bad_rows": self.bad_rows,
            "skipped_conversations": self.bad.get("no_listener_turn", 0),
            **{f"bad_{reason}": n for reason, n in sorted(self.bad.items())},
            "problems": self.problems[:max_problems],
        }


def paper_normalize(text: str) -> str:
    """The papers' text form: lower-case, `_comma_` → ",", no double quotes, CEM contractions,
    treebank tokens. Reproduces 5,217 of the 5,259 test samples of the papers' file exactly."""
    from empathy_pipeline.data.tokens import tokenize_words

    # The MoEL/CEM arrays behind the papers' files have double quotes stripped.
    text = text.replace("_comma_", ",").replace('"', "").lower()
    return " ".join(tokenize_words(expand_contractions(text)))


def expand_contractions(lowercase_text: str) -> str:
    """The MoEL/CEM contraction table, applied by plain substring replacement as they did."""
    for short, long in _PAPER_CONTRACTIONS.items():
        lowercase_text = lowercase_text.replace(short, long)
    return lowercase_text


def read_ed_csv(path: Path, split: str, max_conversations: int | None = None,
                normalize=None) -> tuple[pl.DataFrame, ReadReport]:
    """Read one official-layout ED file into samples; bad rows are skipped and reported."""
    report = ReadReport(str(path))
    if not path.exists():
        raise PipelineError(f"{path}: required file not found")
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        header_line = fh.readline().rstrip("\r\n")
        header = header_line.split(",")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if not header_line or missing:
            raise PipelineError(f"{path}:1: missing column(s) {', '.join(missing or REQUIRED_COLUMNS)} in header")
        col = {name: header.index(name) for name in REQUIRED_COLUMNS}
        conversations: dict[str, dict] = {}
        for line_no, raw in enumerate(fh, start=2):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            report.rows += 1
            parts = line.split(",")
            if len(parts) != len(header):
                report.skip(line_no, "field_count", f"expected {len(header)} fields, found {len(parts)}")
                continue
            conv_id = parts[col["conv_id"]].strip()
            try:
                idx = int(parts[col["utterance_idx"]])
            except ValueError:
                report.skip(line_no, "utterance_idx", f"utterance_idx {parts[col['utterance_idx']]!r} is not an integer")
                continue
            utterance = parts[col["utterance"]].replace("_comma_", ",").strip()
            if not utterance:
                report.skip(line_no, "empty_utterance", "empty utterance")
                continue
            conv = conversations.get(conv_id)
            if conv is None:
                if max_conversations is not None and len(conversations) >= max_conversations:
                    report.rows -= 1  # beyond the cap: not read, not counted
                    continue
                conv = conversations[conv_id] = {
                    "line": line_no,
                    "emotion": parts[col["context"]].strip(),
                    "situation": parts[col["prompt"]].replace("_comma_", ",").strip(),
                    "turns": {},
                }
            conv["turns"][idx] = utterance

    rows = []
    for conv_id, conv in conversations.items():
        turns = [conv["turns"][i] for i in sorted(conv["turns"])]
        if normalize is not None:
            turns = [normalize(t) for t in turns]
        # ED conversations start with the speaker, so listener turns are the 2nd, 4th, ...
        listener_positions = range(1, len(turns), 2)
        if not listener_positions:
            report.skip(conv["line"], "no_listener_turn", f"conversation {conv_id} has no listener turn")
            continue
        report.conversations += 1
        situation = normalize(conv["situation"]) if normalize and conv["situation"] else conv["situation"]
        for pos in listener_positions:
            rows.append({
                "sample_id": f"{conv_id}:{pos + 1}",
                "conv_id": conv_id,
                "split": split,
                "emotion": conv["emotion"],
                "situation": situation,
                "context": turns[:pos],
                "response": turns[pos],
            })
    report.samples = len(rows)
    return pl.DataFrame(rows, schema=SAMPLES_SCHEMA), report


def read_paper_json(path: Path, split: str, max_conversations: int | None = None) -> tuple[pl.DataFrame, ReadReport]:
    """Read the papers' preprocessed JSON (context turns joined by ' </s> ', response, evaluation).

    Text is kept exactly as in the file (it is already in the papers' normalised form). Items of one
    conversation follow each other, each context extending the previous one, which recovers conv_id.
    """
    report = ReadReport(str(path))
    items = read_json_list(path, "required file not found", "a JSON list of items")
    rows, evaluations = [], []
    conv_index, previous = -1, None
    for i, item in enumerate(items):
        report.rows += 1
        where = f"item {i}"
        if not isinstance(item, dict) or "context" not in item or "response" not in item:
            report.skip(None, "missing_field", f"{where}: needs 'context' and 'response'")
            continue
        if not all(isinstance(item.get(k), str) for k in ("context", "response")) or \
                not isinstance(item.get("evaluation", ""), str | None):
            report.skip(None, "not_text", f"{where}: 'context', 'response' and 'evaluation' must be strings")
            continue
        context = item["context"].split(PAPER_TURN_SEPARATOR)
        response = item["response"]
        if not response.strip() or not any(t.strip() for t in context):
            report.skip(None, "empty_utterance", f"{where}: empty context or response")
            continue
        if previous is None or context[: len(previous)] != previous:
            conv_index += 1
            if max_conversations is not None and conv_index >= max_conversations:
                report.rows -= 1
                break
            report.conversations += 1
        previous = context + [response]
        rows.append({
            "sample_id": f"{split}:{i}",
            "conv_id": f"{split}_conv:{conv_index}",
            "split": split,
            "emotion": None,
            "situation": None,
            "context": context,
            "response": response,
        })
        evaluations.append(item.get("evaluation"))
    df = pl.DataFrame(rows, schema=SAMPLES_SCHEMA)
    if any(e is not None for e in evaluations):
        df = df.with_columns(pl.Series("evaluation", evaluations, dtype=pl.String))
    report.samples = df.height
    return df, report


_SPLIT_FILE_RE = re.compile(r"^(train|valid|test)$")


def read_split(source: Path, fmt: str, split: str, preprocess: str, max_conversations: int | None):
    """Dispatch on the params' format; returns (samples, report)."""
    if not _SPLIT_FILE_RE.match(split):
        raise PipelineError(f"prepare.splits: unknown split {split!r} (use train, valid, test)")
    if fmt == "ed_csv":
        if preprocess not in ("paper", "none"):
            raise PipelineError(f"prepare.preprocess: unknown value {preprocess!r} (use paper or none)")
        normalize = paper_normalize if preprocess == "paper" else None
        return read_ed_csv(source / f"{split}.csv", split, max_conversations, normalize)
    if fmt == "paper_json":
        return read_paper_json(source / PAPER_JSON_FILES[split], split, max_conversations)
    raise PipelineError(f"prepare.format: unknown format {fmt!r} (use ed_csv or paper_json)")


def check_has_samples(report: ReadReport) -> None:
    """A split that yields no sample (a header only, or no conversation with a listener turn) is an
    error, not an empty table that every later stage would trip over."""
    if report.samples == 0:
        raise PipelineError(f"{report.path}: no samples ({report.rows} rows, {report.bad_rows} bad); "
                            "an empty split cannot be prepared (check the file, or leave it out of prepare.splits)")


def check_bad_fraction(report: ReadReport, max_fraction: float) -> None:
    if report.rows and report.bad_rows / report.rows > max_fraction:
        raise PipelineError(
            f"{report.path}: {report.bad_rows} of {report.rows} rows are bad "
            f"({report.bad_rows / report.rows:.1%} > prepare.max_bad_fraction {max_fraction:.1%}); "
            f"first: {report.problems[0]}"
        )
