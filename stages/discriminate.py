"""Let the empathetic discriminator M_D answer every synthetic context: r_D = M_D(question) (Synth-Empathy §3.2)."""

import polars as pl

from empathy_pipeline import params, prompts, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_parquet
from empathy_pipeline.llm import Sampling, load_backend
from empathy_pipeline.llm_table import LazyBackend, respond
from empathy_pipeline.models import model_fingerprint
from empathy_pipeline.stage import In, Out


def main(generated: In, base: In, adapter: In, out: Out, shards: Out) -> None:
    p, llm = params.load("discriminate"), params.load("llm")
    if not (adapter / "adapter_config.json").exists():
        raise PipelineError(f"{adapter}: discriminator adapter not found (run the train_discriminator stage)")
    backend = LazyBackend(lambda: load_backend(llm, model=str(base), adapter=str(adapter)))  # merged on load
    replies, counts = respond(read_parquet(generated), prompts.dialogue_chat, backend, Sampling.from_params(p),
                              shard_dir=shards, shard_size=p.shard_size, what="discriminate",
                              settings={"llm": llm.model_dump(), "base": model_fingerprint(str(base)),
                                        "adapter": model_fingerprint(str(adapter))})
    write_parquet(replies.rename({"reply": "disc_response"}).cast({"disc_response": pl.String}), out)
    print(f"discriminate: {replies.height} discriminator responses ({counts['empty_replies']} empty) -> {out}")


if __name__ == "__main__":
    stage.run(main)
