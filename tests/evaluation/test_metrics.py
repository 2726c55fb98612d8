"""The papers' automatic metrics against values worked out by hand, and on the papers' test file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import polars as pl
import pytest

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.evaluation.metrics import (
    RougeTokenizer,
    bertscore_prf,
    bleu,
    cider,
    distinct,
    rouge,
    score_file,
    score_predictions,
    tokenize,
)

# Two pairs whose corpus BLEU is worked out below.
PREDICTIONS = ["i am sorry .", "the the the the"]
REFERENCES = ["i am so sorry to hear that .", "the cat is on the mat"]


# ---- tokenisation ---------------------------------------------------------------------------


def test_tokenize_is_lowercased_treebank():
    assert tokenize("I can't believe it's 100% their fault.") == [
        "i", "ca", "n't", "believe", "it", "'s", "100", "%", "their", "fault", "."]
    assert tokenize("Really? Yes. Ok!") == ["really", "?", "yes", ".", "ok", "!"]


def test_paper_tokenised_text_round_trips(paper_data_dir):
    items = json.loads((paper_data_dir / "test_results.json").read_text())
    text = "i was not hit . it was 100 % their fault"
    assert tokenize(text) == text.split()
    responses = [it["response"] for it in items]
    same = sum(tokenize(r) == r.split() for r in responses)
    # The few that differ carry leftovers the papers' preprocessing did not split ("ok. i", "'around").
    assert same / len(responses) > 0.99, f"{len(responses) - same} of {len(responses)} responses change"


def test_rouge_tokenizer_drops_case_punctuation_and_articles():
    assert RougeTokenizer().tokenize("The cat's an 'A+' student!") == ["cat", "s", "student"]


# ---- BLEU -----------------------------------------------------------------------------------


def test_bleu_single_pair_by_hand():
    # hyp 4 tokens, ref 8: BP = exp(1 - 8/4); unigrams 4/4 match; bigrams: only "i am" of 3.
    s = bleu(PREDICTIONS[:1], REFERENCES[:1])
    assert s["bleu1"] == pytest.approx(100 * math.exp(-1), abs=1e-6)
    assert s["bleu2"] == pytest.approx(100 * math.exp(-1) * math.sqrt(1 * 1 / 3), abs=1e-6)


def test_bleu_is_corpus_level_with_clipping():
    # Counts pool over the corpus: unigrams (4 + clipped 2 of "the") / 8, bigrams (1 + 0) / 6,
    # lengths 8 vs 14 -> BP = exp(1 - 14/8). No 3-/4-gram matches: method1 puts epsilon
    # 1e-12 over their counts (2 + 2 trigrams, 1 + 1 four-grams).
    s = bleu(PREDICTIONS, REFERENCES)
    bp = math.exp(1 - 14 / 8)
    assert s["bleu1"] == pytest.approx(100 * bp * 6 / 8, abs=1e-6)
    assert s["bleu2"] == pytest.approx(100 * bp * math.sqrt(6 / 8 * 1 / 6), abs=1e-6)
    assert s["bleu3"] == pytest.approx(100 * bp * (6 / 8 * 1 / 6 * 1e-12 / 4) ** (1 / 3), rel=1e-6)
    assert s["bleu4"] == pytest.approx(100 * bp * (6 / 8 * 1 / 6 * 1e-12 / 4 * 1e-12 / 2) ** (1 / 4), rel=1e-6)


def test_bleu_no_brevity_penalty_for_long_hypothesis():
    s = bleu(["i am so sorry to hear that . really"], ["i am so sorry to hear that ."])
    assert s["bleu1"] == pytest.approx(100 * 8 / 9, abs=1e-6)


# ---- Distinct, ROUGE, CIDEr -----------------------------------------------------------------


def test_distinct_pools_ngrams_over_predictions():
    s = distinct(["i am sorry .", "I am happy"])
    assert s["dist1"] == pytest.approx(100 * 5 / 7)  # i am sorry . i am happy
    assert s["dist2"] == pytest.approx(100 * 4 / 5)  # "i am" twice


def test_rouge_by_hand_averaged_per_sample():
    s = rouge(["The cat sat on the mat.", "on the mat, a cat"],
              ["A cat was sitting on a mat!", "the cat is on the mat"])
    # 1: [cat sat on mat] vs [cat was sitting on mat]: R1 P 3/4 R 3/5; R2 1/3, 1/4; LCS 3.
    # 2: [on mat cat] vs [cat is on mat]: R1 P 1 R 3/4; R2 1/2, 1/3; LCS "on mat" 2/3, 2/4.
    def f(p, r):
        return 2 * p * r / (p + r)

    assert s["rouge1"] == pytest.approx(100 * (f(3 / 4, 3 / 5) + f(1, 3 / 4)) / 2)
    assert s["rouge2"] == pytest.approx(100 * (f(1 / 3, 1 / 4) + f(1 / 2, 1 / 3)) / 2)
    assert s["rougeL"] == pytest.approx(100 * (f(3 / 4, 3 / 5) + f(2 / 3, 2 / 4)) / 2)


def test_cider_closed_form_on_two_documents():
    # With 2 documents every n-gram weighs log 2 (df <= 1), so each n-gram order's clipped cosine
    # is a ratio of counts. Pair 1 identical: orders 1,2 give 1, orders 3,4 have no n-grams.
    # Pair 2 "stay calm" vs "stay safe": order 1 gives 1/2, order 2 gives 0.
    s = cider(["good luck", "stay calm"], ["good luck", "stay safe"])
    assert s["cider"] == pytest.approx(100 * (10 * 2 / 4 + 10 * 0.5 / 4) / 2)


def test_cider_length_penalty_and_clipping():
    # Pair 2 "stay safe stay safe" vs "stay safe": unigram tf 2 clipped to 1 -> 2/(sqrt8*sqrt2) = 1/2;
    # bigrams {stay safe: 2, safe stay: 1} vs {stay safe: 1} -> 1/sqrt5; the penalty uses the
    # bigram-count difference (3 - 1), a quirk of the coco-caption code: exp(-2^2 / (2 * 6^2)).
    s = cider(["good luck", "stay safe stay safe"], ["good luck", "stay safe"])
    second = 10 * (0.5 + 1 / math.sqrt(5)) * math.exp(-4 / 72) / 4
    assert s["cider"] == pytest.approx(100 * (5 + second) / 2)


# ---- whole-table scoring ----------------------------------------------------------------------


def test_score_predictions_flat_keys_rounded():
    s = score_predictions(PREDICTIONS, REFERENCES, bertscore=False)
    assert list(s) == ["bleu1", "bleu2", "bleu3", "bleu4", "dist1", "dist2", "rouge1", "rouge2", "rougeL",
                       "cider", "n"]
    assert s["bleu1"] == round(100 * math.exp(-0.75) * 0.75, 2)
    assert s["n"] == 2
    df = pl.DataFrame({"prediction": PREDICTIONS, "reference": REFERENCES})
    assert score_predictions(df, bertscore=False) == s


@pytest.mark.parametrize(("args", "message"), [
    (([], []), "no predictions to score"),
    ((["a"], ["a", "b"]), "1 predictions but 2 references"),
    ((["a", None], ["a", "b"]), "1 prediction(s) are not text"),
    ((pl.DataFrame({"prediction": [], "reference": []}),), "no predictions to score"),
])
def test_score_predictions_rejects_bad_input(args, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        score_predictions(*args, bertscore=False)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_score_file_each_format(tmp_path, suffix):
    df = pl.DataFrame({"sample_id": ["a", "b"], "prediction": PREDICTIONS, "reference": REFERENCES})
    path = tmp_path / f"predictions{suffix}"
    {".jsonl": df.write_ndjson, ".csv": df.write_csv, ".parquet": df.write_parquet}[suffix](path)
    assert score_file(path, bertscore=False) == score_predictions(PREDICTIONS, REFERENCES, bertscore=False)


# Empty, header-only and unreadable files, through `empathy score`: tests/stages/test_edges.py.
@pytest.mark.parametrize(("name", "content", "message"), [
    ("no_reference.csv", "prediction,target\nhi,hello\n", "missing column"),
    ("null_prediction.jsonl", '{"prediction": null, "reference": "hi"}\n', "not text"),
])
def test_score_file_errors_are_one_line_with_the_path(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PipelineError, match=message) as err:
        score_file(path, bertscore=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_score_file_empty_parquet(tmp_path):
    path = tmp_path / "empty.parquet"
    pl.DataFrame({"prediction": [], "reference": []}, schema={"prediction": pl.String, "reference": pl.String}
                 ).write_parquet(path)
    with pytest.raises(PipelineError, match="no predictions to score"):
        score_file(path, bertscore=False)


# ---- BERTScore and the papers' test file (real MiniLM) -------------------------------------------


def test_bertscore_missing_model_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="not found at") as err:
        bertscore_prf(["hi"], ["hi"], model=str(tmp_path / "no-such-model"))
    assert "\n" not in str(err.value)


def test_bertscore_layer_out_of_range():
    with pytest.raises(PipelineError, match="outside 1..6"):
        bertscore_prf(["hi"], ["hi"], num_layers=7)


@pytest.mark.slow
def test_bertscore_identity_paraphrase_and_unrelated():
    reference = "i am so sorry to hear about your dog ."
    same = bertscore_prf([reference], [reference], num_layers=6)
    assert same["bertscore_f1"] == pytest.approx(100, abs=0.01)
    paraphrase = bertscore_prf(["i am really sorry about your dog ."], [reference], num_layers=6)
    unrelated = bertscore_prf(["the stock market closed higher on tuesday ."], [reference], num_layers=6)
    assert paraphrase["bertscore_f1"] > unrelated["bertscore_f1"] + 20
    # An empty reply scores 0 (bert-score's rule) and does not break the batch.
    mixed = bertscore_prf(["", reference], [reference, reference], num_layers=6)
    assert mixed["bertscore_f1"] == pytest.approx(50, abs=0.01)


@pytest.mark.slow
def test_paper_responses_scored_against_themselves(paper_data_dir):
    items = json.loads((paper_data_dir / "test_results.json").read_text())[:200]
    responses = [it["response"] for it in items]
    s = score_predictions(responses, responses, bertscore=True, num_layers=6)
    for key in ("bleu1", "bertscore_p", "bertscore_r", "bertscore_f1"):
        assert s[key] == pytest.approx(100, abs=0.01), key
    # rouge-score gives F 0 to a pair with no n-grams, so ROUGE-n = share of responses with >= n words.
    words = [len(RougeTokenizer().tokenize(r)) for r in responses]
    for key, n in (("rouge1", 1), ("rouge2", 2), ("rougeL", 1)):
        assert s[key] == pytest.approx(100 * sum(w >= n for w in words) / len(words), abs=0.005), key
    # Self-BLEU-n is just under 100: nltk counts a response shorter than n tokens as 0 matches of
    # max(1, 0) = 1 n-gram, so p_k = sum(n-grams) / sum(max(1, n-grams)).
    lengths = [len(tokenize(r)) for r in responses]
    precisions = [sum(max(0, n - k + 1) for n in lengths) / sum(max(1, n - k + 1) for n in lengths)
                  for k in range(1, 5)]
    for order in range(1, 5):
        expected = 100 * math.exp(sum(math.log(p) for p in precisions[:order]) / order)
        assert s[f"bleu{order}"] == pytest.approx(expected, abs=0.005), order
    assert s["bleu4"] < 100
    # Identical pairs give cosine 1 for every n-gram order the response has, so CIDEr is
    # 10 * (orders present / 4), averaged; no n-gram occurs in all 200 responses (idf 0).
    expected_cider = 100 * 10 * sum(min(len(tokenize(r)), 4) / 4 for r in responses) / len(responses)
    assert s["cider"] == pytest.approx(expected_cider, abs=0.01)
    assert 0 < s["dist1"] < s["dist2"] < 100
    assert s["n"] == 200


@pytest.mark.slow
def test_evaluate_modules_load_offline_and_match():
    """The `evaluate` wrappers load from the package with the hub switched off and give the same numbers."""
    script = (
        "import json, sys\n"
        "from empathy_pipeline.evaluation import metrics\n"
        "p, r = json.loads(sys.argv[1])\n"
        "out = {}\n"
        "for name in metrics.EVALUATE_MODULES:\n"
        "    module = metrics.load_evaluate_module(name)\n"
        "    kw = {} if name == 'ed_distinct' else {'references': r}\n"
        "    out.update(module.compute(predictions=p, **kw))\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps([PREDICTIONS, REFERENCES])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    via_evaluate = json.loads(done.stdout.strip().splitlines()[-1])
    direct = score_predictions(PREDICTIONS, REFERENCES, bertscore=True, num_layers=6)
    # n and the bertscore_rescaled flag describe the run; every score must match
    scores = {k: v for k, v in direct.items() if k not in ("n", "bertscore_rescaled")}
    assert {k: round(v, 2) for k, v in via_evaluate.items()} == scores


RESCALE_PAIRS = (["i am so sorry to hear that .", "that is great news !", ""],
                 ["oh no , i am sorry .", "congratulations , you must be happy !", "what happened ?"])


def test_bertscore_rescaled_equals_bert_score_own_api(tmp_path):
    """--bertscore-rescale gives what bert-score's score(..., rescale_with_baseline=True) gives for the
    same baseline file (MiniLM has none shipped: the test writes one), empty pairs included."""
    from bert_score import score

    from empathy_pipeline.evaluation.metrics import bertscore_prf
    from empathy_pipeline.modeling.encoders import embedding_model_path

    baseline = tmp_path / "minilm.tsv"
    baseline.write_text("LAYER,P,R,F\n" + "".join(f"{i},{0.3 + 0.05 * i},{0.31 + 0.05 * i},{0.305 + 0.05 * i}\n"
                                                   for i in range(7)))
    preds, refs = RESCALE_PAIRS
    ours = bertscore_prf(preds, refs, "all-minilm-l6-v2", num_layers=6, rescale=True, baseline=baseline)
    raw = bertscore_prf(preds, refs, "all-minilm-l6-v2", num_layers=6)
    p, r, f = score(preds[:2], refs[:2], model_type=embedding_model_path("all-minilm-l6-v2"), num_layers=6,
                    lang="en", rescale_with_baseline=True, baseline_path=str(baseline))
    b_f = 0.305 + 0.05 * 6
    empty_f = (0 - b_f) / (1 - b_f)  # the empty pair: raw 0, rescaled like any score
    assert ours["bertscore_f1"] == pytest.approx(100 * (f.sum().item() + empty_f) / 3, abs=1e-4)
    assert ours["bertscore_p"] == pytest.approx(100 * (p.sum().item() + (0 - 0.6) / 0.4) / 3, abs=1e-4)
    assert ours["bertscore_f1"] == pytest.approx(100 * ((raw["bertscore_f1"] / 100) - b_f) / (1 - b_f), abs=1e-4)


def test_rescale_baseline_shipped_for_roberta_large_and_none_for_minilm():
    from empathy_pipeline.evaluation.metrics import bertscore_baseline_file

    assert bertscore_baseline_file("roberta-large").read_text().startswith("LAYER,P,R,F")
    with pytest.raises(PipelineError, match="bert-score ships no rescale baseline for 'all-minilm-l6-v2'"):
        bertscore_baseline_file("all-minilm-l6-v2")


def test_metrics_say_whether_bertscore_is_rescaled():
    preds, refs = RESCALE_PAIRS
    assert score_predictions(preds, refs, bertscore_model="all-minilm-l6-v2")["bertscore_rescaled"] is False
    assert "bertscore_rescaled" not in score_predictions(preds, refs, bertscore=False)
