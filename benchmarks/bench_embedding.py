"""Embedding throughput of the `embed` stage's own calls, on real ED samples, 2 CPU threads.

Times `similarity.similarity_scores` (two replies per sample) and `encoders.embed_to_npy`
(context + response per sample) with the embedded all-MiniLM-L6-v2 at `embed.batch_size` 64, as
the stage runs them, on --n ED train samples (real text, so the length mix is ED's).

Writes benchmarks/results/embedding.json (samples/s and texts/s of each call).
    python benchmarks/bench_embedding.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from empathy_pipeline.data.ed import read_ed_csv
from empathy_pipeline.modeling import encoders
from empathy_pipeline.synth_empathy import similarity

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "embedding.json"
ED_DIR = ROOT.parent / "shared" / "data" / "empatheticdialogues"
SAMPLE_DIR = ROOT / "data" / "sample" / "empatheticdialogues"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    source = ED_DIR if (ED_DIR / "train.csv").exists() else SAMPLE_DIR
    samples, _ = read_ed_csv(source / "train.csv", "train")
    samples = samples.head(args.n)
    contexts, responses = samples["context"].to_list(), samples["response"].to_list()
    model = encoders.load_embedder(encoders.EMBEDDED_EMBEDDING_MODEL)
    similarity.similarity_scores(model, responses[:64], responses[:64], show_progress=False)  # warm-up

    started = time.perf_counter()
    # The stage compares the discriminator's reply with the generated one; here the reply with
    # the last context turn stands in for the pair (same lengths, same model work).
    similarity.similarity_scores(model, [c[-1] for c in contexts], responses, batch_size=args.batch_size,
                                 show_progress=False)
    similarity_s = time.perf_counter() - started
    texts = [similarity.sample_text(c, r) for c, r in zip(contexts, responses, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        encoders.embed_to_npy(model, texts, Path(tmp) / "e.npy", batch_size=args.batch_size, show_progress=False)
        embed_s = time.perf_counter() - started
    result = {
        "model": encoders.EMBEDDED_EMBEDDING_MODEL, "source": source.name, "samples": len(texts),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "batch_size": args.batch_size,
        "similarity_seconds": round(similarity_s, 2),
        "similarity_samples_per_s": round(len(texts) / similarity_s, 1),
        "similarity_texts_per_s": round(2 * len(texts) / similarity_s, 1),
        "sample_embedding_seconds": round(embed_s, 2),
        "sample_embedding_texts_per_s": round(len(texts) / embed_s, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
