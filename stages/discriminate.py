"""Let the empathetic discriminator M_D answer every synthetic context: r_D = M_D(question) (Synth-Empathy §3.2)."""

import polars as pl

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import read_parquet, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.data.chat import dialogue_chat
from empathy_pipeline.llm.backends import model_backend
from empathy_pipeline.llm.base import Sampling
from empathy_pipeline.llm.table import respond


def main(generated: In, base: In, adapter: In, out: Out, shards: Out) -> None:
    p, llm = params.load("discriminate"), params.load("llm")
    if not (adapter / "adapter_config.json").exists():
        raise PipelineError(f"{adapter}: discriminator adapter not found (run the train_discriminator stage)")
    backend = model_backend(llm, str(base), adapter=str(adapter))  # the adapter is merged on load
    replies, counts = respond(read_parquet(generated), dialogue_chat, backend, Sampling.from_params(p),
                              shard_dir=shards, shard_size=p.shard_size, what="discriminate",
                              settings=backend.settings)
    write_parquet(replies.rename({"reply": "disc_response"}).cast({"disc_response": pl.String}), out)
    print(f"discriminate: {replies.height} discriminator responses ({counts['empty_replies']} empty) -> {out}")


if __name__ == "__main__":
    stage.run(main)
