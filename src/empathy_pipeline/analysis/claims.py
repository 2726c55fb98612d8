"""`empathy claims`: the two papers' nine claims, tested on real ED at CPU scale (docs/results.md).

A claim compares two *arms*: a model trained under some params (Full F.T., the sensibility expert at
T=5, the MoE, ED + selection, ...) with a training seed. Each arm is one DVC experiment of this
workspace: params.yaml becomes the committed params.yaml + the profile (profiles/real-mini.yaml) +
the arm's overrides, and `dvc exp run -n claims-<arm>-<key> evaluate@<model>` reproduces only what
that model's evaluation needs, reusing every stage an earlier arm already ran with the same inputs
(so the T sweep trains only the tail, and seed 1 retrains only the fine-tunes).

Resumable across sessions and machines: a finished arm's per-item predictions and metrics are written
to `benchmarks/results/claims/<arm>/` (committed), keyed by a hash of the arm's whole params.yaml
(so a changed default the profile does not set redoes the arm; a param added later, at the value that
reproduces the earlier code, does not: NEUTRAL_ADDITIONS); a rerun skips every arm whose key
is there, whatever happened to DVC's cache. A run killed mid-arm leaves that arm's params.yaml in the
workspace; the next run knows it by the hash in `.dvc/tmp/claims-arm.json` and restores the committed
one (a hand edit is refused, as before). The claims
table is recomputed from those files alone (`--table-only`): per pair a two-level paired bootstrap
(bootstrap.py: training seeds, then test items), one Holm family for the whole table, no verdict
below MIN_SEEDS seeds a side, and a length check beside every pair.

The quality thresholds of the T sweep span the embedder's similarity range: the quantiles 10..90 %
of S over the synthetic samples, measured once by a `plan` experiment (up to `embed`) and kept in
`plan.json` beside the arms.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline.analysis.bootstrap import (
    LENGTH_TOLERANCE,
    MIN_SEEDS,
    TwoLevel,
    align,
    holm,
    minimum_detectable,
)
from empathy_pipeline.analysis.compare import CORPUS_KEYS, LABELS, CorpusStats
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path, read_predictions, write_json
from empathy_pipeline.core.lockcheck import dvc_command
from empathy_pipeline.core.profiles import load_profile, set_params

RESULTS = Path("benchmarks/results/claims")
HEADLINE = ("bleu1", "rouge1", "cider")        # the three metrics every claim row shows
SWEEP_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)    # of the similarity S: five T values spanning its range
STAGE_METRICS = ("selection", "diversity", "split", "generate", "rate")


@dataclass(frozen=True)
class Arm:
    """One trained-and-evaluated model: `family` names what it is, `seed` the training seed."""

    family: str
    model: str                      # the evaluated model (a key of dvc.yaml's evaluate foreach)
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    target: str | None = None       # what to reproduce; default evaluate@<model>

    @property
    def name(self) -> str:
        return f"{self.family}-s{self.seed}"

    @property
    def stage(self) -> str:
        return self.target or f"evaluate@{self.model}"

    def params(self) -> dict:
        return {**self.overrides, "train.seed": self.seed}


@dataclass(frozen=True)
class Claim:
    number: int
    source: str                     # the paper's table or figure
    statement: str
    pairs: tuple[tuple[str, str], ...] = ()   # (A, B) families: the paper says B beats A
    sweep: bool = False


def _t_label(t: float) -> str:
    return f"{t:g}"


SE_CLAIMS = (6, 7, 8, 9)   # the Synth-Empathy claims: they need the plan (the T sweep's values)

# The A-vs-A control (`--only 0`): the ED-only arm's recipe retrained at other seeds. Nothing but training
# noise separates the two sides, so the table's procedure must call it "no difference". It is judged at its
# unadjusted p, the harder test for a procedure that must not see a difference, and stays out of the
# claims' Holm family. Its seeds start at CONTROL_SEED_OFFSET, clear of every claim arm's 0..N-1.
CONTROL = 0
CONTROL_FAMILY = "se-ed-rerun"
CONTROL_SEED_OFFSET = 100


def control() -> Claim:
    return Claim(CONTROL, "control", "A-vs-A: the ED-only recipe against itself at other training seeds "
                 "(nothing to find).", (("se-ed", CONTROL_FAMILY),))


def control_seeds(seeds: Sequence[int]) -> list[int]:
    return [CONTROL_SEED_OFFSET + seed for seed in seeds]


def claims(plan: dict | None) -> list[Claim]:
    """The nine claims; without a plan the Synth-Empathy arms at T are unnamed (`se-synth-t?`)."""
    mid = f"se-synth-t{_t_label(plan['thresholds'][len(plan['thresholds']) // 2])}" if plan else "se-synth-t?"
    return [
        Claim(1, "EE Table 2", "The sensibility-only model beats full-data fine-tuning (split threshold 5).",
              (("ee-full", "ee-sens-t5"),)),
        Claim(2, "EE Table 3", "It does so at split thresholds 4 and 6 as well.",
              (("ee-full", "ee-sens-t4"), ("ee-full", "ee-sens-t6"))),
        Claim(3, "EE Table 1", "The MoE beats the sensibility expert.", (("ee-sens-t5", "ee-moe"),)),
        Claim(4, "EE Table 6 struc-(a)", "Replacing the rationality expert by the base model lowers the MoE's scores.",
              (("ee-moe-base", "ee-moe"),)),
        Claim(5, "EE Table 6 struc-(b)", "Replacing it by an expert trained on the discard set lowers them too.",
              (("ee-moe-discard", "ee-moe"),)),
        Claim(6, "SE Table 1", "ED + selected synthetic data beats ED only.", (("se-ed", mid),)),
        Claim(7, "SE Table 2 / Fig. 8", "The metrics over the quality threshold T rise, then fall.", sweep=True),
        Claim(8, "SE Table 3", "Removing quality selection lowers the scores.", (("se-noquality", mid),)),
        Claim(9, "SE Table 4", "A random subset of the same size instead of K-Center-Greedy lowers the scores.",
              (("se-random", mid),)),
    ]


def plan_arm() -> Arm:
    return Arm("plan", "synth", target="embed")


def arms(plan: dict | None, seeds: Sequence[int], k_main: dict[int, int]) -> list[Arm]:
    """Every arm at every seed, seed 0 of everything first (a cut-off run has one seed of everything
    before a second of anything, and a second before a third); without a plan, the Efficient-Empathy
    arms only.

    k_main maps a seed to the diversity subset size of that seed's main Synth-Empathy arm: the
    no-quality ablation picks as many samples (SE Table 3 compares the selections at equal size); the
    size moves with the seed (the discriminator behind S is retrained), so a seed without its main
    arm yet has no no-quality arm yet.
    """
    ts = plan["thresholds"] if plan else []
    mid = ts[len(ts) // 2] if ts else None
    out: list[Arm] = []
    for seed in seeds:
        if plan:
            out += [Arm("se-ed", "discriminator", seed=seed),
                    Arm(f"se-synth-t{_t_label(mid)}", "synth", {"quality.threshold": mid}, seed)]
            out += [Arm(f"se-synth-t{_t_label(t)}", "synth", {"quality.threshold": t}, seed) for t in ts if t != mid]
            out += [Arm("se-random", "synth", {"quality.threshold": mid, "diversity.method": "random"}, seed)]
            if seed in k_main:
                out += [Arm("se-noquality", "synth", {"quality.threshold": -100, "diversity.k": k_main[seed]}, seed)]
        out += [Arm("ee-sens-t5", "expert_sensibility", {"split.threshold": 5}, seed),
                Arm("ee-full", "expert_sensibility", {"experts.sensibility": "all"}, seed),
                Arm("ee-moe", "moe", {"split.threshold": 5}, seed),
                Arm("ee-moe-base", "moe", {"btx_merge.rationality_expert": "base"}, seed),
                Arm("ee-moe-discard", "moe", {"experts.rationality": "discard"}, seed),
                Arm("ee-sens-t4", "expert_sensibility", {"split.threshold": 4}, seed),
                Arm("ee-sens-t6", "expert_sensibility", {"split.threshold": 6}, seed)]
    if plan:   # the control last: it checks the procedure, no claim waits for it
        out += [Arm(CONTROL_FAMILY, "discriminator", seed=seed) for seed in control_seeds(seeds)]
    return out


# Params added to params.yaml after arms were run, each with the value that reproduces the code from
# before it existed. At that value it is left out of the key, so arms finished before the addition stay
# valid (a rerun would compute the same thing); any other value is in the key and redoes the arm.
NEUTRAL_ADDITIONS = {
    ("train", "gradient_checkpointing"): False,   # recomputing activations changes memory, not results
    ("judge_quality", "retries"): 0,               # judge_quality asked once before it had retries
    ("judge_quality", "retry_temperature"): 0.7,   # and draws nothing at retries 0
}


def arm_key(params: dict, arm: Arm) -> str:
    """What an arm's result depends on: every value of its params.yaml (NEUTRAL_ADDITIONS at their
    neutral value aside), its model and its target."""
    params = json.loads(json.dumps(params, default=str))   # a copy to prune
    for (section, name), neutral in NEUTRAL_ADDITIONS.items():
        if name in params.get(section, {}) and params[section][name] == neutral:
            del params[section][name]
    payload = json.dumps({"params": params, "model": arm.model, "stage": arm.stage}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# ---- running --------------------------------------------------------------------------------------


@dataclass
class Runner:
    """Runs arms as DVC experiments in `repo`, writing finished ones to `results`."""

    repo: Path
    profile_name: str
    results: Path
    log: Callable[[str], None] = print
    dvc: Sequence[str] = field(default_factory=dvc_command)   # the venv's dvc, whatever PATH says
    profile: dict = field(init=False)
    original_params: str = field(init=False)
    _keys: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.profile = load_profile(self.profile_name, self.repo / "profiles")
        params = self.repo / "params.yaml"
        self._recover_killed_arm(params)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml"], cwd=self.repo)
        if dirty.returncode != 0:
            raise PipelineError("params.yaml differs from the last commit: commit or stash it first "
                                "(every claims experiment starts from the committed params)")
        self.original_params = params.read_text()

    @property
    def marker(self) -> Path:
        """Written while an arm's params are in the workspace: a kill (SIGTERM, SIGKILL, a lost session)
        skips `restore`, and the next run recognises the params it left by their hash."""
        return self.repo / ".dvc" / "tmp" / "claims-arm.json"

    def _recover_killed_arm(self, params: Path) -> None:
        if not self.marker.exists():
            return
        left = json.loads(self.marker.read_text())
        if _digest(params) == left.get("params_sha256"):
            params.write_bytes(subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=self.repo,
                                              capture_output=True, check=True).stdout)
            self.log(f"claims: arm {left.get('arm')} was killed mid-run; params.yaml is the committed one "
                     "again and the arm reruns (DVC's run cache and the stages' shards keep what it finished)")
        self.marker.unlink()   # params edited since are the user's: the dirty check below decides

    def begin(self, arm: Arm) -> None:
        """The arm's params into the workspace, with the marker that lets a killed run be recovered."""
        self.write_params(arm)
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.marker, {"arm": arm.name, "params_sha256": _digest(self.repo / "params.yaml")})

    def write_params(self, arm: Arm, path: Path | None = None) -> Path:
        """The arm's params.yaml (the committed one + the profile + the arm's overrides) at `path`."""
        path = path or self.repo / "params.yaml"
        path.write_text(self.original_params)
        set_params(path, {**self.profile, **arm.params()}, f"claims arm {arm.name}")
        return path

    def key(self, arm: Arm) -> str:
        """arm_key of the arm's params, worked out in a scratch file (the workspace's is left alone)
        once per arm: the run loop asks again after every arm."""
        import tempfile

        import yaml

        memo = (arm.name, arm.stage, json.dumps(arm.params(), sort_keys=True, default=str))
        if memo not in self._keys:
            with tempfile.TemporaryDirectory() as tmp:
                params = yaml.safe_load(self.write_params(arm, Path(tmp) / "params.yaml").read_text())
            self._keys[memo] = arm_key(params, arm)
        return self._keys[memo]

    def done(self, arm: Arm) -> Path | None:
        folder = self.results / arm.name
        info = folder / "arm.json"
        if info.exists() and json.loads(info.read_text()).get("key") == self.key(arm):
            return folder
        return None

    def run(self, arm: Arm, index: int, total: int) -> Path:
        key = self.key(arm)
        self.begin(arm)
        settings = ", ".join(f"{k}={v}" for k, v in arm.params().items())
        self.log(f"claims [{index}/{total}] {arm.name}: {arm.stage} with {settings}")
        name = self._experiment_name(f"claims-{arm.name}-{key[:6]}")
        started = time.time()
        proc = subprocess.run([*self.dvc, "exp", "run", "-n", name, arm.stage], cwd=self.repo)
        if proc.returncode != 0:
            raise PipelineError(f"claims: arm {arm.name} failed (`dvc exp run {arm.stage}` exit {proc.returncode}, "
                                "output above); finished arms are kept: rerun to resume")
        seconds = round(time.time() - started, 1)
        folder = self.results / arm.name
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            if arm.target is None:
                shutil.copy(self.repo / "outputs/predictions" / f"{arm.model}.parquet", tmp / "predictions.parquet")
                shutil.copy(self.repo / "metrics" / f"{arm.model}.json", tmp / "metrics.json")
            for source in self.stage_metrics(arm.stage):
                shutil.copy(source, tmp / source.name)
            write_json(tmp / "arm.json", {
                "arm": arm.name, "family": arm.family, "seed": arm.seed, "model": arm.model, "stage": arm.stage,
                "params": arm.params(), "profile": self.profile_name, "key": key, "experiment": name,
                "commit": _git(self.repo, "rev-parse", "--short", "HEAD"), "seconds": seconds})
        self.log(f"claims [{index}/{total}] {arm.name}: done in {seconds:.0f} s -> {folder}")
        return folder

    def stage_metrics(self, stage: str) -> list[Path]:
        """The STAGE_METRICS files that `stage`'s run made or checked out: those of the stages it depends on
        (`dvc dag`), as dvc.lock records them. The workspace's other metrics files belong to other arms."""
        import yaml

        dag = subprocess.run([*self.dvc, "dag", "--dot", stage], cwd=self.repo, capture_output=True, text=True)
        if dag.returncode != 0:
            raise PipelineError(f"claims: `dvc dag {stage}` failed: {(dag.stderr.strip().splitlines() or ['?'])[-1]}")
        upstream = {line.strip().strip('";') for line in dag.stdout.splitlines()
                    if line.strip().endswith('";') and "->" not in line}
        lock = yaml.safe_load((self.repo / "dvc.lock").read_text()).get("stages", {})
        wanted = {f"metrics/{name}.json" for name in STAGE_METRICS}
        paths = {out["path"] for name in upstream for out in (lock.get(name) or {}).get("outs", [])}
        return [self.repo / path for path in sorted(paths & wanted) if (self.repo / path).exists()]

    def _experiment_name(self, base: str) -> str:
        existing = set(_git(self.repo, "for-each-ref", "--format=%(refname:lstrip=-1)", "refs/exps").split())
        name, n = base, 1
        while name in existing:
            n += 1
            name = f"{base}-{n}"
        return name

    def restore(self) -> None:
        (self.repo / "params.yaml").write_text(self.original_params)
        self.marker.unlink(missing_ok=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout.strip()


def measure_plan(thresholds_from: Path, key: str) -> dict:
    """Five T values at the quantiles of S over the synthetic samples (scores.parquet of the plan arm)."""
    similarity = pl.read_parquet(thresholds_from)["similarity"]
    if similarity.len() == 0:
        raise PipelineError(f"{thresholds_from}: no scored synthetic samples to place the T sweep on")
    thresholds = sorted({round(float(similarity.quantile(q, "linear")), 1) for q in SWEEP_QUANTILES})
    return {"key": key, "quantiles": list(SWEEP_QUANTILES), "thresholds": thresholds,
            "n_scored": similarity.len(), "similarity_min": round(float(similarity.min()), 2),
            "similarity_max": round(float(similarity.max()), 2)}


def run_all(repo: Path, profile_name: str, seeds: Sequence[int], results: Path | None = None,
            only: Sequence[int] | None = None, log: Callable[[str], None] = print,
            n_resamples: int = 1000) -> dict:
    """Run every arm not yet in `results` (all, or those of the claims in `only`), then the whole table."""
    results = results or repo / RESULTS
    runner = Runner(repo, profile_name, results, log)
    skipped = None
    try:
        plan_file = results / "plan.json"
        plan_key = runner.key(plan_arm())
        plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
        needs_plan = only is None or any(n in (*SE_CLAIMS, CONTROL) for n in only)
        if needs_plan and (plan is None or plan.get("key") != plan_key):
            log("claims: plan: generating, discriminating and embedding once to place the T sweep")
            runner.run(plan_arm(), 0, 0)
            plan = measure_plan(repo / "data/synth/scores.parquet", plan_key)
            write_json(plan_file, plan)
        if plan is not None:
            log(f"claims: T sweep at {plan['thresholds']} (quantiles {plan['quantiles']} of S)")
        wanted = families(plan, only)
        while True:
            # Recomputed after every arm: the no-quality arm joins once the main arm's subset size is known.
            todo = [a for a in arms(plan, seeds, _k_main(results, plan, seeds) if plan else {})
                    if a.family in wanted]
            pending = [a for a in todo if runner.done(a) is None]
            if skipped is None:
                skipped = len(todo) - len(pending)
                log(f"claims: {len(todo)} arm(s), {skipped} already in {results}: skipped")
            if not pending:
                break
            runner.run(pending[0], len(todo) - len(pending) + 1, len(todo))
    finally:
        runner.restore()
    # The whole table, whatever ran: one Holm family over every claim, as the committed table has it
    table = evaluate_claims(results, n_resamples=n_resamples, bertscore_options=bertscore_options(repo, runner.profile))
    table["skipped_arms"] = skipped
    return table


def bertscore_options(repo: Path, profile: dict) -> dict | None:
    """The arms' BERTScore settings (params.yaml under the profile), for the comparisons' per-item scores."""
    import yaml

    evaluate = yaml.safe_load((repo / "params.yaml").read_text()).get("evaluate", {})
    evaluate.update({k.split(".", 1)[1]: v for k, v in profile.items() if k.startswith("evaluate.")})
    if not evaluate.get("bertscore", False):
        return None
    return {"model": evaluate.get("bertscore_model"), "num_layers": evaluate.get("bertscore_num_layers")}


def families(plan: dict | None, only: Sequence[int] | None) -> set[str]:
    """The arm families the chosen claims (and the control, number 0) compare (the sweep: one per T of
    the plan)."""
    out: set[str] = set()
    for claim in (*claims(plan), control()):
        if only is not None and claim.number not in only:
            continue
        out |= {f for pair in claim.pairs for f in pair}
        if claim.sweep and plan:
            out |= {f"se-synth-t{_t_label(t)}" for t in plan["thresholds"]}
    return out


def _k_main(results: Path, plan: dict, seeds: Sequence[int]) -> dict[int, int]:
    """{seed: k} of the main Synth-Empathy arm's diversity subset, for the seeds whose main arm ran."""
    mid = plan["thresholds"][len(plan["thresholds"]) // 2]
    files = {seed: results / f"se-synth-t{_t_label(mid)}-s{seed}" / "diversity.json" for seed in seeds}
    return {seed: json.loads(file.read_text())["k"] for seed, file in files.items() if file.exists()}


# ---- the table ------------------------------------------------------------------------------------
#
# Every pair of a claim is a two-level paired bootstrap (bootstrap.py: training seeds within each arm,
# then test items shared by both); the p-values of all pairs x HEADLINE metrics of the table form one
# Holm family (a pair not run yet counts as p = 1, so the family is the table's design and a verdict
# does not weaken when the rest of the table arrives); a verdict needs MIN_SEEDS seeds on both sides.

ALPHA = 0.05
POWER = 0.8
POWER_SEEDS = (3, 5)
DECIDED = ("holds", "reversed")


def _finished(results: Path) -> dict[str, dict[int, Path]]:
    """{family: {seed: folder}} of every arm with predictions."""
    out: dict[str, dict[int, Path]] = {}
    for info in sorted(results.glob("*/arm.json")):
        arm = json.loads(info.read_text())
        if (info.parent / "predictions.parquet").exists():
            out.setdefault(arm["family"], {})[int(arm["seed"])] = info.parent
    return out


def verdict(metric: dict, n_seeds: int, alpha: float = ALPHA) -> str:
    """A metric's verdict from its Holm-adjusted p over the whole table; none below MIN_SEEDS seeds a side
    (fewer seeds say nothing about how the difference moves when the arms are retrained)."""
    if n_seeds < MIN_SEEDS:
        return "needs seeds"
    if metric["p_holm"] < alpha:
        return "holds" if metric["diff"] > 0 else "reversed"
    return "no difference"


def row_verdict(verdicts: Sequence[str]) -> str:
    """A pair holds when most headline metrics hold and none is reversed (and the other way round)."""
    if "needs seeds" in verdicts:
        return "needs seeds"
    holds, reversed_ = verdicts.count("holds"), verdicts.count("reversed")
    if holds and reversed_:
        return "mixed"
    if holds * 2 > len(verdicts):
        return "holds"
    if reversed_ * 2 > len(verdicts):
        return "reversed"
    return "no difference"


def claim_verdict(pair_verdicts: Sequence[str]) -> str:
    """A claim of several pairs holds only when every pair holds; "mixed" for pairs that hold against
    pairs that are reversed; any pair short of seeds leaves the claim short of seeds."""
    kinds = set(pair_verdicts)
    if "needs seeds" in kinds:
        return "needs seeds"
    if len(kinds) == 1:
        return pair_verdicts[0]
    if "mixed" in kinds or set(DECIDED) <= kinds:
        return "mixed"
    return "no difference"


def _metric(comparison: dict, key: str) -> dict:
    return next(m for m in comparison["metrics"] if m["metric"] == key)


def _excludes_zero(m: dict) -> bool:
    return m["ci_low"] > 0 or m["ci_high"] < 0


def length_only(comparison: dict, key: str) -> bool:
    """The effect on `key` is decided on all items, gone on the length-matched items (their 95 % CI covers
    0, or too few of them), and the arms' reply lengths differ (95 % CI) in favour of the arm it favours:
    the one whose mean length is closer to the references' (BLEU's brevity penalty and CIDEr's length
    penalty reward that alone)."""
    m = _metric(comparison, key)
    if m.get("verdict") not in DECIDED:
        return False
    matched = {x["metric"]: x for x in comparison["length_matched"]["metrics"]}.get(key)
    if matched is not None and _excludes_zero(matched) and (matched["diff"] > 0) == (m["diff"] > 0):
        return False
    length, reference = comparison["length"]["length"], comparison["length"]["reference"]
    if not _excludes_zero(length):
        return False
    b_closer = abs(length["b"] - reference) < abs(length["a"] - reference)
    return (m["diff"] > 0) == b_closer


def _decide(part: dict) -> None:
    """The pair's verdict and length flag, once its metrics have their Holm p-values."""
    if part["status"] != "done":
        part["verdict"], part["length_only"] = "not run", False
        return
    comparison = part["comparison"]
    n_seeds = min(len(comparison["seeds_a"]), len(comparison["seeds_b"]))
    for key in HEADLINE:
        _metric(comparison, key)["verdict"] = verdict(_metric(comparison, key), n_seeds)
    part["verdict"] = row_verdict([_metric(comparison, k)["verdict"] for k in HEADLINE])
    carrying = [k for k in HEADLINE if _metric(comparison, k)["verdict"] == part["verdict"]]
    part["length_only"] = part["verdict"] in DECIDED and all(length_only(comparison, k) for k in carrying)


def _claim_verdict(parts: Sequence[dict]) -> tuple[str, bool]:
    """(verdict, length only) of a claim of several pairs."""
    if not parts or any(p["status"] != "done" for p in parts):
        return "not run", False
    result = claim_verdict([p["verdict"] for p in parts])
    return result, result in DECIDED and any(p["length_only"] for p in parts)


def _tables(folders: dict[int, Path]) -> dict[int, pl.DataFrame]:
    return {seed: read_predictions(folder / "predictions.parquet") for seed, folder in sorted(folders.items())}


@dataclass
class _Table:
    """What the rows are computed from: the finished arms, their predictions, one TwoLevel."""

    finished: dict[str, dict[int, Path]]
    two_level: TwoLevel
    _predictions: dict = field(default_factory=dict)

    def predictions(self, family: str) -> dict[int, pl.DataFrame]:
        """The family's predictions per training seed, read once."""
        if family not in self._predictions:
            self._predictions[family] = _tables(self.finished[family])
        return self._predictions[family]

    def part(self, a: str, b: str) -> dict:
        if not self.finished.get(a) or not self.finished.get(b):
            return {"a": a, "b": b, "status": "not run"}
        comparison = self.two_level.compare(*align(a, self.predictions(a), b, self.predictions(b)))
        return {"a": a, "b": b, "status": "done", "comparison": comparison}


def evaluate_claims(results: Path, only: Sequence[int] | None = None, n_resamples: int = 1000,
                    bertscore_options: dict | None = None) -> dict:
    """Every claim's comparisons from the finished arms in `results`; missing arms leave a pair "not run".

    The comparisons are over the corpus metrics (CORPUS_KEYS), not BERTScore: per-item BERTScore of
    every arm's seeds costs about 5 min on 2 cores per table run, and no verdict rests on it. The arms
    table keeps BERT-F1 from each arm's metrics.json, made with `bertscore_options` (recorded).
    """
    plan_file = results / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
    finished = _finished(results)
    if not finished:
        raise PipelineError(f"{results}: no finished arm yet (run `empathy claims` first)")
    table = _Table(finished, TwoLevel(CORPUS_KEYS, n_resamples, 0, 0.95))
    rows = []
    for claim in claims(plan):
        if only is not None and claim.number not in only:
            continue
        row: dict = {"claim": claim.number, "source": claim.source, "statement": claim.statement}
        if claim.sweep:
            row.update(_sweep(plan, finished, table) if plan else {"points": [], "candidates": [], "parts": []})
        else:
            row["parts"] = [table.part(a, b) for a, b in claim.pairs]
        rows.append(row)
    family = _holm_family(rows)
    control_row = _control(table) if only is None or CONTROL in only else None
    for row in rows:
        for part in row["parts"]:
            _decide(part)
        if "candidates" in row:
            row["verdict"], row["length_only"] = _sweep_verdict(row["candidates"])
        else:
            row["verdict"], row["length_only"] = _claim_verdict(row["parts"])
    arms_summary = {name: {"seeds": sorted(folders), "metrics": _arm_summary(folders),
                           **_arm_lengths(table.predictions(name))}
                    for name, folders in sorted(finished.items())}
    out = {"plan": plan, "headline": list(HEADLINE), "n_resamples": n_resamples, "alpha": ALPHA,
           "min_seeds": MIN_SEEDS, "length_tolerance": LENGTH_TOLERANCE, "family": family, "claims": rows,
           "control": control_row, "arms": arms_summary, "arms_bertscore": bertscore_options}
    out["power"] = power_note(out)
    out["cost"] = cost_note(results, plan, finished, only)
    _outlook(out)
    return out


def _control(table: _Table) -> dict:
    """The A-vs-A control's row, its metrics judged at their unadjusted p (p_holm = p_value: a family of
    its own, outside the claims')."""
    claim = control()
    part = table.part(*claim.pairs[0])
    if part["status"] == "done":
        for m in part["comparison"]["metrics"]:
            m["p_holm"] = m["p_value"]
    _decide(part)
    row = {"claim": claim.number, "source": claim.source, "statement": claim.statement, "parts": [part],
           "adjusted": False}
    row["verdict"], row["length_only"] = _claim_verdict([part])
    return row


def _holm_family(rows: Sequence[dict]) -> dict:
    """Holm over every pair x HEADLINE metric of the table, run or not (not run: p = 1)."""
    slots = [(part, key) for row in rows for part in row["parts"] for key in HEADLINE]
    pvalues = [_metric(part["comparison"], key)["p_value"] if part["status"] == "done" else 1.0
               for part, key in slots]
    for (part, key), adjusted in zip(slots, holm(pvalues), strict=True):
        if part["status"] == "done":
            _metric(part["comparison"], key)["p_holm"] = adjusted
    return {"method": "Holm", "size": len(slots), "run": sum(p["status"] == "done" for p, _ in slots),
            "alpha": ALPHA, "metrics": list(HEADLINE)}


def _arm_summary(folders: dict[int, Path]) -> dict:
    """Mean ± std over seeds of every metric of an arm's metrics.json."""
    per_seed = [json.loads((f / "metrics.json").read_text()) for _, f in sorted(folders.items())]
    keys = [k for k, v in per_seed[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        values = [float(m[k]) for m in per_seed if isinstance(m.get(k), int | float)]
        std = round(statistics.stdev(values), 4) if len(values) > 1 else None  # sample std, as empathy report
        out[k] = {"mean": round(statistics.fmean(values), 4), "std": std, "n_seeds": len(values)}
    return out


def _arm_lengths(tables: dict[int, pl.DataFrame]) -> dict:
    """Mean reply and reference length (BLEU's tokens) and BLEU's brevity penalty, mean over seeds."""
    per_seed = []
    for df in tables.values():
        stats_ = CorpusStats(df["prediction"].to_list(), df["reference"].to_list(), groups=("bleu1",))
        length, bp = stats_.lengths(np.ones((1, df.height), dtype=np.int64))
        per_seed.append((float(length[0]), float(bp[0]), float(stats_.ref_len.mean())))
    length, bp, reference = (statistics.fmean(x) for x in zip(*per_seed, strict=True))
    return {"length": round(length, 3), "bp": round(bp, 4), "reference_length": round(reference, 3)}


def _per_seed(folders: dict[int, Path], name: str, key: str) -> list:
    """`key` of the stage metrics file `name` in each seed's folder (None where the arm has none)."""
    files = [folder / name for _, folder in sorted(folders.items())]
    return [json.loads(f.read_text()).get(key) if f.exists() else None for f in files]


def _sweep(plan: dict, finished: dict, table: _Table) -> dict:
    """Rise then fall: some interior T beats both ends of the sweep. Every interior T is tested against
    both ends and all of them are in the table's Holm family, which pays for not knowing in advance which
    interior T is the best (it replaces the Bonferroni-over-candidates of a pick by the test items)."""
    points = []
    for t in plan["thresholds"]:
        family = f"se-synth-t{_t_label(t)}"
        folders = finished.get(family, {})
        if not folders:
            continue
        summary = _arm_summary(folders)
        kept, k = _per_seed(folders, "selection.json", "n_kept"), _per_seed(folders, "diversity.json", "k")
        points.append({"threshold": t, "family": family, "seeds": sorted(folders),
                       **{k: summary[k]["mean"] for k in (*HEADLINE, "bleu4", "rougeL") if k in summary},
                       "std": {k: summary[k]["std"] for k in HEADLINE if k in summary},
                       "n_kept": kept[0], "k": k[0],  # the first seed's, for the figure
                       "n_kept_per_seed": kept, "k_per_seed": k,
                       "generated_per_seed": _per_seed(folders, "generate.json", "samples")})
    ends = (f"se-synth-t{_t_label(plan['thresholds'][0])}", f"se-synth-t{_t_label(plan['thresholds'][-1])}")
    candidates = [{"threshold": t, "family": f"se-synth-t{_t_label(t)}",
                   "parts": [table.part(end, f"se-synth-t{_t_label(t)}") for end in ends]}
                  for t in plan["thresholds"][1:-1]]
    return {"points": points, "candidates": candidates, "parts": [p for c in candidates for p in c["parts"]]}


def _sweep_verdict(candidates: Sequence[dict]) -> tuple[str, bool]:
    """Holds when some interior T holds against both ends (length only if every such T is length only)."""
    for candidate in candidates:
        candidate["verdict"], candidate["length_only"] = _claim_verdict(candidate["parts"])
    holding = [c for c in candidates if c["verdict"] == "holds"]
    if holding:
        return "holds", all(c["length_only"] for c in holding)
    verdicts = [c["verdict"] for c in candidates]
    if not verdicts or "not run" in verdicts:
        return "not run", False
    result = claim_verdict(verdicts)
    return result, result in DECIDED and any(c["length_only"] for c in candidates)


# ---- power and cost -------------------------------------------------------------------------------


def power_note(table: dict, key: str = "bleu1") -> dict:
    """The smallest B − A of `key` the design detects (80 % power), from the measured variances: the seed
    variance pooled over the arms with two or more seeds (each arm's sample variance, weighted by its
    degrees of freedom), the item variance of Δ (squared item-bootstrap SE) as the median over the pairs
    run. At α/m (Holm's first step, the worst case, m the family size) and at α (its last step)."""
    dfs, sums = 0, 0.0
    for arm in table["arms"].values():
        m = arm["metrics"].get(key)
        if m and m["std"] is not None:
            dfs += m["n_seeds"] - 1
            sums += (m["n_seeds"] - 1) * m["std"] ** 2
    item_vars = sorted(_metric(p["comparison"], key)["item_se"] ** 2 for row in table["claims"]
                       for p in row["parts"] if p["status"] == "done")
    if not dfs or not item_vars:
        return {"metric": key, "available": False}
    seed_var, item_var = sums / dfs, float(np.median(item_vars))
    size = table["family"]["size"]
    detectable = {f"{n}_seeds": {"holm_worst": minimum_detectable(seed_var, item_var, n, ALPHA / size, POWER),
                                 "holm_best": minimum_detectable(seed_var, item_var, n, ALPHA, POWER),
                                 "holm_worst_4x_items": minimum_detectable(seed_var, item_var / 4, n, ALPHA / size,
                                                                           POWER)}
                  for n in POWER_SEEDS}
    return {"metric": key, "available": True, "power": POWER, "alpha": ALPHA, "family_size": size,
            "seed_sd": seed_var ** 0.5, "seed_df": dfs, "item_sd": item_var ** 0.5,
            "item_sd_range": [min(item_vars) ** 0.5, max(item_vars) ** 0.5], "n_pairs": len(item_vars),
            "n_items": next(p["comparison"]["n_items"] for row in table["claims"] for p in row["parts"]
                            if p["status"] == "done"),
            "detectable": detectable}


def cost_note(results: Path, plan: dict | None, finished: dict, only: Sequence[int] | None) -> dict:
    """Measured wall time per arm (arm.json) and what MIN_SEEDS seeds of every arm still need."""
    arms_run = [json.loads(f.read_text()) for f in sorted(results.glob("*/arm.json"))]
    arms_run = [a for a in arms_run if a.get("family") != "plan" and a.get("seconds")]
    seconds = [a["seconds"] for a in arms_run]
    # a new seed retrains what seed 0 shared with the plan (the discriminator behind S): price it by those
    later = [a["seconds"] for a in arms_run if int(a["seed"]) > 0] or seconds
    per_new_arm = statistics.fmean(later) if later else None
    def wanted_seeds(family: str) -> list[int]:
        seeds = list(range(MIN_SEEDS))
        return control_seeds(seeds) if family == CONTROL_FAMILY else seeds

    missing = sorted(f"{family}-s{seed}" for family in families(plan, only) for seed in wanted_seeds(family)
                     if seed not in finished.get(family, {}))
    return {"n_arms_run": len(seconds), "seconds_mean": statistics.fmean(seconds) if seconds else None,
            "seconds_min": min(seconds, default=None), "seconds_max": max(seconds, default=None),
            "seconds_per_new_seed_arm": per_new_arm, "missing": missing,
            "missing_hours": len(missing) * per_new_arm / 3600 if per_new_arm else None}


# The papers' profiles on a GPU box (README "On a GPU box": the CUDA venv of requirements/gpu.lock), each
# in a results folder of its own (a profile changes every arm's key) whose parent gets its claims.json.
GPU_COMMANDS = (
    "make setup-gpu && .venv-gpu/bin/empathy data fetch ed",
    ".venv-gpu/bin/empathy claims --profile efficient-empathy --seeds 5 --only 1,2,3,4,5 "
    "--results benchmarks/results/efficient-empathy/claims",
    ".venv-gpu/bin/empathy claims --profile synth-empathy --seeds 5 --only 0,6,7,8,9 "
    "--results benchmarks/results/synth-empathy/claims",
)


def _outlook(table: dict) -> None:
    """Per claim: can MIN_SEEDS seeds at this scale resolve it? Its observed |Δ B-1| against the smallest
    detectable one at Holm's worst case (a pair needs |Δ| above it; the sweep, some interior T against
    both ends), the arms it still misses and their CPU hours."""
    power, cost = table["power"], table["cost"]
    bound = power["detectable"][f"{MIN_SEEDS}_seeds"]["holm_worst"] if power.get("available") else None

    def resolvable(parts: Sequence[dict]) -> bool | None:
        if bound is None or any(p["status"] != "done" for p in parts):
            return None
        return all(abs(_metric(p["comparison"], power["metric"])["diff"]) >= bound for p in parts)

    for row in table["claims"]:
        groups = [c["parts"] for c in row["candidates"]] if "candidates" in row else [row["parts"]]
        outcomes = [resolvable(g) for g in groups]
        names = {n for p in row["parts"] for n in (p["a"], p["b"])}
        missing = [m for m in cost["missing"] if m.rsplit("-s", 1)[0] in names]
        hours = len(missing) * cost["seconds_per_new_seed_arm"] / 3600 if cost["seconds_per_new_seed_arm"] else None
        if any(outcomes):
            text = f"{MIN_SEEDS} seeds may resolve it"
        elif None in outcomes:
            text = "unknown (arms not run)"
        else:
            text = "below what real-mini resolves: GPU"
        row["outlook"] = {"resolvable_at_min_seeds": any(outcomes) if None not in outcomes else None,
                          "text": text, "missing": missing, "missing_hours": hours}


# ---- rendering ------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def _cell(comparison: dict, key: str) -> str:
    m = _metric(comparison, key)
    spread = f"sd {_num(m['a_seed_std'])}/{_num(m['b_seed_std'])}"
    # A metric decided on its own says so, and whether reply length alone carries it: a pair can be
    # "no difference" overall while one of its metrics moves only because one arm talks longer.
    decided = (f" {m['verdict']}" + (", length only" if length_only(comparison, key) else "")
               if m.get("verdict") in DECIDED else "")
    return (f"{m['diff']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}] p {m['p_holm']:.3f}{decided}; {spread}")


def _length_cell(comparison: dict) -> str:
    length, bp = comparison["length"]["length"], comparison["length"]["bp"]
    matched = comparison["length_matched"]
    b1 = {m["metric"]: m for m in matched["metrics"]}.get("bleu1")
    tail = (f"B-1 on {matched['n_items']} matched: {b1['diff']:+.2f} [{b1['ci_low']:+.2f}, {b1['ci_high']:+.2f}]"
            if b1 else f"{matched['n_items']} matched items")
    return (f"{length['a']:.1f}/{length['b']:.1f} vs {comparison['length']['reference']:.1f}, "
            f"BP {bp['a']:.2f}/{bp['b']:.2f}; {tail}")


def _verdict_text(verdict_: str, length_only_: bool) -> str:
    return f"{verdict_} (length only)" if length_only_ else verdict_


def render(table: dict, only: Sequence[int] | None = None) -> str:
    """The claims table: a row per claim (those in `only`), a line per compared pair; B − A, its two-level
    95 % CI, Holm p (over the whole table's family, shown or not)."""
    family = table["family"]
    rows = [row for row in table["claims"] if only is None or row["claim"] in only]
    lines = _header("Holm p")
    for row in rows:
        lines += _row_lines(row)
    lines += ["", f"Δ = B − A, mean over each arm's seeds; 95 % CI: two-level paired bootstrap ({table['n_resamples']} "
              "resamples: seeds within each arm, then test items shared by both arms); p: two-sided, from the "
              f"bootstrap SE, Holm-adjusted over the whole table ({family['size']} tests = pairs × "
              f"{', '.join(LABELS[k] for k in HEADLINE)}; {family['run']} run, the rest count as p = 1); "
              f"verdicts at α = {table['alpha']}, none with fewer than {table['min_seeds']} seeds a side "
              f"(\"needs seeds\"). Length: mean reply length in BLEU tokens, BLEU's brevity penalty, and B-1 on "
              f"the items whose replies differ by ≤ {table['length_tolerance']} tokens (\"length only\": the "
              "effect is gone there and the arm it favours is the one closer to the references' length). A metric "
              "cell names its own verdict when it is decided, so a metric moved by length alone shows even in a "
              "pair that is \"no difference\" overall."]
    if table.get("control") and (only is None or CONTROL in only):
        lines += ["", "The A-vs-A control: the same recipe on both sides, other training seeds. Its p is "
                  "unadjusted (outside the Holm family above), the harder test for a procedure that must find "
                  "nothing; \"no difference\" is the only right answer.", "", *_header("p"),
                  *_row_lines(table["control"])]
    lines += _render_outlook(table, rows)
    if table.get("arms"):
        lines += ["", "Arms (mean ± sample std over training seeds; std needs two):", "",
                  "| arm | seeds | B-1 | R-1 | CIDEr | BERT-F1 | length (ref) | BP |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, arm in table["arms"].items():
            cells = []
            for key in (*HEADLINE, "bertscore_f1"):
                m = arm["metrics"].get(key)
                cells.append("—" if m is None else f"{m['mean']:.2f}" + ("" if m["std"] is None else f" ± {m['std']:.2f}"))
            lines.append(f"| {name} | {','.join(map(str, arm['seeds']))} | " + " | ".join(cells) +
                         f" | {arm['length']:.1f} ({arm['reference_length']:.1f}) | {arm['bp']:.2f} |")
    sweep = next((r for r in table["claims"] if "points" in r), None)
    if sweep and sweep["points"]:
        lines += ["", "T sweep (claim 7; mean ± std over seeds; per seed: the synthetic samples generated, kept after T, "
                  "kept after K-Center):", "",
                  "| T | seeds | B-1 | R-1 | CIDEr | generated | kept | k |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in sweep["points"]:
            cells = [f"{p[k]:.2f}" + ("" if p["std"].get(k) is None else f" ± {p['std'][k]:.2f}") for k in HEADLINE]
            per_seed = [p.get(f"{key}_per_seed") or [p.get(key)] for key in ("generated", "n_kept", "k")]
            lines.append(f"| {p['threshold']:g} | {','.join(map(str, p['seeds']))} | " + " | ".join(cells) + " | " +
                         " | ".join("/".join("—" if v is None else str(v) for v in values) for values in per_seed) + " |")
    return "\n".join(lines)


def _header(p_label: str) -> list[str]:
    head = " | ".join(f"{LABELS[k]} Δ [95 % CI] {p_label}; seed sd A/B" for k in HEADLINE)
    return [f"| # | paper | claim | A → B | seeds A/B, items | {head} | length A/B vs ref, BP A/B; length-matched "
            "| pair | verdict |",
            "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in HEADLINE) + " | --- | --- | --- |"]


def _row_lines(row: dict) -> list[str]:
    """A claim's lines of the table: one per compared pair, the claim's verdict on the first."""
    lines = []
    parts = row["parts"] or [{"status": "not run", "a": "", "b": "", "verdict": "not run", "length_only": False}]
    for i, part in enumerate(parts):
        first = i == 0
        lead = f"| {row['claim']} | {row['source']} | {row['statement']} |" if first else "| | | |"
        if part["status"] != "done":
            cells = " | ".join("—" for _ in (*HEADLINE, "length"))
            pair, seeds = (f"{part['a']} → {part['b']}" if part["a"] else ""), "not run"
        else:
            comparison = part["comparison"]
            cells = " | ".join([*(_cell(comparison, k) for k in HEADLINE), _length_cell(comparison)])
            pair = f"{part['a']} → {part['b']}"
            seeds = (f"{','.join(map(str, comparison['seeds_a']))} / {','.join(map(str, comparison['seeds_b']))}, "
                     f"{comparison['n_items']}")
        verdict_cell = f"**{_verdict_text(row['verdict'], row['length_only'])}**" if first else ""
        lines.append(f"{lead} {pair} | {seeds} | {cells} | {_verdict_text(part['verdict'], part['length_only'])} "
                     f"| {verdict_cell} |")
    return lines


def _render_outlook(table: dict, rows: Sequence[dict]) -> list[str]:
    power, cost = table["power"], table["cost"]
    if not power.get("available"):
        return []
    worst = {n: power["detectable"][f"{n}_seeds"]["holm_worst"] for n in POWER_SEEDS}
    lines = ["", f"Power and cost (smallest detectable B-1 difference at {100 * power['power']:.0f} % power, "
             f"α/{power['family_size']}: {', '.join(f'{n} seeds {d:.2f}' for n, d in worst.items())}; "
             f"measured wall time per new-seed arm {_num(cost['seconds_per_new_seed_arm'], '.0f')} s on 2 cores):", "",
             "| # | size of Δ B-1 | arms × seeds to run | CPU h | outlook |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        done = [p for p in row["parts"] if p["status"] == "done"]
        diffs = [abs(_metric(p["comparison"], "bleu1")["diff"]) for p in done]
        spread = "—" if not diffs else (f"{min(diffs):.2f}" if len(diffs) == 1 else f"{min(diffs):.2f}–{max(diffs):.2f}")
        outlook = row["outlook"]
        lines.append(f"| {row['claim']} | {spread} | {len(outlook['missing'])} | {_num(outlook['missing_hours'], '.1f')} "
                     f"| {outlook['text']} |")
    control = sum(name.startswith(f"{CONTROL_FAMILY}-s") for name in cost["missing"])
    left = (f"Left to run for {MIN_SEEDS} seeds of every arm: {len(cost['missing']) - control} claim arms and "
            f"{control} of the A-vs-A control, about {_num(cost['missing_hours'], '.1f')} h of CPU "
            f"(`empathy claims --profile real-mini --seeds {MIN_SEEDS}`)." if cost["missing"] else
            f"Nothing left to run: every arm, the control's too, has its {MIN_SEEDS} seeds.")
    lines += ["", f"{left} On a GPU box, the papers' profiles:", "", "```bash", *GPU_COMMANDS, "```"]
    return lines


def write_outputs(table: dict, json_path: Path, md_path: Path, sweep_png: Path | None = None) -> None:
    write_json(json_path, table)
    with atomic_path(md_path) as tmp:
        tmp.write_text(render(table) + "\n")
    sweep = next((r for r in table["claims"] if "points" in r), None)
    if sweep_png is not None and sweep and len(sweep["points"]) >= 2:
        from empathy_pipeline.analysis.sweeps import Point, plot_png

        def mean(values: list) -> float | None:
            values = [v for v in values if v is not None]
            return statistics.fmean(values) if values else None

        points = [Point(p["family"], p["threshold"], {"cider": p["cider"], "bleu1": p["bleu1"],
                                                       "n_kept": mean(p["n_kept_per_seed"]), "k": mean(p["k_per_seed"])})
                  for p in sweep["points"]]
        # ± the sample sd over each T's training seeds, the spread a rise-then-fall has to clear (none at one seed)
        errors = {key: [p["std"].get(key) for p in sweep["points"]] for key in ("cider", "bleu1")}
        plot_png(points, "quality.threshold", ["cider", "bleu1"], ["n_kept", "k"], sweep_png,
                 title="synth against quality T (Synth-Empathy Fig. 8), real-mini, mean over seeds", errors=errors)
