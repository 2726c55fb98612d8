"""The EPITOME level judge and the pairwise judge: parsers, tallies, fairness rules, and the commands.

Judges with a known behaviour are served for real: backend doubles whose `generate` answers by a
fixed rule (a judge's behaviour is what is under test), a chat-completions server on 127.0.0.1
behind the real openai backend, and the embedded SmolLM2 through the two commands.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import SHARED_DATA
from sklearn.metrics import cohen_kappa_score

from empathy_pipeline import prompts
from empathy_pipeline.ab import load_side
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.level_judge import agreement, held_out_pairs, judge_levels
from empathy_pipeline.level_judge import run as run_levels
from empathy_pipeline.llm import load_backend
from empathy_pipeline.pairwise import CRITERIA, combine, shared_base_warnings
from empathy_pipeline.pairwise import run as run_pairs

EMPATHY = str(Path(sys.executable).parent / "empathy")
EPITOME = SHARED_DATA / "epitome"
_RESPONSES = re.compile(r"Response 1:\n\n(.*?)\n\nResponse 2:\n\n(.*?)\n\nWhich response", re.DOTALL)


# ---- judges with a known behaviour -----------------------------------------------------------------

class RuleJudge:
    """A backend whose reply to each chat is rule(user message): the judge's behaviour under test."""

    name = "rule"

    def __init__(self, rule):
        self.rule, self.calls = rule, 0

    def generate(self, chats, sampling, seeds=None):
        self.calls += len(chats)
        return [self.rule(next(m["content"] for m in chat if m["role"] == "user")) for chat in chats]


def shown(prompt: str) -> tuple[str, str]:
    """(Response 1, Response 2) of a pairwise prompt."""
    first, second = _RESPONSES.search(prompt).groups()
    return first, second


def prefers_longer(prompt: str) -> str:
    first, second = shown(prompt)
    return "1" if len(first.split()) >= len(second.split()) else "2"  # equal length: the first shown


def write_predictions(path: Path, model: str, replies: list[str], contexts: list[list[str]] | None = None) -> Path:
    data = {"sample_id": [f"s{i}" for i in range(len(replies))], "model": [model] * len(replies),
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


# A chat-completions server on 127.0.0.1 whose model prefers the longer reply.
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": prefers_longer(user)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_the_judge_served_over_http_through_the_openai_backend(two_models, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    try:
        backend = load_backend({"backend": "openai", "base_url_env": "JUDGE_URL", "api_key_env": "JUDGE_KEY",
                                "concurrency": 4, "max_retries": 0, "timeout": 10, "show_progress": False},
                               model="served-judge")
        result, _ = pairs(*two_models, backend, tmp_path)
    finally:
        server.shutdown()
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


# ---- the parsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, level", [
    ("2", 2), ("1", 1), ("0", 0), (" **1**", 1), ("0 - none", 0), ("2.", 2), ("2/2", 2), ("Level: 1", 1),
    ("Level: 2\nThe reply names the feeling.", 2), ("strong", 2), ("Weak.", 1), ("none", 0),
    ("", None), ("   ", None), ("3", None), ("-1", None), ("1.5", None), ("2/3", None), ("12", None),
    ("The reply shows some warmth", None), ("I would say", None),
])
def test_level_parser(reply, level):
    assert prompts.parse_level(reply) == level


@pytest.mark.parametrize("reply, answer", [
    ("1", "1"), ("2", "2"), ("Response 2", "2"), ("**1**", "1"), ("#1", "1"), ("2.", "2"),
    ("tie", "tie"), ("Tie.", "tie"), ("Both are equally good", "tie"), ("neither", "tie"),
    ("Better response: 2", "2"), ("Answer: tie", "tie"), ("Response 1 is warmer.", "1"),
    ("", None), ("3", None), ("12", None), ("1.5", None), ("The first one", None),
    ("It depends on the speaker.", None), ("Response", None),
])
def test_preference_parser(reply, answer):
    assert prompts.parse_preference(reply) == answer


# ---- the level judge -------------------------------------------------------------------------------

def test_kappa_accuracy_and_unparsed_share_match_sklearn_on_a_fixed_set():
    human = [0, 0, 1, 2, 2, 1, 0, 2, 1, 0, 2, 2]
    judge = [0, 1, 1, 2, 1, None, 0, 2, 0, None, 2, 0]
    judged = pl.DataFrame({"pair_id": [str(i) for i in range(12)], "mechanism": ["IP"] * 12, "human": human,
                           "judge": judge, "raw_reply": [""] * 12}, schema_overrides={"judge": pl.Int64})
    figures = agreement(judged)["IP"]
    kept = [(h, j) for h, j in zip(human, judge) if j is not None]
    expected = cohen_kappa_score([h for h, _ in kept], [j for _, j in kept], weights="quadratic")
    assert figures["kappa_quadratic"] == round(expected, 4)
    assert figures["accuracy"] == round(np.mean([h == j for h, j in kept]), 4)
    assert (figures["n"], figures["parsed"], figures["unparsed"], figures["unparsed_pct"]) == (12, 10, 2, 16.67)
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
        from empathy_pipeline.llm.base import Sampling
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
