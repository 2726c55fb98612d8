"""Sampled replies are a function of (stage seed, sample identity) only, on the real SmolLM2.

Not of the batch a chat lands in, its position in the call, the other chats beside it, or the
shard it belongs to: the transformers backend draws every row with its own seeded generator
(llm.transformers.RowSampler), and the stages key each request's seed by its sample
(llm.base.request_seed). The OpenAI backend's per-request seeds are checked in
tests/llm/test_openai_backend.py.
"""

from __future__ import annotations

import polars as pl
import pytest

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data.chat import dialogue_chat
from empathy_pipeline.llm import table as llm_table
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import Sampling, request_seed, seeds_for
from empathy_pipeline.synth_empathy import generation

TURNS = [
    ["I lost my dog today."],
    ["My sister got married last weekend!"],
    ["I failed my driving test again."],
    ["I got a promotion at work!", "Congratulations! You must be thrilled.", "I am, but also nervous."],
    ["My neighbour plays loud music every night."],
    ["I'm nervous about my exam tomorrow."],
]
CHATS = [dialogue_chat(turns) for turns in TURNS]
IDS = [f"s{i}" for i in range(len(CHATS))]
SAMPLED = Sampling(max_new_tokens=8, temperature=0.8, top_p=0.95, seed=5)


@pytest.fixture(scope="module")
def smollm(base_model_dir):
    return load_backend({"backend": "transformers", "batch_size": 6, "dtype": "float32", "device": "cpu",
                         "show_progress": False}, model=str(base_model_dir))


@pytest.fixture(scope="module")
def batched(smollm):
    """The six sampled replies from one call of batch size 6, each chat seeded by its sample id."""
    return smollm.generate(CHATS, SAMPLED, [request_seed(SAMPLED.seed, i) for i in IDS])


def with_batch_size(backend, size: int, call):
    old, backend.batch_size = backend.batch_size, size
    try:
        return call()
    finally:
        backend.batch_size = old


def test_request_seed_is_stable_keyed_and_in_range():
    assert request_seed(0, "hit:1_conv:2:3") == request_seed(0, "hit:1_conv:2:3")
    seeds = {request_seed(s, k) for s in range(3) for k in ("a", "b", "a#retry1", "0")}
    assert len(seeds) == 12 and all(0 <= s < 2**31 for s in seeds)
    # Pinned: the same value in every process and on every machine (sha256, not Python's hash()).
    assert request_seed(0, "a") == 1524227187
    assert seeds_for(CHATS[:2], SAMPLED) == [request_seed(5, "0"), request_seed(5, "1")]
    assert seeds_for(CHATS[:2], SAMPLED, [7, 8]) == [7, 8]
    with pytest.raises(PipelineError, match="3 seeds given for 2 chats"):
        seeds_for(CHATS[:2], SAMPLED, [1, 2, 3])


@pytest.mark.slow
def test_batch_size_and_batch_company_do_not_change_a_sampled_reply(smollm, batched):
    seeds = [request_seed(SAMPLED.seed, i) for i in IDS]
    in_pairs = with_batch_size(smollm, 2, lambda: smollm.generate(CHATS, SAMPLED, seeds))
    alone = [smollm.generate([chat], SAMPLED, [seed])[0] for chat, seed in zip(CHATS, seeds)]
    assert batched == in_pairs == alone
    assert all(reply.strip() for reply in batched) and len(set(batched)) == len(batched)


@pytest.mark.slow
def test_order_in_the_call_does_not_change_a_sampled_reply(smollm, batched):
    order = [3, 0, 5, 1, 4, 2]
    shuffled = smollm.generate([CHATS[k] for k in order], SAMPLED, [request_seed(SAMPLED.seed, IDS[k]) for k in order])
    assert shuffled == [batched[k] for k in order]


@pytest.mark.slow
def test_other_seeds_draw_other_replies(smollm, batched):
    other = smollm.generate(CHATS, SAMPLED, [request_seed(SAMPLED.seed + 1, i) for i in IDS])
    assert other != batched


@pytest.mark.slow
def test_respond_table_does_not_depend_on_shard_size(smollm, batched, tmp_path):
    samples = pl.DataFrame({"sample_id": IDS, "context": TURNS})

    def run(shard_size: int) -> pl.DataFrame:
        table, counts = llm_table.respond(samples, dialogue_chat, smollm, SAMPLED, shard_dir=tmp_path / f"s{shard_size}",
                                          shard_size=shard_size, settings={"model": "smollm2"}, what="test",
                                          show_progress=False)
        assert counts["shards"] == -(-len(IDS) // shard_size)
        return table

    small, whole = run(2), run(6)
    assert small.equals(whole)
    # ... and each reply is the one its sample_id's seed draws, whatever call it came from.
    assert whole["reply"].to_list() == batched


@pytest.mark.slow
def test_generation_completions_do_not_depend_on_shard_size(smollm, tmp_path):
    seeds = pl.DataFrame({
        "sample_id": ["hit:1_conv:1:2", "hit:2_conv:2:2"], "emotion": ["proud", "afraid"],
        "context": [["my son won his first chess tournament today !"], ["i heard someone walking downstairs ."]],
        "response": ["that is great ! you must be so proud .", "oh no , that sounds terrifying ."],
    })

    def run(shard_size: int) -> pl.DataFrame:
        table, _ = generation.generate_completions(
            seeds, smollm, shard_dir=tmp_path / f"g{shard_size}", prompt_variant=2, completions_per_seed=2,
            sampling=SAMPLED, max_response_words=30, shard_size=shard_size, settings={}, show_progress=False)
        return table

    one, both = run(1), run(2)
    assert one.equals(both)
    # Two completions of one seed are two draws, not one reply twice.
    texts = both["raw_text"].to_list()
    assert texts[0] != texts[1] and texts[2] != texts[3]
