"""Let the empathetic discriminator M_D answer every synthetic context: r_D = M_D(question) (Synth-Empathy §3.2)."""

from pathlib import Path

import polars as pl

from empathy_pipeline import params, prompts, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_parquet
from empathy_pipeline.llm import Sampling, load_backend

GENERATED = Path("data/synth/generated.parquet")
BASE = Path("models/base")
ADAPTER = Path("models/discriminator")  # LoRA adapter from train_discriminator, merged on load
OUT = Path("data/synth/discriminated.parquet")


def main() -> None:
    p = params.section("discriminate")
    synthetic = read_parquet(GENERATED)
    replies: list[str] = []
    if synthetic.height:
        if not (ADAPTER / "adapter_config.json").exists():
            raise PipelineError(f"{ADAPTER}: discriminator adapter not found (run the train_discriminator stage)")
        backend = load_backend(params.section("llm"), model=str(BASE), adapter=str(ADAPTER))
        chats = [prompts.dialogue_chat(context) for context in synthetic["context"].to_list()]
        replies = backend.generate(chats, Sampling.from_params(p))
    out = pl.DataFrame({"sample_id": synthetic["sample_id"], "disc_response": replies},
                       schema={"sample_id": pl.String, "disc_response": pl.String})
    write_parquet(out, OUT)
    empty = sum(1 for r in replies if not r.strip())
    print(f"discriminate: {out.height} discriminator responses ({empty} empty) -> {OUT}")


if __name__ == "__main__":
    stage.run(main, "discriminate")
