"""LLM backends behind one interface (see base.ChatBackend); choose one with `load_backend`."""

from .base import Chat, ChatBackend, Sampling, request_seed, seeds_for

__all__ = ["Chat", "ChatBackend", "Sampling", "load_backend", "request_seed", "seeds_for"]


def load_backend(cfg, model: str | None = None, adapter: str | None = None) -> ChatBackend:
    """Build the backend named by cfg['backend'] for `model` (a HF dir, hub id or served name).

    `cfg` is the `llm` params section (params.Llm) or a plain dict of the same keys.
    Heavy imports happen here, only for the backend chosen.
    """
    from ..errors import PipelineError

    if not isinstance(cfg, dict):
        cfg = cfg.model_dump()

    name = cfg.get("backend", "transformers")
    model = model or cfg.get("model")
    if not model:
        raise PipelineError("llm: no model given")
    if name == "transformers":
        from .transformers import TransformersBackend

        return TransformersBackend(model, adapter=adapter, **_subset(cfg, TransformersBackend.OPTIONS))
    if name == "vllm":
        from .vllm import VllmBackend

        return VllmBackend(model, adapter=adapter, **_subset(cfg, VllmBackend.OPTIONS))
    if name == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(model, **_subset(cfg, OpenAIBackend.OPTIONS))
    raise PipelineError(f"llm.backend: unknown backend {name!r} (use transformers, vllm or openai)")


def _subset(cfg: dict, keys: tuple[str, ...]) -> dict:
    return {k: cfg[k] for k in keys if cfg.get(k) is not None}
