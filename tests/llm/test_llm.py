"""LLM backends: the real SmolLM2-135M through the transformers backend, and backend selection errors."""

from __future__ import annotations

import pytest

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data.chat import dialogue_chat
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import Sampling

CHATS = [
    dialogue_chat(["I lost my dog today."]),
    dialogue_chat(["My sister got married last weekend!", "Congratulations! How was the wedding?",
                   "It was beautiful, I cried the whole time."]),
    dialogue_chat(["I failed my driving test again."]),
]


@pytest.fixture(scope="module")
def smollm(base_model_dir):
    return load_backend({"backend": "transformers", "batch_size": 3, "show_progress": False}, model=str(base_model_dir))


@pytest.mark.slow
def test_batched_greedy_equals_one_at_a_time(smollm):
    greedy = Sampling(max_new_tokens=16)
    batched = smollm.generate(CHATS, greedy)
    single = [smollm.generate([chat], greedy)[0] for chat in CHATS]
    # Left padding + attention mask: batching must not change a greedy reply, nor its position.
    assert batched == single
    assert all(reply.strip() for reply in batched)
    assert len(set(batched)) == len(batched)


@pytest.mark.slow
def test_sampling_is_seeded(smollm):
    a = smollm.generate(CHATS, Sampling(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7))
    b = smollm.generate(CHATS, Sampling(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7))
    c = smollm.generate(CHATS, Sampling(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=8))
    assert a == b and a != c


def test_unknown_backend_and_missing_extras_are_one_line_errors(monkeypatch):
    with pytest.raises(PipelineError, match="unknown backend 'nope'"):
        load_backend({"backend": "nope"}, model="m")
    with pytest.raises(PipelineError, match="no model given"):
        load_backend({"backend": "transformers"})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(PipelineError, match="set OPENAI_API_KEY"):
        load_backend({"backend": "openai"}, model="m")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(PipelineError, match="needs the gpu extra"):
            load_backend({"backend": "vllm"}, model="m")


def test_missing_model_directory_is_one_line_error(tmp_path):
    with pytest.raises(PipelineError, match="cannot load model"):
        load_backend({"backend": "transformers"}, model=str(tmp_path / "absent"))
