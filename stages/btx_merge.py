"""Integrate the sensibility and rationality experts into the empathetic MoE with Branch-Train-Mix (Efficient-Empathy §4.2)."""

import json

from empathy_pipeline import params, stage

BASE = "models/base"
EXPERT_S = "models/expert_sensibility"
EXPERT_R = "models/expert_rationality"
OUT = "models/moe_merged"


def main() -> None:
    p = params.section("btx_merge")
    from empathy_pipeline.merge import btx_merge  # heavy (torch, transformers): after reading params

    report = btx_merge(BASE, EXPERT_S, EXPERT_R, OUT, router_seed=int(p["router_seed"]))
    print(json.dumps({"out": OUT, **report}))


if __name__ == "__main__":
    stage.run(main, "btx_merge")
