"""Record the params profile and the package versions that produce the numbers (runs on every repro)."""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import write_json
from empathy_pipeline.core.provenance import environment
from empathy_pipeline.core.stage import Out


def main(out: Out) -> None:
    record = environment(params.read().get("profile"))
    write_json(out, record)
    print(f"environment: profile {record['profile']}, torch {record['packages']['torch']}, "
          f"transformers {record['packages']['transformers']} -> {out}")


if __name__ == "__main__":
    stage.run(main)
