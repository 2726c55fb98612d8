"""The EPITOME level judge and the pairwise judge: parsers, tallies, fairness rules, and the commands.

Judges with a known behaviour are served for real: backend doubles whose `generate` answers by a
fixed rule (a judge's behaviour is what is under test), a chat-completions server on 127.0.0.1
behind the real openai backend, and the embedded SmolLM2 through the two commands. Human A/B
sheets are made by the real `ab.export` and filled as a rater would fill sheet.csv.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import SHARED_DATA
from sklearn.metrics import cohen_kappa_score

from empathy_pipeline.analysis import ab
from empathy_pipeline.analysis.ab import load_side
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.judges import levels, pairwise
from empathy_pipeline.judges.levels import agreement, format_figures, held_out_pairs, judge_levels
from empathy_pipeline.judges.levels import run as run_levels
from empathy_pipeline.judges.pairwise import CRITERIA, combine, shared_base_warnings
from empathy_pipeline.judges.pairwise import run as run_pairs
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import Sampling, request_seed

EMPATHY = str(Path(sys.executable).parent / "empathy")
EPITOME = SHARED_DATA / "epitome"
_RESPONSES = re.compile(r"Response 1:\n\n(.*?)\n\nResponse 2:\n\n(.*?)\n\nWhich response", re.DOTALL)


# ---- judges with a known behaviour -----------------------------------------------------------------

class RuleJudge:
    """A backend whose reply to each chat is rule(user message): the judge's behaviour under test.

    With `sampled_rule`, a sampled call (temperature > 0: a retry) answers by that rule instead.
    `asked` records (temperature, seed, user message) of every chat.
    """

    name = "rule"

    def __init__(self, rule, sampled_rule=None):
        self.rule, self.sampled_rule, self.calls, self.asked = rule, sampled_rule or rule, 0, []

    def generate(self, chats, sampling, seeds=None):
        self.calls += len(chats)
        users = [next(m["content"] for m in chat if m["role"] == "user") for chat in chats]
        self.asked += [(sampling.temperature, seed, user) for seed, user in zip(seeds or [None] * len(chats), users)]
        rule = self.rule if sampling.temperature == 0 else self.sampled_rule
        return [rule(user) for user in users]


def shown(prompt: str) -> tuple[str, str]:
    """(Response 1, Response 2) of a pairwise prompt."""
    first, second = _RESPONSES.search(prompt).groups()
    return first, second


def prefers_longer(prompt: str) -> str:
    first, second = shown(prompt)
    return "1" if len(first.split()) >= len(second.split()) else "2"  # equal length: the first shown


def write_predictions(path: Path, model: str, replies: list[str], contexts: list[list[str]] | None = None,
                      id_prefix: str = "s") -> Path:
    data = {"sample_id": [f"{id_prefix}{i}" for i in range(len(replies))], "model": [model] * len(replies),
            "prediction": replies, "reference": ["ref"] * len(replies)}
    if contexts is not None:
        data["context"] = contexts
    pl.DataFrame(data).write_parquet(path)
    return path


@pytest.fixture
def two_models(tmp_path):
    """Ten items; A's reply is longer in the first four, shorter in the next four, equal in the last two."""
    contexts = [[f"my dog ran away on day {i} .", "oh no , did you find him ?", "not yet ."] for i in range(10)]
    short = [f"sorry {i} ." for i in range(10)]
    long = [f"i am so sorry to hear that , it must be really hard {i} ." for i in range(10)]
    a = long[:4] + short[4:8] + [f"same length {i}" for i in range(2)]
    b = short[:4] + long[4:8] + [f"equal words {i}" for i in range(2)]
    return (load_side(str(write_predictions(tmp_path / "a.parquet", "model_a", a, contexts))),
            load_side(str(write_predictions(tmp_path / "b.parquet", "model_b", b, contexts))))


def pairs(a, b, judge, tmp_path, **kw):
    return run_pairs(a, b, judge, judge="stub-judge", backend_name="double", n=None, seed=0, contexts=None,
                     repo=tmp_path, **kw)


# ---- the pairwise judge ----------------------------------------------------------------------------

def test_a_judge_that_always_prefers_the_first_reply_shown_prefers_neither_model(two_models, tmp_path):
    judge = RuleJudge(lambda prompt: "1")
    result, verdicts = pairs(*two_models, judge, tmp_path)
    assert judge.calls == 10 * len(CRITERIA) * 2  # every item, criterion and order
    for t in result.tallies:
        assert (t.a_wins, t.ties, t.b_wins, t.skipped) == (0, 10, 0, 0)
        assert result.consistency[t.criterion] == 0.0
    assert verdicts["verdict"].unique().to_list() == ["tie"]
    text = result.text()
    assert "| coherence | 0 (0.0%) | 10 (100.0%) | 0 (0.0%) | 10 |" in text
    assert "| coherence | 0 | 0.0% |" in text


def test_identical_replies_are_all_ties_whatever_the_judge(tmp_path):
    contexts = [["i lost my job today ."]] * 6
    replies = ["that is awful , i am sorry .", "oh no !", "what will you do now ?"] * 2
    a = load_side(str(write_predictions(tmp_path / "a.parquet", "a", replies, contexts)))
    b = load_side(str(write_predictions(tmp_path / "b.parquet", "b", replies, contexts)))
    for rule in (lambda p: "1", lambda p: "2", prefers_longer, lambda p: "tie"):
        result, _ = pairs(a, b, RuleJudge(rule), tmp_path)
        assert [(t.a_wins, t.ties, t.b_wins) for t in result.tallies] == [(0, 6, 0)] * len(CRITERIA)


def test_unparsed_replies_are_counted_apart_and_never_win(two_models, tmp_path):
    # Prefers A whenever A is shown first; when B is shown first it rambles on the first five items.
    def rule(prompt: str) -> str:
        first, second = shown(prompt)
        a_first = first in two_models[0].table["prediction"].to_list()
        item = int(re.search(r"\d+", first + second).group()) if re.search(r"\d+", first + second) else 0
        if a_first:
            return "1"
        return "Well, it depends on the speaker." if item < 5 else "2"

    result, verdicts = pairs(*two_models, RuleJudge(rule), tmp_path)
    for t in result.tallies:
        assert t.skipped > 0
        assert t.skipped == verdicts.filter(pl.col("criterion") == t.criterion)["verdict"].null_count()
        assert t.a_wins + t.ties + t.b_wins + t.skipped == 10
        assert t.b_wins == 0
    rows = result.as_json()["criteria"]
    assert all(r["unparsed"] == r["skipped"] and r["n"] == 10 - r["unparsed"] for r in rows)
    # an unparsed answer in either order leaves the item without a verdict
    assert combine(None, "1") is None and combine("2", None) is None


def test_a_judge_that_prefers_the_longer_reply_shows_in_the_length_bins(two_models, tmp_path):
    result, _ = pairs(*two_models, RuleJudge(prefers_longer), tmp_path)
    assert list(result.length_bins) == list(CRITERIA)
    for bins in result.length_bins.values():
        assert bins["A longer"] == {"items": 4, "a_wins": 4, "ties": 0, "b_wins": 0, "unparsed": 0, "a_win_rate": 1.0}
        assert bins["B longer"]["a_win_rate"] == 0.0 and bins["B longer"]["b_wins"] == 4
        assert bins["similar"]["ties"] == 2  # equal length: it falls back to the position, which flips
    assert result.mean_words["a"] > 0 and result.mean_words["b"] > 0
    assert "| coherence | 0.0% (4) | 0.0% (2) | 100.0% (4) |" in result.text()


@contextmanager
def served_judge(answer, monkeypatch):
    """The real openai backend, talking to a chat-completions server on 127.0.0.1 whose model replies
    answer(user message, request body); yields (backend, the request bodies seen)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            user = next(m["content"] for m in body["messages"] if m["role"] == "user")
            data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": answer(user, body)}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    try:
        yield load_backend({"backend": "openai", "base_url_env": "JUDGE_URL", "api_key_env": "JUDGE_KEY",
                            "concurrency": 4, "max_retries": 0, "timeout": 10, "show_progress": False},
                           model="served-judge"), seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_judge_served_over_http_through_the_openai_backend(two_models, tmp_path, monkeypatch):
    with served_judge(lambda user, body: prefers_longer(user), monkeypatch) as (backend, _):
        result, _ = pairs(*two_models, backend, tmp_path)
    for t in result.tallies:
        assert (t.a_wins, t.ties, t.b_wins) == (4, 2, 4)
        assert result.consistency[t.criterion] == 0.8  # the two equal-length items flip


def test_shared_base_model_warning_follows_the_evaluate_entries_and_params(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    foreach:\n"
        "      synth: {weights: models/synth, base: models/synth_base}\n"
        "      moe: {weights: models/moe, base: models/efficient_base}\n")
    for name, weights in (("synth_base", b"one"), ("efficient_base", b"two")):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model.safetensors").write_bytes(weights)
    synth, moe = (load_side(str(write_predictions(tmp_path / f"{m}.parquet", m, ["x"]))) for m in ("synth", "moe"))

    def warned(judge: str) -> list[str]:
        return [w.split(" and ")[1].split(" ")[0] for w in shared_base_warnings(judge, (synth, moe), tmp_path)]

    (tmp_path / "params.yaml").write_text("models:\n  synth_base: qwen-7b\n  efficient_base: llama-8b\n")
    assert warned("models/synth_base") == ["A"]          # synth derives from models/synth_base
    assert warned("models/efficient_base") == ["B"]
    assert warned("gpt-4o") == []                        # a served judge of another family
    assert warned("qwen-7b") == ["A"]                    # the hub name the base was made from
    (tmp_path / "params.yaml").write_text("models:\n  synth_base: smollm2\n  efficient_base: smollm2\n")
    assert warned("models/synth_base") == ["A", "B"]     # both bases are the same model


def test_missing_or_unusable_prediction_files_are_one_line_errors(tmp_path):
    (tmp_path / "params.yaml").write_text("llm:\n  backend: transformers\n")
    write_predictions(tmp_path / "ok.parquet", "ok", ["hello"], [["hi"]])
    for args in (("--a", "nosuch", "--b", "ok.parquet"), ("--a", "ok.parquet", "--b", "missing.parquet")):
        out = subprocess.run([EMPATHY, "judge-pairs", *args], cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
        assert "Traceback" not in out.stderr
    pl.DataFrame({"sample_id": ["s0"], "prediction": ["hey"], "reference": ["r"]}).write_parquet(tmp_path / "noctx.parquet")
    a, b = load_side(str(tmp_path / "noctx.parquet")), load_side(str(tmp_path / "noctx.parquet"))
    with pytest.raises(PipelineError, match="context"):
        pairs(a, b, RuleJudge(lambda p: "1"), tmp_path)


# ---- judge vs human on the same items ---------------------------------------------------------------
# Twelve items; per item, what the judge says and what the rater wrote, both about model A:
# items 0-9 carry a verdict from both, item 10 the judge cannot answer, item 11 the rater left blank.
JUDGE_SAYS = ["a", "a", "a", "b", "b", "tie", "tie", "a", "b", "tie", None, "a"]
HUMAN_SAYS = ["a", "a", "b", "b", "tie", "tie", "a", "a", "b", "b", "b", None]
# By hand on items 0-9 (judge rows x human columns, a/tie/b): a 3/0/1, tie 1/1/1, b 0/1/2.
# Observed agreement (3+1+2)/10 = 0.6. Marginals: judge a 4, tie 3, b 3; human a 4, tie 2, b 4;
# chance agreement (4*4 + 3*2 + 3*4)/100 = 0.34; kappa = (0.6 - 0.34) / (1 - 0.34) = 0.26/0.66 = 0.3939.
HAND_KAPPA = 0.3939


@pytest.fixture
def rated_pair(tmp_path):
    """Predictions of two models on 12 items, and a judge that says JUDGE_SAYS in both orders."""
    contexts = [[f"i could not sleep before exam {i} .", "that sounds stressful ."] for i in range(12)]
    a = load_side(str(write_predictions(tmp_path / "a.parquet", "model_a", [f"reply a {i} ." for i in range(12)], contexts)))
    b = load_side(str(write_predictions(tmp_path / "b.parquet", "model_b", [f"reply b {i} ." for i in range(12)], contexts)))

    def says(prompt: str) -> str:
        first, _ = shown(prompt)
        side, item = re.match(r"reply (a|b) (\d+)", first).groups()
        verdict = JUDGE_SAYS[int(item)]
        if verdict is None:
            return "Hard to say, it depends on the speaker."
        return "tie" if verdict == "tie" else "1" if verdict == side else "2"

    return a, b, RuleJudge(says)


def fill_sheet(out_dir: Path, says: list[str | None], *, swapped: bool = False) -> tuple[Path, Path]:
    """Write each item's verdict about A into every criterion of the exported sheet.csv, as a rater would."""
    key = {row["item"]: row for row in csv.DictReader((out_dir / "key.csv").open(encoding="utf-8", newline=""))}
    with (out_dir / "sheet.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        verdict = says[int(key[row["item"]]["sample_id"][1:])]
        if verdict is not None and swapped:  # the sheet's A is the judge's B
            verdict = {"a": "b", "b": "a", "tie": "tie"}[verdict]
        a_is_1 = key[row["item"]]["reply_1"] == "A"
        cell = "" if verdict is None else "tie" if verdict == "tie" else "1" if (verdict == "a") == a_is_1 else "2"
        row.update(dict.fromkeys(ab.CRITERIA, cell))
    filled = out_dir / "sheet-filled.csv"
    filled.write_text(ab.rows_to_csv(rows, ab.SHEET_COLUMNS), encoding="utf-8", newline="")
    return filled, out_dir / "key.csv"


def test_judge_and_human_agreement_on_the_shared_items_matches_the_hand_computed_kappa(rated_pair, tmp_path):
    a, b, judge = rated_pair
    ab.export(str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), 12, 0, tmp_path / "ab", contexts=None)
    result, _ = pairs(a, b, judge, tmp_path, human=fill_sheet(tmp_path / "ab", HUMAN_SAYS))
    human = result.human
    assert (human.sheet_items, human.shared_items) == (12, 12)
    for row in human.criteria:
        assert (row["n"], row["agreement"], row["kappa"]) == (10, 0.6, HAND_KAPPA)
        assert row["judge"] == {"a_wins": 4, "ties": 3, "b_wins": 3}
        assert row["human"] == {"a_wins": 4, "ties": 2, "b_wins": 4}
        assert (row["judge_unparsed"], row["human_blank"]) == (1, 1)
    # the judge's own tally (all 12 items) and the retried replies of the item it cannot answer
    assert all((t.a_wins, t.ties, t.b_wins, t.skipped) == (5, 3, 3, 1) for t in result.tallies)
    assert result.replies["empathy"] == {"retried_replies": 2, "unparsed_replies": 2}
    assert "| empathy | 10 | 60.0% | 0.394 | 4 / 3 / 3 | 4 / 2 / 4 | 1 | 1 |" in result.text()
    assert result.as_json()["human"]["criteria"][0]["kappa"] == HAND_KAPPA

    # The same rater on a sheet exported the other way round (A and B swapped) agrees just as much.
    ab.export(str(tmp_path / "b.parquet"), str(tmp_path / "a.parquet"), 12, 0, tmp_path / "ba", contexts=None)
    swapped, _ = pairs(a, b, judge, tmp_path, human=fill_sheet(tmp_path / "ba", HUMAN_SAYS, swapped=True))
    assert swapped.human.criteria == human.criteria

    # A rater who says what the judge says agrees fully; kappa is 1.
    perfect, _ = pairs(a, b, judge, tmp_path, human=fill_sheet(tmp_path / "ab", JUDGE_SAYS))
    assert all((r["n"], r["agreement"], r["kappa"]) == (11, 1.0, 1.0) for r in perfect.human.criteria)


def test_export_and_judge_with_the_same_n_and_seed_see_the_same_items(rated_pair, tmp_path):
    a, b, judge = rated_pair
    # Predictions without a context column: both look the contexts up in the test split.
    split = tmp_path / "test.parquet"
    pl.DataFrame({"sample_id": [f"s{i}" for i in range(12)],
                  "context": [[f"i could not sleep before exam {i} .", "that sounds stressful ."] for i in range(12)]}
                 ).write_parquet(split)
    bare = [load_side(str(write_predictions(tmp_path / f"{m}.parquet", f"model_{m}", [f"reply {m} {i} ." for i in range(12)])))
            for m in ("a", "b")]
    ab.export(str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), 5, 3, tmp_path / "ab", contexts=split)
    result, _ = run_pairs(*bare, judge, judge="stub-judge", backend_name="double", n=5, seed=3, contexts=split,
                          repo=tmp_path, human=fill_sheet(tmp_path / "ab", HUMAN_SAYS))
    assert (result.items, result.human.sheet_items, result.human.shared_items) == (5, 5, 5)


def test_a_sheet_of_other_items_is_a_one_line_error_before_any_judge_call(rated_pair, tmp_path):
    a, b, judge = rated_pair
    contexts = [[f"i could not sleep before exam {i} .", "that sounds stressful ."] for i in range(12)]
    other = tmp_path / "other"
    other.mkdir()
    for model in ("model_a", "model_b"):  # the same two models, on test samples the judge does not see
        write_predictions(other / f"{model}.parquet", model, ["hi ."] * 12, contexts, id_prefix="x")
    ab.export(str(other / "model_a.parquet"), str(other / "model_b.parquet"), 12, 0, other / "ab", contexts=None)
    sheet, key = fill_sheet(other / "ab", ["tie"] * 12)
    with pytest.raises(PipelineError, match="none of its 12 rated item"):
        pairs(a, b, judge, tmp_path, human=(sheet, key))
    assert judge.calls == 0

    # Through the command: one line on stderr, no traceback (the judge model is never loaded).
    (tmp_path / "params.yaml").write_text("llm:\n  backend: transformers\n")
    out = subprocess.run([EMPATHY, "judge-pairs", "--a", "a.parquet", "--b", "b.parquet", "--n", "0",
                          "--human", str(sheet), str(key)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: ") and "none of its 12 rated item(s) is among the 12" in out.stderr

    # The same sample_ids with other contexts, or a sheet of other models, are errors too.
    for model in ("model_a", "model_b"):
        write_predictions(other / f"{model}.parquet", model, ["hi ."] * 12, [["something else ."]] * 12)
    ab.export(str(other / "model_a.parquet"), str(other / "model_b.parquet"), 12, 0, other / "ctx", contexts=None)
    with pytest.raises(PipelineError, match="sample_id s\\d+ shows another context"):
        pairs(a, b, judge, tmp_path, human=fill_sheet(other / "ctx", ["tie"] * 12))
    write_predictions(other / "model_c.parquet", "model_c", ["hi ."] * 12, contexts)
    ab.export(str(tmp_path / "a.parquet"), str(other / "model_c.parquet"), 12, 0, other / "ac", contexts=None)
    with pytest.raises(PipelineError, match="compares model_a \\(A\\) with model_c"):
        pairs(a, b, judge, tmp_path, human=fill_sheet(other / "ac", ["tie"] * 12))
    assert judge.calls == 0


# ---- retries of replies that did not parse ---------------------------------------------------------

def test_a_pairwise_reply_that_does_not_parse_is_asked_again_sampled_and_counted(two_models, tmp_path):
    a_replies = set(two_models[0].table["prediction"].to_list())

    def a_position(prompt: str) -> str:
        return "1" if shown(prompt)[0] in a_replies else "2"

    # Greedy, the judge rambles whenever A is shown first; sampled (a retry) it names A.
    judge = RuleJudge(lambda p: "Hard to say." if a_position(p) == "1" else a_position(p), sampled_rule=a_position)
    result, verdicts = pairs(*two_models, judge, tmp_path)
    assert judge.calls == 10 * len(CRITERIA) * 3  # both orders, and one retry of the A-first order
    retries = [(t, seed, user) for t, seed, user in judge.asked if t > 0]
    assert {t for t, _, _ in retries} == {0.7} and len(retries) == 10 * len(CRITERIA)
    expected = {request_seed(0, f"s{i}:{c}:a_first#retry1") for i in range(10) for c in CRITERIA}
    assert {seed for _, seed, _ in retries} == expected  # seeded per item, criterion and order
    for t in result.tallies:
        assert (t.a_wins, t.skipped) == (10, 0)  # after the retry, A in both orders
        assert result.replies[t.criterion] == {"retried_replies": 10, "unparsed_replies": 0}
    assert verdicts["attempts_a_first"].unique().to_list() == [2] and verdicts["attempts_b_first"].unique().to_list() == [1]
    row = result.as_json()["criteria"][0]
    assert (row["retried_replies"], row["unparsed_replies"], row["unparsed"]) == (10, 0, 0)
    assert "| coherence | 0 | 100.0% | 10 | 0 |" in result.text()

    # No retries: the same judge leaves every item unparsed, and says so.
    result, _ = pairs(*two_models, RuleJudge(judge.rule, sampled_rule=a_position), tmp_path, retries=0)
    assert all(t.skipped == 10 and t.n == 0 for t in result.tallies)
    assert result.replies["coherence"] == {"retried_replies": 0, "unparsed_replies": 10}


def test_a_served_level_judge_that_first_rambles_is_retried_over_http(epitome_dir, monkeypatch):
    # Greedy, the served judge writes prose; sampled, it answers a level: the real openai backend
    # carries the retry's temperature and seed to the server.
    def answer(user: str, body: dict) -> str:
        return "The reply shows some warmth" if body["temperature"] == 0 else "2"

    with served_judge(answer, monkeypatch) as (backend, seen):
        figures, judged = run_levels(epitome_dir, backend, n=5, seed=3, mechanisms=["ER"])
    er = figures["mechanisms"]["ER"]
    assert (er["n"], er["parsed"], er["retried"], er["unparsed"], er["judge_calls"]) == (5, 5, 5, 0, 10)
    assert judged["judge"].to_list() == [2] * 5 and judged["attempts"].to_list() == [2] * 5
    retried = [body for body in seen if body["temperature"] > 0]
    assert [b["temperature"] for b in retried] == [0.7] * 5
    assert sorted(b["seed"] for b in retried) == sorted(request_seed(0, f"{pid}:ER#retry1") for pid in judged["pair_id"])
    assert "retried" in format_figures({"judge": "served", **figures}, "served")

    with served_judge(lambda user, body: "I would say", monkeypatch) as (backend, seen):
        figures, _ = run_levels(epitome_dir, backend, n=5, seed=3, mechanisms=["ER"], retries=2)
    er = figures["mechanisms"]["ER"]
    assert (er["retried"], er["unparsed"], er["judge_calls"], len(seen)) == (5, 5, 15, 15)


# ---- the parsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, level", [
    ("2", 2), ("1", 1), ("0", 0), (" **1**", 1), ("0 - none", 0), ("2.", 2), ("2/2", 2), ("Level: 1", 1),
    ("Level: 2\nThe reply names the feeling.", 2), ("strong", 2), ("Weak.", 1), ("none", 0),
    ("", None), ("   ", None), ("3", None), ("-1", None), ("1.5", None), ("2/3", None), ("12", None),
    ("The reply shows some warmth", None), ("I would say", None),
])
def test_level_parser(reply, level):
    assert levels.parse_level(reply) == level


@pytest.mark.parametrize("reply, answer", [
    ("1", "1"), ("2", "2"), ("Response 2", "2"), ("**1**", "1"), ("#1", "1"), ("2.", "2"),
    ("tie", "tie"), ("Tie.", "tie"), ("Both are equally good", "tie"), ("neither", "tie"),
    ("Better response: 2", "2"), ("Answer: tie", "tie"), ("Response 1 is warmer.", "1"),
    ("", None), ("3", None), ("12", None), ("1.5", None), ("The first one", None),
    ("It depends on the speaker.", None), ("Response", None),
])
def test_preference_parser(reply, answer):
    assert pairwise.parse_preference(reply) == answer


# ---- the level judge -------------------------------------------------------------------------------

def test_kappa_accuracy_and_unparsed_share_match_sklearn_on_a_fixed_set():
    human = [0, 0, 1, 2, 2, 1, 0, 2, 1, 0, 2, 2]
    judge = [0, 1, 1, 2, 1, None, 0, 2, 0, None, 2, 0]
    judged = pl.DataFrame({"pair_id": [str(i) for i in range(12)], "mechanism": ["IP"] * 12, "human": human,
                           "judge": judge, "raw_reply": [""] * 12, "attempts": [1] * 9 + [2] * 3},
                          schema_overrides={"judge": pl.Int64})
    figures = agreement(judged)["IP"]
    kept = [(h, j) for h, j in zip(human, judge) if j is not None]
    expected = cohen_kappa_score([h for h, _ in kept], [j for _, j in kept], weights="quadratic")
    assert figures["kappa_quadratic"] == round(expected, 4)
    assert figures["accuracy"] == round(np.mean([h == j for h, j in kept]), 4)
    assert (figures["n"], figures["parsed"], figures["unparsed"], figures["unparsed_pct"]) == (12, 10, 2, 16.67)
    assert (figures["retried"], figures["judge_calls"]) == (3, 15)
    assert figures["judge_levels"] == {"0": 4, "1": 3, "2": 3} and figures["anchor_kappa"] == 0.59


def test_an_oracle_judge_agrees_perfectly_and_a_rambling_one_is_all_unparsed(epitome_dir):
    test = held_out_pairs(epitome_dir)
    truth = {(m, post, reply): level for m in ("ER", "IP", "EX")
             for post, reply, level in test.select("seeker_post", "response_post", m).iter_rows()}

    def oracle(prompt: str) -> str:
        mechanism = {"Emotional Reactions": "ER", "Interpretations": "IP", "Explorations": "EX"}[
            re.search(r"levels:\n\n(\w+ ?\w*) -", prompt).group(1)]
        post, reply = re.search(r"Seeker's post:\n\n(.*?)\n\nReply:\n\n(.*)\n\nAnswer with", prompt, re.DOTALL).groups()
        return str(truth[(mechanism, post, reply)])

    judge = RuleJudge(oracle)
    figures, judged = run_levels(epitome_dir, judge, n=40, seed=3)
    assert judge.calls == 120 and judged.height == 120 and figures["pairs"] == 40
    for f in figures["mechanisms"].values():
        assert f["accuracy"] == 1.0 and f["unparsed"] == 0
        assert f["kappa_quadratic"] in (1.0, None)  # None only if the 40 pairs hold a single level
    figures, _ = run_levels(epitome_dir, RuleJudge(lambda p: "Hmm, the reply"), n=10, seed=3, mechanisms=["EX"])
    assert figures["mechanisms"]["EX"]["unparsed_pct"] == 100.0 and figures["mechanisms"]["EX"]["kappa_quadratic"] is None
    with pytest.raises(PipelineError, match="temperature"):
        judge_levels(judge, test.head(1), sampling=Sampling(temperature=0.5))


# ---- the commands on the embedded SmolLM2 ----------------------------------------------------------

def test_both_commands_run_on_smollm2(tmp_path, base_model_dir, epitome_dir):
    (tmp_path / "params.yaml").write_text("llm:\n  backend: transformers\n  batch_size: 8\n")
    contexts = [["i failed my driving test again ."], ["my best friend is moving abroad next week ."]]
    write_predictions(tmp_path / "a.parquet", "a", ["oh no , i am sorry .", "that is sad , you will miss her ."], contexts)
    write_predictions(tmp_path / "b.parquet", "b", ["you will pass next time , do not give up !", "wow ."], contexts)
    env_run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = subprocess.run([EMPATHY, "judge-pairs", "--a", "a.parquet", "--b", "b.parquet", "--n", "2",
                          "--judge-model", str(base_model_dir)], **env_run)
    assert out.returncode == 0, out.stderr
    assert "| criterion | A wins | ties | B wins | N |" in out.stdout and "position-consistent" in out.stdout
    assert "A win rate by reply length" in out.stdout
    out = subprocess.run([EMPATHY, "judge-levels", "--n", "3", "--mechanism", "ER", "--data", str(epitome_dir),
                          "--model", str(base_model_dir), "--json"], **env_run)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)["mechanisms"]["ER"]
    assert figures["n"] == 3 and figures["parsed"] + figures["unparsed"] == 3
