"""Choosing an LLM backend from the `llm` params section, and loading it only when there is work for it.

Every LLM stage and judge command builds its backend the same way: `model_backend(llm, model, adapter)`
gives a LazyBackend that loads the backend `llm.backend` names on its first generate call (a fully
resumed stage never loads a model) and carries the settings that decide its replies, for the shard
fingerprints of llm/table.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.llm.base import Chat, ChatBackend, Sampling
from empathy_pipeline.modeling.models import model_fingerprint


def load_backend(cfg, model: str | None = None, adapter: str | None = None) -> ChatBackend:
    """Build the backend named by cfg['backend'] for `model` (a HF dir, hub id or served name).

    `cfg` is the `llm` params section (params.Llm) or a plain dict of the same keys.
    Heavy imports happen here, only for the backend chosen.
    """
    if not isinstance(cfg, dict):
        cfg = cfg.model_dump()

    name = cfg.get("backend", "transformers")
    model = model or cfg.get("model")
    if not model:
        raise PipelineError("llm: no model given")
    if name == "transformers":
        from empathy_pipeline.llm.transformers import TransformersBackend

        return TransformersBackend(model, adapter=adapter, **_subset(cfg, TransformersBackend.OPTIONS))
    if name == "vllm":
        from empathy_pipeline.llm.vllm import VllmBackend

        return VllmBackend(model, adapter=adapter, **_subset(cfg, VllmBackend.OPTIONS))
    if name == "openai":
        from empathy_pipeline.llm.openai import OpenAIBackend

        return OpenAIBackend(model, **_subset(cfg, OpenAIBackend.OPTIONS))
    raise PipelineError(f"llm.backend: unknown backend {name!r} (use transformers, vllm or openai)")


def _subset(cfg: dict, keys: tuple[str, ...]) -> dict:
    return {k: cfg[k] for k in keys if cfg.get(k) is not None}


class LazyBackend:
    """A backend loaded on first use: a fully resumed run never loads the model. `settings` is what
    decides its replies besides the prompts (shard fingerprints include it)."""

    def __init__(self, factory: Callable[[], ChatBackend], settings: dict | None = None):
        self._factory = factory
        self._backend: ChatBackend | None = None
        self.settings = settings or {}

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        if self._backend is None:
            self._backend = self._factory()
        replies = self._backend.generate(chats, sampling, seeds)
        if len(replies) != len(chats):
            raise PipelineError(f"backend returned {len(replies)} replies for {len(chats)} prompts")
        return replies


def model_backend(llm, model: str, adapter: str | None = None) -> LazyBackend:
    """The backend `llm` (params.Llm) names for `model` (a local HF directory, hub id or served model
    name) with an optional LoRA `adapter`, loaded on first use; its settings are the llm params and
    the fingerprints of the model and adapter files (new weights redo the shards)."""
    settings = {"llm": llm.model_dump(), "model": model_fingerprint(model),
                "adapter": model_fingerprint(adapter) if adapter else None}
    return LazyBackend(lambda: load_backend(llm, model=model, adapter=adapter), settings)
