"""Materialise the configured base model as a Hugging Face directory (models/base)."""

from empathy_pipeline import params, stage
from empathy_pipeline.models import materialize_chat_model


def main() -> None:
    p = params.section("models")
    report = materialize_chat_model(p["base"], "models/base", dtype=p.get("dtype", "bfloat16"))
    print(f"models/base: {report['model']} ({report['parameters']:,} parameters, {report['dtype']}, "
          f"{report['seconds']} s)")


if __name__ == "__main__":
    stage.run(main, "models")
