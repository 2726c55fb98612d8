"""Integrate the sensibility and rationality experts into the empathetic MoE with Branch-Train-Mix (Efficient-Empathy §4.2)."""

import json

from empathy_pipeline import params, stage
from empathy_pipeline.stage import In, Out


def main(base: In, expert_sensibility: In, expert_rationality: In, out: Out) -> None:
    p = params.load("btx_merge")
    from empathy_pipeline.merge import btx_merge  # heavy (torch, transformers): after reading params

    report = btx_merge(base, expert_sensibility, expert_rationality, out, router_seed=p.router_seed)
    print(json.dumps({"out": str(out), **report}))


if __name__ == "__main__":
    stage.run(main)
