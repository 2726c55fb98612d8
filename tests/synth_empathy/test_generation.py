"""Synth-Empathy generation: reply parsing, sample building, resumable sharded generation, judge replies."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import polars as pl
import pytest
from dvc_spec import stage_argv
from projects import generate_project, seed_samples

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.llm import table as llm_table
from empathy_pipeline.synth_empathy import data_quality, generation

GOOD_REPLY = """Round 1
Context: My dog has been sick all week and I am so worried about him.
Response: That sounds really stressful. Has the vet been able to tell you anything yet?
Round 2
Context: They think it is an infection, so he is on antibiotics now.
Response: I am glad they found the cause. I hope the medicine helps him feel better soon.
Round 3
Context: He ate his whole dinner tonight for the first time in days!
Response: That is such a relief! It sounds like he is on the mend."""


# ---- parse_rounds -----------------------------------------------------------------------------------

def test_parse_rounds_reads_layout_with_markdown_and_prefill():
    parsed = generation.parse_rounds(GOOD_REPLY)
    assert parsed.reject_reason is None
    assert [r[0] for r in parsed.rounds][2] == "He ate his whole dinner tonight for the first time in days!"
    assert parsed.rounds[0][1] == "That sounds really stressful. Has the vet been able to tell you anything yet?"
    # Markdown decoration and Prompt 1's bare "Round:" header are the same layout.
    decorated = GOOD_REPLY.replace("Round 2", "**Round 2:**").replace("Round 3", "Round:").replace(
        "Context:", "**Context:**")
    assert generation.parse_rounds(decorated).rounds == parsed.rounds
    # A prefilled chat returns only the continuation; the prefix is put back before parsing ...
    continuation = GOOD_REPLY.removeprefix("Round 1\nContext:")
    assert generation.parse_rounds(continuation, prefix=generation.GENERATION_PREFILL).rounds == parsed.rounds
    # ... but not in front of a reply that restarted the layout itself (a backend without prefill).
    assert generation.parse_rounds(GOOD_REPLY, prefix=generation.GENERATION_PREFILL).rounds == parsed.rounds


def test_parse_rounds_ignores_commentary_after_a_response_and_skeleton_headers():
    reply = GOOD_REPLY + "\n\nI hope this conversation helps you!\n\nRound 4\n"
    parsed = generation.parse_rounds(reply)
    assert parsed.reject_reason is None and len(parsed.rounds) == 3
    assert parsed.rounds[2][1] == "That is such a relief! It sounds like he is on the mend."


def test_parse_rounds_drops_a_last_round_cut_off_by_the_token_limit():
    reply = GOOD_REPLY + "\nRound 4\nContext: Tomorrow we go back to the vet for a check-up.\nResponse: Fingers crossed that the"
    parsed = generation.parse_rounds(reply)
    assert parsed.reject_reason is None and parsed.dropped_tail and len(parsed.rounds) == 3
    # With only two complete rounds left the reply does not have enough rounds.
    two_rounds = GOOD_REPLY.split("Round 3")[0] + "Round 3\nContext: He ate his whole dinner"
    assert generation.parse_rounds(two_rounds).reject_reason == generation.REJECT_TOO_FEW_ROUNDS


@pytest.mark.parametrize("reply, reason", [
    ("", generation.REJECT_EMPTY),
    ("   \n  ", generation.REJECT_EMPTY),
    ("I'm so sorry to hear that. Your family must be so proud of you.", generation.REJECT_NO_ROUNDS),
    ("Context: my cat is sick.\nResponse: I am sorry, that is hard.", generation.REJECT_NO_ROUNDS),
    (GOOD_REPLY.replace("Response: I am glad they found the cause. I hope the medicine helps him feel better soon.",
                        "I am glad they found the cause."), generation.REJECT_MISSING_RESPONSE),
    (GOOD_REPLY.replace("Context: They think it is an infection, so he is on antibiotics now.\n", ""),
     generation.REJECT_MISSING_CONTEXT),
    (GOOD_REPLY.replace("Round 2\n", ""), generation.REJECT_MALFORMED_ROUND),
    (GOOD_REPLY.replace("Has the vet", "Has the vet " + "really " * 20), generation.REJECT_RESPONSE_TOO_LONG),
    (GOOD_REPLY.split("Round 3")[0], generation.REJECT_TOO_FEW_ROUNDS),
])
def test_parse_rounds_rejects_bad_generator_output_with_a_reason(reply, reason):
    parsed = generation.parse_rounds(reply, max_response_words=30)
    assert parsed.reject_reason == reason
    assert parsed.rounds == []


def test_response_word_limit_is_the_parameter():
    longest = max(len(r.split()) for _, r in generation.parse_rounds(GOOD_REPLY).rounds)
    assert generation.parse_rounds(GOOD_REPLY, max_response_words=longest).reject_reason is None
    assert generation.parse_rounds(GOOD_REPLY, max_response_words=longest - 1).reject_reason == \
        generation.REJECT_RESPONSE_TOO_LONG


# ---- build_samples and assemble ---------------------------------------------------------------------

def test_build_samples_target_is_the_chosen_next_rounds_response_not_the_last():
    rounds = [(f"speaker {i}", f"listener {i}") for i in range(5)]
    chosen = set()
    for seed in range(40):
        [(context, response)] = generation.build_samples(rounds, np.random.default_rng(seed))
        c = (len(context) - 1) // 2
        chosen.add(c)
        assert len(context) == 2 * c + 1  # speaker first, speaker last
        assert context == [t for i in range(c) for t in (f"speaker {i}", f"listener {i}")] + [f"speaker {c}"]
        assert response == f"listener {c}"  # answers the last context turn
    assert chosen == {1, 2, 3}  # never more than three context rounds, though five were generated
    # With three rounds, c < len(rounds) leaves 1 or 2 context rounds.
    three = rounds[:3]
    cs = {len(generation.build_samples(three, np.random.default_rng(s))[0][0]) // 2 for s in range(40)}
    assert cs == {1, 2}


def test_assemble_counts_every_reply_as_sample_or_reject():
    seeds = seed_samples(3)
    ids = seeds["sample_id"].to_list()
    completions = pl.DataFrame(
        {"sample_id": [ids[0], ids[0], ids[1], ids[2]], "completion": [0, 1, 0, 0],
         "raw_text": [GOOD_REPLY.removeprefix("Round 1\nContext:"), "", "Just a plain sentence.",
                      GOOD_REPLY.replace("Has the vet", "Has the vet " + "really " * 30)]},
        schema=generation.COMPLETIONS_SCHEMA,
    )
    samples, rejects, counts = generation.assemble(seeds, completions, generator="test-model", prompt_variant=2,
                                                   max_response_words=30, seed=0)
    assert samples.height == 1 and rejects.height == 3
    assert rejects["reason"].to_list() == [generation.REJECT_EMPTY, generation.REJECT_MISSING_RESPONSE,
                                           generation.REJECT_RESPONSE_TOO_LONG]
    assert rejects["seed_sample_id"].to_list() == [ids[0], ids[1], ids[2]]
    assert counts["completions"] == 4 and counts["parsed"] == 1 and counts["rejected"] == 3
    assert counts["rejected_empty"] == 1 and counts["rejected_response_too_long"] == 1
    assert sum(counts[f"rejected_{r}"] for r in generation.REJECT_REASONS) == counts["rejected"]
    row = samples.row(0, named=True)
    assert list(samples.schema) == list(generation.SYNTH_SCHEMA)
    assert row["split"] == "synthetic" and row["seed_sample_id"] == ids[0] and row["round_count"] == 3
    assert row["emotion"] == "proud" and row["generator"] == "test-model" and row["prompt_variant"] == 2
    assert len(row["context"]) % 2 == 1 and row["response"] in [r for _, r in generation.parse_rounds(GOOD_REPLY).rounds]


def test_select_seeds_count_fraction_and_errors():
    train = seed_samples(5)
    picked = generation.select_seeds(train, 3, seed=1)
    assert picked.height == 3 and picked["sample_id"].is_unique().all()
    assert picked.equals(generation.select_seeds(train, 3, seed=1))
    assert generation.select_seeds(train, 0.4, seed=1).height == 2
    assert generation.select_seeds(train, 1.0, seed=0).height == 5
    # Types and ranges are the params model's job (tests/core/test_params.py); here: more seeds than rows.
    with pytest.raises(PipelineError, match="generate.num_seeds: 6 seeds asked for, but the train split has 5"):
        generation.select_seeds(train, 6, seed=0)


def test_shards_of_other_settings_are_discarded_with_a_message(tmp_path, capsys):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / llm_table.FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": "old"}))
    pl.DataFrame(schema=generation.COMPLETIONS_SCHEMA).write_parquet(shard_dir / "shard-00000.parquet")
    (shard_dir / ".shard-00001.parquet.tmp").mkdir()  # left by a writer that was killed
    llm_table.prepare_shard_dir(shard_dir, "new", "generate")
    assert not list(shard_dir.glob("shard-*")) and not list(shard_dir.glob(".shard-*"))
    assert json.loads((shard_dir / llm_table.FINGERPRINT_FILE).read_text()) == {"fingerprint": "new"}
    messages = capsys.readouterr().out.splitlines()
    assert len(messages) == 1 and "starting fresh" in messages[0]


# ---- kill and resume with the real model ------------------------------------------------------------

OUTPUTS = ("data/synth/generated.parquet", "data/synth/rejects.parquet", "metrics/generate.json")


@pytest.mark.slow
def test_killed_generation_resumes_to_byte_identical_outputs(tmp_path, base_model_dir):
    n_seeds = 4
    whole = generate_project(tmp_path / "whole", base_model_dir, n_seeds)
    done = subprocess.run(stage_argv("generate"), cwd=whole, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = generate_project(tmp_path / "killed", base_model_dir, n_seeds)
    shards = killed / "data" / "synth" / "shards" / "generate"
    proc = subprocess.Popen(stage_argv("generate"), cwd=killed,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (shards / "shard-00000.parquet").exists():
            assert proc.poll() is None, "generation ended before its first shard appeared"
            assert time.time() < deadline, "no shard within 240 s"
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup code runs, like a crash or an OOM kill
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished_before_kill = len(list(shards.glob("shard-*.parquet")))
    assert 1 <= finished_before_kill < n_seeds, "the kill must land between shards"
    assert not (killed / OUTPUTS[0]).exists()

    resumed = subprocess.run(stage_argv("generate"), cwd=killed, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after {finished_before_kill}/{n_seeds} finished shards" in resumed.stdout
    for name in OUTPUTS:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), f"{name} differs after resume"
    metrics = json.loads((whole / OUTPUTS[2]).read_text())
    assert metrics["completions"] == n_seeds
    assert metrics["parsed"] + metrics["rejected"] == n_seeds
    # Every seed got a real sampled reply, and each one became a sample or a reject.
    replies = pl.concat(pl.read_parquet(p) for p in sorted((whole / "data/synth/shards/generate").glob("shard-*.parquet")))
    assert replies.height == n_seeds and replies["raw_text"].str.len_chars().min() > 20
    rejects = pl.read_parquet(whole / OUTPUTS[1])
    generated = pl.read_parquet(whole / OUTPUTS[0])
    assert rejects.height + generated.height == n_seeds


# ---- judge replies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, score", [
    (" 3", 3), ("2\n- Naturalness: 3", 2), ("- Coherence: 1", 1), ("**Coherence:** 3", 3), ("3/3", 3),
    ("3.", 3), ("1 because it ignores the speaker", 1),
    ("", None), ("4", None), ("0", None), ("10", None), ("2.5", None), ("2/5", None), ("3rd", None),
    ("The response is good", None), ("- Empathy: 3", None),
])
def test_parse_judge_score(reply, score):
    assert data_quality.parse_judge_score(reply, "coherence") == score


def test_judge_chat_prefills_the_form_line_of_its_criterion():
    chat = data_quality.judge_chat("naturalness", ["i lost my keys ."], "oh no , where did you last see them ?")
    assert chat[-1] == {"role": "assistant", "content": "- Naturalness:"}
    assert "Speaker: i lost my keys ." in chat[1]["content"] and "Naturalness (1-3)" in chat[1]["content"]
    with pytest.raises(PipelineError, match="criterion"):
        data_quality.judge_chat("fluency", ["x"], "y")


def test_data_quality_summary_counts_unparseable_and_full_marks():
    judged = pl.DataFrame(
        {"sample_id": ["a", "b", "c", "d"], "coherence": [3, 3, 2, None], "naturalness": [3, 2, 3, 3],
         "empathy": [3, 3, None, 1]},
        schema={"sample_id": pl.String, "coherence": pl.Int8, "naturalness": pl.Int8, "empathy": pl.Int8},
    )
    m = data_quality.summarize(judged, "before")
    assert m["before_n"] == 4
    assert m["before_coherence_unparseable"] == 1 and m["before_empathy_unparseable"] == 1
    assert m["before_coherence_mean"] == pytest.approx(8 / 3, abs=1e-3)
    assert m["before_naturalness_score3_pct"] == 75.0 and m["before_naturalness_score2_pct"] == 25.0
    assert m["before_full_marks_pct"] == 50.0  # a (3,3,3) of the two fully judged a and b


def test_shards_of_another_environment_are_not_resumed(tmp_path, monkeypatch):
    """A lock bump reruns the LLM stages (metrics/provenance.json changed): they must not resume the
    shards the old package versions wrote."""
    rows = pl.DataFrame({"sample_id": ["a", "b", "c"]})
    calls: list[int] = []

    def work(part, index):
        calls.append(index)
        return pl.DataFrame({"sample_id": part["sample_id"], "reply": ["x"] * part.height})

    schema = {"sample_id": pl.String, "reply": pl.String}
    run = dict(shard_dir=tmp_path, shard_size=2, fingerprint="same settings", schema=schema, what="test",
               show_progress=False)
    llm_table.run_sharded(rows, work, **run)
    llm_table.run_sharded(rows, work, **run)
    assert calls == [0, 1]  # the second run resumed both shards
    monkeypatch.setattr(llm_table, "versions", lambda: {"transformers": "99.0"})
    llm_table.run_sharded(rows, work, **run)
    assert calls == [0, 1, 0, 1]
