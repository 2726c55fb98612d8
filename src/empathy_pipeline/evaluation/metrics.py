"""Automatic evaluation of generated replies, as the ED papers score them.

Synth-Empathy and Efficient-Empathy (after CEM, CASE, SEEK) report, on the ED test split:
corpus-level BLEU-1..4, Distinct-1/2, sentence-level ROUGE-1/2/L, CIDEr and BERTScore P/R/F1.
Every function here takes one reference per prediction and returns scores on the x100 scale.

Tokens. BLEU, Distinct and CIDEr use lower-cased NLTK Treebank tokens, i.e. what
`nltk.word_tokenize` produces. `word_tokenize` first splits sentences with the pre-trained
English punkt model, a data file that cannot be downloaded here, so we split sentences with an
untrained `PunktSentenceTokenizer()` given the few abbreviations ED uses (`tokens.py`, shared
with the papers' normalisation in `ed.py`) and then run the same `NLTKWordTokenizer`. Text already in the papers' tokenised form ("it was 100 % their
fault .") comes back as the same tokens; the tests check this on the papers' test file.
ROUGE uses the tokenizer of the papers' metric code instead: lower-case, punctuation to spaces,
articles a/an/the removed, split on whitespace.

The `metric_modules/` directory wraps these functions as local `evaluate` modules
(`load_evaluate_module("ed_bleu")`); the logic stays here.
"""

from __future__ import annotations

import os
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import read_predictions
from empathy_pipeline.data.tokens import tokenize_words
from empathy_pipeline.modeling.encoders import EMBEDDED_EMBEDDING_MODEL, embedding_model_path

BLEU_ORDERS = 4
DISTINCT_ORDERS = 2
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
DECIMALS = 2
METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
EVALUATE_MODULES = ("ed_bleu", "ed_distinct", "ed_rouge", "ed_cider", "ed_bertscore")


# ---- tokenisation ---------------------------------------------------------------------------

def tokenize(text: str) -> list[str]:
    """Lower-cased NLTK Treebank tokens (word_tokenize without the punkt data file)."""
    return list(_tokens(text))


@lru_cache(maxsize=1 << 16)
def _tokens(text: str) -> tuple[str, ...]:
    # NLTK's tokenizer is the slow part of scoring; BLEU, Distinct and CIDEr (and every
    # bootstrap resample of `empathy compare`) tokenise the same texts, so each text is done once.
    return tuple(tokenize_words(text.lower()))


class RougeTokenizer:
    """The papers' ROUGE normalisation; rouge-score calls `.tokenize(text)` on both sides."""

    _punctuation = re.compile(f"[{re.escape(string.punctuation)}]")
    _articles = re.compile(r"\b(a|an|the)\b")

    def tokenize(self, text: str) -> list[str]:
        text = self._punctuation.sub(" ", text.lower())
        return self._articles.sub(" ", text).split()


# ---- the metrics (x100, unrounded) --------------------------------------------------------------


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 with cumulative uniform weights and smoothing method1 (epsilon 1e-12)."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    check_pairs(predictions, references)
    hypotheses = [tokenize(p) for p in predictions]
    refs = [[tokenize(r)] for r in references]
    weights = [tuple([1.0 / n] * n) for n in range(1, BLEU_ORDERS + 1)]
    scores = corpus_bleu(refs, hypotheses, weights=weights,
                         smoothing_function=SmoothingFunction(epsilon=1e-12).method1)
    return {f"bleu{n}": 100.0 * float(s) for n, s in enumerate(scores, start=1)}


def distinct(predictions: Sequence[str]) -> dict[str, float]:
    """Distinct-n: unique n-grams / all n-grams, pooled over every prediction."""
    if not predictions:
        raise PipelineError("no predictions to score")
    token_lists = [tokenize(p) for p in predictions]
    out = {}
    for n in range(1, DISTINCT_ORDERS + 1):
        ngrams = [tuple(toks[i:i + n]) for toks in token_lists for i in range(len(toks) - n + 1)]
        out[f"dist{n}"] = 100.0 * len(set(ngrams)) / len(ngrams) if ngrams else 0.0
    return out


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measure (Google's rouge-score) per sample, averaged over samples."""
    from rouge_score.rouge_scorer import RougeScorer

    check_pairs(predictions, references)
    scorer = RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer())
    totals = Counter()
    for prediction, reference in zip(predictions, references, strict=True):
        for name, s in scorer.score(target=reference, prediction=prediction).items():
            totals[name] += s.fmeasure
    return {name: 100.0 * totals[name] / len(predictions) for name in ROUGE_TYPES}


def cider(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """CIDEr of pycocoevalcap 1.2 on lower-cased Treebank tokens (no Java PTBTokenizer).

    pycocoevalcap 1.2 ships only `Cider`; its scorer is the CIDEr-D formulation (clipped tf-idf
    n-gram cosine for n=1..4, Gaussian length penalty sigma=6, x10), with idf taken from the
    scored references themselves, so the value depends on the whole corpus (one sample scores 0).
    """
    from pycocoevalcap.cider.cider import Cider

    check_pairs(predictions, references)
    refs = {i: [" ".join(tokenize(r))] for i, r in enumerate(references)}
    hyps = {i: [" ".join(tokenize(p))] for i, p in enumerate(predictions)}
    if not any(r[0] for r in refs.values()):
        return {"cider": 0.0}  # no reference n-grams, no idf: the scorer cannot run
    score, _ = Cider().compute_score(refs, hyps)
    return {"cider": 100.0 * float(score)}


def bertscore_prf(predictions: Sequence[str], references: Sequence[str], model: str | None = None,
                  num_layers: int | None = None, batch_size: int = 64, rescale: bool = False,
                  baseline: str | os.PathLike | None = None) -> dict[str, float]:
    """BERTScore P/R/F1 (bert-score package) averaged over samples, raw or baseline-rescaled.

    `model` is an embedding model name (default: the embedded MiniLM) or a local HF directory;
    `num_layers` picks the layer whose embeddings are compared (default: the last one). With
    `rescale`, each score becomes (raw - b) / (1 - b) with b from `baseline` (a LAYER,P,R,F tsv) or
    the file bert-score ships for the model (`bertscore_baseline_file`), as the papers report it.
    """
    check_pairs(predictions, references)
    name = model or EMBEDDED_EMBEDDING_MODEL
    baseline_path = (Path(baseline) if baseline else bertscore_baseline_file(name)) if rescale else None
    if baseline_path is not None and not baseline_path.is_file():
        raise PipelineError(f"BERTScore baseline {baseline_path} not found (set evaluate.bertscore_baseline)")
    scorer = bert_scorer(name, num_layers, batch_size, baseline_path)
    # bert-score scores a pair with an empty side as 0, but its empty-text path calls a tokenizer
    # method that transformers 5 removed, so such pairs get their 0 (rescaled like any score) here.
    scored = [i for i, (p, r) in enumerate(zip(predictions, references, strict=True)) if p.strip() and r.strip()]
    empty = [0.0, 0.0, 0.0]
    if baseline_path is not None:
        empty = [(0.0 - b) / (1.0 - b) for b in scorer.baseline_vals.tolist()]
    totals = [e * (len(predictions) - len(scored)) for e in empty]
    if scored:
        prf = scorer.score([predictions[i] for i in scored], [references[i] for i in scored],
                           batch_size=batch_size)
        totals = [t + s.sum().item() for t, s in zip(totals, prf, strict=True)]
    return {key: 100.0 * total / len(predictions)
            for key, total in zip(("bertscore_p", "bertscore_r", "bertscore_f1"), totals, strict=True)}


def bertscore_baseline_file(model: str) -> Path | None:
    """The rescale baseline bert-score ships for `model` (by its name: roberta-large, ...), if any."""
    import bert_score

    shipped = Path(bert_score.__file__).parent / "rescale_baseline" / "en"
    path = shipped / f"{model.rstrip('/').split('/')[-1]}.tsv"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in shipped.glob("*.tsv")))
        raise PipelineError(f"bert-score ships no rescale baseline for {model!r} (it has: {known}); "
                            "set evaluate.bertscore_baseline or evaluate.bertscore_rescale: false")
    return path


def bert_scorer(model: str, num_layers: int | None, batch_size: int, baseline: Path | None = None):
    """bert-score's BERTScorer for `model` (a name embedding_model_path resolves) at `num_layers` (None: all),
    rescaled with the `baseline` file when one is given; a one-line PipelineError when it cannot load."""
    from bert_score import BERTScorer
    from transformers import AutoConfig

    path = embedding_model_path(model)
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
    if looks_local and not (Path(path) / "config.json").exists():
        raise PipelineError(f"BERTScore model {model!r} not found at {path}")
    try:
        depth = AutoConfig.from_pretrained(path).num_hidden_layers
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot load BERTScore model {model!r}: {_first_line(exc)}") from None
    layers = depth if num_layers is None else int(num_layers)
    if not 1 <= layers <= depth:
        raise PipelineError(f"BERTScore num_layers={layers} is outside 1..{depth} for model {model!r}")
    try:
        if baseline is None:
            return BERTScorer(model_type=path, num_layers=layers, batch_size=batch_size)
        return BERTScorer(model_type=path, num_layers=layers, batch_size=batch_size, lang="en",
                          rescale_with_baseline=True, baseline_path=str(baseline))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot load BERTScore model {model!r}: {_first_line(exc)}") from None


# ---- public entry points --------------------------------------------------------------------


def score_predictions(predictions: pl.DataFrame | Sequence[str], references: Sequence[str] | None = None,
                      *, bertscore: bool = True, bertscore_model: str | None = None,
                      num_layers: int | None = None, batch_size: int = 64, bertscore_rescale: bool = False,
                      bertscore_baseline: str | None = None) -> dict:
    """Every metric of the papers' tables, x100 and rounded, as one flat dict (plus `n`).

    Takes a DataFrame with `prediction` and `reference` columns, or two lists.
    """
    if isinstance(predictions, pl.DataFrame):
        if references is not None:
            raise PipelineError("give either a DataFrame or two lists, not both")
        missing = [c for c in ("prediction", "reference") if c not in predictions.columns]
        if predictions.height and missing:
            raise PipelineError(f"predictions table lacks column(s) {', '.join(missing)}")
        if not predictions.height:
            raise PipelineError("no predictions to score")
        predictions, references = predictions["prediction"].to_list(), predictions["reference"].to_list()
    preds, refs = list(predictions), list(references or [])
    check_pairs(preds, refs)
    scores = {**bleu(preds, refs), **distinct(preds), **rouge(preds, refs), **cider(preds, refs)}
    if bertscore:
        scores |= bertscore_prf(preds, refs, bertscore_model, num_layers, batch_size,
                                rescale=bertscore_rescale, baseline=bertscore_baseline)
    scores = {k: round(v, DECIMALS) for k, v in scores.items()}
    scores["n"] = len(preds)
    if bertscore:
        scores["bertscore_rescaled"] = bool(bertscore_rescale)  # raw and rescaled are different scales
    return scores


def score_file(path: str | os.PathLike, bertscore: bool = True, bertscore_model: str | None = None,
               num_layers: int | None = None, batch_size: int = 64, bertscore_rescale: bool = False,
               bertscore_baseline: str | None = None, epitome: str | os.PathLike | None = None,
               epitome_optional: bool = False) -> dict:
    """Score a predictions file (.parquet, .jsonl or .csv with `prediction` and `reference`).

    With `epitome` (a models/epitome directory) the EPITOME ER/IP/EX levels of the replies are added,
    read against the file's `context` column; `epitome_optional` skips them for a file without one.
    """
    df = read_predictions(path)
    if df.height == 0:
        raise PipelineError(f"{path}: no predictions to score")
    try:
        scores = score_predictions(df, bertscore=bertscore, bertscore_model=bertscore_model,
                                   num_layers=num_layers, batch_size=batch_size,
                                   bertscore_rescale=bertscore_rescale, bertscore_baseline=bertscore_baseline)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    if epitome is not None and not (epitome_optional and "context" not in df.columns):
        from empathy_pipeline.evaluation.epitome_levels import summarize_predictions

        scores |= summarize_predictions(df, epitome, what=str(path))
    return scores


def load_evaluate_module(name: str):
    """One of EVALUATE_MODULES as an `evaluate` module, loaded from this package (never the hub)."""
    import evaluate

    if name not in EVALUATE_MODULES:
        raise PipelineError(f"unknown metric module {name!r} (choose from {', '.join(EVALUATE_MODULES)})")
    return evaluate.load(str(METRIC_MODULES_DIR / name))


# ---- input checks ---------------------------------------------------------------------------


def check_pairs(predictions: Sequence, references: Sequence) -> None:
    """A one-line PipelineError unless there are predictions, as many as references, and all are text."""
    if len(predictions) == 0:
        raise PipelineError("no predictions to score")
    if len(predictions) != len(references):
        raise PipelineError(f"{len(predictions)} predictions but {len(references)} references")
    for column, values in (("prediction", predictions), ("reference", references)):
        bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if bad:
            raise PipelineError(f"{len(bad)} {column}(s) are not text (null or another type), first at row {bad[0]}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

