"""Materialise a branch's base model as a Hugging Face directory (`--name synth_base` or `efficient_base`)."""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.stage import Out, Text
from empathy_pipeline.modeling.models import materialize_chat_model

BRANCH_BASES = ("synth_base", "efficient_base")


def main(name: Text, out: Out) -> None:
    if name not in BRANCH_BASES:
        raise PipelineError(f"--name {name}: not a base model key (use {' or '.join(BRANCH_BASES)})")
    p = params.load("models")
    report = materialize_chat_model(getattr(p, name), out, dtype=p.dtype)
    print(f"{out}: {report['model']} ({report['parameters']:,} parameters, {report['dtype']})")


if __name__ == "__main__":
    stage.run(main)
