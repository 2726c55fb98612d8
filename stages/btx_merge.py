"""Integrate the sensibility and rationality experts into the empathetic MoE with Branch-Train-Mix (Efficient-Empathy §4.2).

`btx_merge.rationality_expert: base` puts the base model in the rationality expert's place (Table 6
struc-(a)); the trained expert stays a dependency, so switching back needs no retraining."""

import json

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.stage import In, Out


def main(base: In, expert_sensibility: In, expert_rationality: In, out: Out) -> None:
    p = params.load("btx_merge")
    from empathy_pipeline.efficient_empathy.merge import (
        btx_merge,  # heavy (torch, transformers): after reading params
    )

    second = None if p.rationality_expert == "base" else expert_rationality
    report = btx_merge(base, expert_sensibility, second, out, router_seed=p.router_seed)
    print(json.dumps({"out": str(out), **report}))


if __name__ == "__main__":
    stage.run(main)
