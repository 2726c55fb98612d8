"""EPITOME empathy levels (Sharma et al., EMNLP 2020): three level classifiers and their summaries.

EPITOME's Reddit portion labels (seeker post, response) pairs 0/1/2 (none / weak / strong) for
three mechanisms: Emotional Reactions (ER), Interpretations (IP) and Explorations (EX). The
authors' RoBERTa bi-encoders are not released, so the classifiers are trained here on the
embedded encoder (MiniLM):

- `frozen_head`: the encoder stays frozen; a pair is [u, v, |u-v|, u*v] of the unit-normalised
  embeddings u (seeker post) and v (response), and one multinomial logistic regression per
  mechanism reads it. The default: encoding the ~6,000 texts dominates (a minute or two on 2 idle
  cores), the heads fit in seconds.
- `fine_tune`: the encoder itself is fine-tuned (`epochs` of AdamW), with one linear head per
  mechanism on the same pair features. Far slower on CPU; measured once against `frozen_head`
  with the steps a loaded 2-core box managed in 25 minutes, it scored below it.

Both save to one directory (config.json + heads.npz, and the fine-tuned encoder for `fine_tune`),
read back by `EpitomeClassifier.load`, which the evaluation uses to put the level mean and level
distribution of every model's replies into its metrics. The classifiers learn Reddit's
peer-support register; ED replies are a different domain (short, paper-normalised dialogue turns),
so the levels on ED are indicative, not calibrated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path
from empathy_pipeline.data.epitome import LEVELS, MECHANISMS, group_split, load_pairs
from empathy_pipeline.modeling.encoders import encode

CONFIG_FILE, HEADS_FILE, ENCODER_DIR = "config.json", "heads.npz", "encoder"
DECIMALS = 2


# ---- features and heads --------------------------------------------------------------------------

def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[u, v, |u-v|, u*v]: the pair's two embeddings and how they relate (InferSent / SBERT style)."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def encode_pairs(model, contexts: Sequence[str], replies: Sequence[str], batch_size: int = 64) -> np.ndarray:
    if len(contexts) != len(replies):
        raise PipelineError(f"EPITOME levels: {len(contexts)} contexts but {len(replies)} replies")
    return pair_features(encode(model, contexts, batch_size).astype(np.float32),
                         encode(model, replies, batch_size).astype(np.float32))


def fit_heads(features: np.ndarray, labels: dict[str, np.ndarray], c: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One multinomial logistic regression per mechanism, as (coef [3, d], intercept [3]).

    Classes are weighted by inverse frequency: level 1 is rare (IP 4 %, EX 3 %) and macro-F1 counts
    it as much as the others.
    """
    from sklearn.linear_model import LogisticRegression

    heads = {}
    for mechanism, y in labels.items():
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
        clf.fit(features, y)
        coef, intercept = np.zeros((len(LEVELS), features.shape[1])), np.full(len(LEVELS), -np.inf)
        for row, level in enumerate(clf.classes_):  # a level absent from training is never predicted
            coef[level], intercept[level] = clf.coef_[row], clf.intercept_[row]
        heads[mechanism] = (coef.astype(np.float32), intercept.astype(np.float32))
    return heads


def predict_heads(heads: dict[str, tuple[np.ndarray, np.ndarray]], features: np.ndarray) -> dict[str, list[int]]:
    return {m: np.argmax(features @ coef.T + intercept, axis=1).astype(int).tolist() for m, (coef, intercept) in heads.items()}


def scores(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 over the three levels, x100 (the EPITOME paper's scale)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": round(100 * accuracy_score(truth, predicted), DECIMALS),
            "macro_f1": round(100 * f1_score(truth, predicted, labels=list(LEVELS), average="macro", zero_division=0), DECIMALS)}


# ---- the saved classifier ------------------------------------------------------------------------

@dataclass
class EpitomeClassifier:
    """The encoder and one head per mechanism, as saved in models/epitome/."""

    model: object
    heads: dict[str, tuple[np.ndarray, np.ndarray]]
    config: dict

    @classmethod
    def load(cls, directory: str | Path) -> EpitomeClassifier:
        from empathy_pipeline.modeling.encoders import load_embedder

        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / HEADS_FILE).is_file():
            raise PipelineError(f"{directory}: not an EPITOME classifier directory (no {CONFIG_FILE}/{HEADS_FILE}; "
                                "run the train_epitome stage)")
        config = json.loads((directory / CONFIG_FILE).read_text())
        arrays = np.load(directory / HEADS_FILE)
        heads = {m: (arrays[f"{m}_coef"], arrays[f"{m}_intercept"]) for m in MECHANISMS}
        encoder = str(directory / ENCODER_DIR) if config["method"] == "fine_tune" else config["encoder"]
        return cls(load_embedder(encoder, device="cpu"), heads, config)

    def save(self, directory: str | Path) -> None:
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            if self.config["method"] == "fine_tune":
                self.model.save(str(tmp / ENCODER_DIR))
            np.savez(tmp / HEADS_FILE, **{f"{m}_{part}": array for m, (coef, intercept) in self.heads.items()
                                          for part, array in (("coef", coef), ("intercept", intercept))})
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config, indent=2) + "\n")

    def levels(self, contexts: Sequence[str], replies: Sequence[str], batch_size: int = 64) -> dict[str, list[int]]:
        """{ER: [...], IP: [...], EX: [...]}: a level 0/1/2 per (context, reply) pair."""
        if not replies:
            return {m: [] for m in MECHANISMS}
        return predict_heads(self.heads, encode_pairs(self.model, contexts, replies, batch_size))


def levels(directory: str | Path, contexts: Sequence[str], replies: Sequence[str]) -> dict[str, list[int]]:
    """The EPITOME levels of each reply to its context with the classifier saved in `directory`."""
    return EpitomeClassifier.load(directory).levels(contexts, replies)


def level_summary(levels: dict[str, Sequence[int]]) -> dict[str, float]:
    """Flat metric keys per mechanism: the mean level (0-2) and the share of replies at each level (%).

    epitome_er_mean, epitome_er_pct0, epitome_er_pct1, epitome_er_pct2, then ip and ex.
    """
    summary: dict[str, float] = {}
    for mechanism in MECHANISMS:
        values = np.asarray(levels[mechanism], dtype=float)
        if values.size == 0:
            raise PipelineError("EPITOME levels: no replies to summarise")
        key = f"epitome_{mechanism.lower()}"
        summary[f"{key}_mean"] = round(float(values.mean()), DECIMALS)
        for level in LEVELS:
            summary[f"{key}_pct{level}"] = round(100 * float((values == level).mean()), DECIMALS)
    return summary


def last_turns(contexts: Sequence[Sequence[str] | str | None]) -> list[str]:
    """The turn each reply answers: the last turn of a list context (the speaker's), or a string as it is."""
    out = []
    for i, context in enumerate(contexts):
        if isinstance(context, str):
            out.append(context)
        elif context is not None and len(context) and isinstance(context[-1], str):
            out.append(context[-1])
        else:
            raise PipelineError(f"context at row {i} is empty or not text")
    return out


# ---- training (the train_epitome stage) -----------------------------------------------------------

FINE_TUNE_MAX_TOKENS = 128  # CPU time: most responses are far shorter (median ~35 word pieces)
FINE_TUNE_BATCH = 16


def fine_tune(model, contexts: Sequence[str], replies: Sequence[str], labels: dict[str, np.ndarray], p) -> dict:
    """Fine-tune the encoder itself, with one linear head per mechanism on the same pair features.

    Class-weighted cross-entropy summed over the three mechanisms (one shared encoder, as the
    mechanisms share most of what they read); AdamW for `p.epochs` epochs. Returns the heads in the
    frozen-head form, so prediction is the same code for both methods.
    """
    import torch

    torch.manual_seed(p.seed)
    model.max_seq_length = min(model.max_seq_length, FINE_TUNE_MAX_TOKENS)
    dim = model.get_embedding_dimension()
    head = torch.nn.Linear(4 * dim, len(MECHANISMS) * len(LEVELS))
    optimiser = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=p.learning_rate)
    y = torch.tensor(np.stack([labels[m] for m in MECHANISMS], axis=1))
    weights = [torch.tensor(len(y) / (len(LEVELS) * np.maximum(np.bincount(labels[m], minlength=len(LEVELS)), 1)),
                            dtype=torch.float32) for m in MECHANISMS]

    tokenize = getattr(model, "preprocess", None) or model.tokenize  # newer sentence-transformers renamed it

    def embed(texts: list[str]):
        return torch.nn.functional.normalize(model(tokenize(texts))["sentence_embedding"], dim=1)

    model.train()
    rng = np.random.default_rng(p.seed)
    for _ in range(p.epochs):
        order = rng.permutation(len(replies))
        for start in range(0, len(replies), FINE_TUNE_BATCH):
            idx = order[start:start + FINE_TUNE_BATCH]
            u, v = embed([contexts[i] for i in idx]), embed([replies[i] for i in idx])
            logits = head(torch.cat([u, v, (u - v).abs(), u * v], dim=1)).view(-1, len(MECHANISMS), len(LEVELS))
            loss = sum(torch.nn.functional.cross_entropy(logits[:, k], y[idx, k], weight=weights[k])
                       for k in range(len(MECHANISMS)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    weight, bias = head.weight.detach().numpy(), head.bias.detach().numpy()
    n = len(LEVELS)
    return {m: (weight[k * n:(k + 1) * n].astype(np.float32), bias[k * n:(k + 1) * n].astype(np.float32))
            for k, m in enumerate(MECHANISMS)}


def majority_baseline(train: pl.DataFrame, held_out: pl.DataFrame) -> dict[str, dict[str, float]]:
    """What always answering the training set's most common level scores on the held-out pairs."""
    out = {}
    for mechanism in MECHANISMS:
        majority = int(train[mechanism].mode().sort().first())
        out[mechanism] = scores(held_out[mechanism].to_list(), [majority] * held_out.height)
    return out


def train(source: str | Path, p) -> tuple[EpitomeClassifier, dict]:
    """Load, dedupe and split EPITOME, fit the classifier on the train side and score it on the held-out side.

    `p` is the params `epitome` section. Returns the classifier and the metrics (held-out accuracy
    and macro-F1 per mechanism beside the majority-class baseline, the split sizes, the dedupe counts).
    """
    from empathy_pipeline.modeling.encoders import load_embedder

    pairs, stats = load_pairs(source)
    train_rows, held_out = group_split(pairs, p.held_out_fraction, p.seed)
    model = load_embedder(p.encoder, device="cpu")
    labels = {m: train_rows[m].to_numpy() for m in MECHANISMS}
    if p.method == "fine_tune":
        heads = fine_tune(model, train_rows["seeker_post"].to_list(), train_rows["response_post"].to_list(), labels, p)
    else:
        x_train = encode_pairs(model, train_rows["seeker_post"].to_list(), train_rows["response_post"].to_list(), p.batch_size)
        heads = fit_heads(x_train, labels, p.c, p.seed)
    x_held = encode_pairs(model, held_out["seeker_post"].to_list(), held_out["response_post"].to_list(), p.batch_size)
    predicted = predict_heads(heads, x_held)
    baseline = majority_baseline(train_rows, held_out)
    metrics: dict = {"method": p.method, "encoder": p.encoder, "features": "[u, v, |u-v|, u*v]",
                     "n_train": train_rows.height, "n_held_out": held_out.height,
                     "seeker_posts_train": train_rows["sp_id"].n_unique(),
                     "seeker_posts_held_out": held_out["sp_id"].n_unique(), **stats}
    for mechanism in MECHANISMS:
        key = mechanism.lower()
        got = scores(held_out[mechanism].to_list(), predicted[mechanism])
        metrics |= {f"{key}_accuracy": got["accuracy"], f"{key}_macro_f1": got["macro_f1"],
                    f"{key}_majority_accuracy": baseline[mechanism]["accuracy"],
                    f"{key}_majority_macro_f1": baseline[mechanism]["macro_f1"]}
    config = {"method": p.method, "encoder": p.encoder, "features": "[u, v, |u-v|, u*v] of unit-normalised embeddings",
              "mechanisms": list(MECHANISMS), "levels": list(LEVELS), "c": p.c, "seed": p.seed,
              "trained_on": "EPITOME Reddit (Sharma et al., EMNLP 2020)", "n_train": train_rows.height,
              "held_out": {m: {"accuracy": metrics[f"{m.lower()}_accuracy"], "macro_f1": metrics[f"{m.lower()}_macro_f1"]}
                           for m in MECHANISMS}}
    return EpitomeClassifier(model, heads, config), metrics


def summarize_predictions(table: pl.DataFrame, directory: str | Path, what: str = "predictions") -> dict[str, float]:
    """The level summary of a predictions table's replies, each read against the turn it answers.

    `context` is a list of turns (the speaker's last one is used) or one string (used whole).
    """
    missing = [c for c in ("context", "prediction") if c not in table.columns]
    if missing:
        raise PipelineError(f"{what}: no {' or '.join(missing)} column, which the EPITOME levels read "
                            "(predictions written before the context column existed: rerun evaluate)")
    if table.height == 0:
        raise PipelineError(f"{what}: no predictions to read the EPITOME levels of")
    replies = table["prediction"].to_list()
    bad = [i for i, r in enumerate(replies) if not isinstance(r, str)]
    if bad:
        raise PipelineError(f"{what}: prediction at row {bad[0]} is not text")
    return level_summary(EpitomeClassifier.load(directory).levels(last_turns(table["context"].to_list()), replies))
