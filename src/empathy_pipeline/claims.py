"""`empathy claims`: the two papers' nine claims, tested on real ED at CPU scale (docs/results.md).

A claim compares two *arms*: a model trained under some params (Full F.T., the sensibility expert at
T=5, the MoE, ED + selection, ...) with a training seed. Each arm is one DVC experiment of this
workspace: params.yaml becomes the committed params.yaml + the profile (profiles/real-mini.yaml) +
the arm's overrides, and `dvc exp run -n claims-<arm>-<key> evaluate@<model>` reproduces only what
that model's evaluation needs, reusing every stage an earlier arm already ran with the same inputs
(so the T sweep trains only the tail, and seed 1 retrains only the fine-tunes).

Resumable across sessions and machines: a finished arm's per-item predictions and metrics are written
to `benchmarks/results/claims/<arm>/` (committed), keyed by a hash of the arm's whole params.yaml
(so a changed default the profile does not set redoes the arm); a rerun skips every arm whose key
is there, whatever happened to DVC's cache. The claims
table is recomputed from those files alone (`--table-only`), with paired bootstraps (compare.py).

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

import polars as pl

from .errors import PipelineError
from .io import atomic_path, read_predictions, write_json
from .profiles import load_profile, set_params

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


def arms(plan: dict | None, seeds: Sequence[int], k_main: int | None) -> list[Arm]:
    """Every arm, seed 0 first (a cut-off run has one seed of everything before a second of anything);
    without a plan, the Efficient-Empathy arms only.

    k_main is the diversity subset size of the main Synth-Empathy arm: the no-quality ablation picks
    as many samples (SE Table 3 compares the selections at equal size), None until that arm ran.
    """
    ts = plan["thresholds"] if plan else []
    mid = ts[len(ts) // 2] if ts else None
    out: list[Arm] = []
    for seed in seeds:
        first = seed == seeds[0]
        if plan:
            out += [Arm("se-ed", "discriminator", seed=seed),
                    Arm(f"se-synth-t{_t_label(mid)}", "synth", {"quality.threshold": mid}, seed)]
        if first and plan:
            out += [Arm(f"se-synth-t{_t_label(t)}", "synth", {"quality.threshold": t}, seed) for t in ts if t != mid]
            out += [Arm("se-random", "synth", {"quality.threshold": mid, "diversity.method": "random"}, seed)]
            if k_main is not None:
                out += [Arm("se-noquality", "synth", {"quality.threshold": -100, "diversity.k": k_main}, seed)]
        out += [Arm("ee-sens-t5", "expert_sensibility", {"split.threshold": 5}, seed),
                Arm("ee-full", "expert_sensibility", {"experts.sensibility": "all"}, seed)]
        if first:
            out += [Arm("ee-moe", "moe", {"split.threshold": 5}, seed),
                    Arm("ee-moe-base", "moe", {"btx_merge.rationality_expert": "base"}, seed),
                    Arm("ee-moe-discard", "moe", {"experts.rationality": "discard"}, seed),
                    Arm("ee-sens-t4", "expert_sensibility", {"split.threshold": 4}, seed),
                    Arm("ee-sens-t6", "expert_sensibility", {"split.threshold": 6}, seed)]
    return out


def arm_key(params: dict, arm: Arm) -> str:
    """What an arm's result depends on: every value of its params.yaml, its model and its target."""
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
    dvc: Sequence[str] = ("dvc",)
    profile: dict = field(init=False)
    original_params: str = field(init=False)
    _keys: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.profile = load_profile(self.profile_name, self.repo / "profiles")
        params = self.repo / "params.yaml"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml"], cwd=self.repo)
        if dirty.returncode != 0:
            raise PipelineError("params.yaml differs from the last commit: commit or stash it first "
                                "(every claims experiment starts from the committed params)")
        self.original_params = params.read_text()

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
        self.write_params(arm)
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
    """Run every arm not yet in `results` (all, or those of the claims in `only`), then the table."""
    results = results or repo / RESULTS
    runner = Runner(repo, profile_name, results, log)
    skipped = None
    try:
        plan_file = results / "plan.json"
        plan_key = runner.key(plan_arm())
        plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
        needs_plan = only is None or any(n in SE_CLAIMS for n in only)
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
            todo = [a for a in arms(plan, seeds, _k_main(results, plan, seeds[0]) if plan else None)
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
    table = evaluate_claims(results, only=only, n_resamples=n_resamples,
                            bertscore_options=bertscore_options(repo, runner.profile))
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
    """The arm families the chosen claims compare (the sweep: one per T of the plan)."""
    out: set[str] = set()
    for claim in claims(plan):
        if only is not None and claim.number not in only:
            continue
        out |= {f for pair in claim.pairs for f in pair}
        if claim.sweep and plan:
            out |= {f"se-synth-t{_t_label(t)}" for t in plan["thresholds"]}
    return out


def _k_main(results: Path, plan: dict, seed: int) -> int | None:
    mid = plan["thresholds"][len(plan["thresholds"]) // 2]
    file = results / f"se-synth-t{_t_label(mid)}-s{seed}" / "diversity.json"
    return json.loads(file.read_text())["k"] if file.exists() else None


# ---- the table ------------------------------------------------------------------------------------


def _finished(results: Path) -> dict[str, dict[int, Path]]:
    """{family: {seed: folder}} of every arm with predictions."""
    out: dict[str, dict[int, Path]] = {}
    for info in sorted(results.glob("*/arm.json")):
        arm = json.loads(info.read_text())
        if (info.parent / "predictions.parquet").exists():
            out.setdefault(arm["family"], {})[int(arm["seed"])] = info.parent
    return out


def _pooled(folders: dict[int, Path], seeds: Sequence[int]) -> pl.DataFrame:
    """Predictions of several seeds as one paired table: item i of seed s is `<sample_id>#s<s>`."""
    tables = []
    for seed in seeds:
        df = read_predictions(folders[seed] / "predictions.parquet")
        tables.append(df.with_columns((pl.col("sample_id") + f"#s{seed}").alias("sample_id")))
    return pl.concat(tables, how="vertical_relaxed")


def verdict(metric: dict) -> str:
    """Never stronger than the interval: holds / reversed only when the 95 % CI excludes 0."""
    if metric["ci_low"] > 0:
        return "holds"
    if metric["ci_high"] < 0:
        return "reversed"
    return "not resolved"


def row_verdict(verdicts: Sequence[str]) -> str:
    """A claim holds when most headline metrics hold and none is reversed (and the other way round)."""
    holds, reversed_ = verdicts.count("holds"), verdicts.count("reversed")
    if holds and reversed_:
        return "mixed"
    if holds * 2 > len(verdicts):
        return "holds"
    if reversed_ * 2 > len(verdicts):
        return "reversed"
    return "not resolved"


def _compare(a_folders, b_folders, a_name: str, b_name: str, n_resamples: int, bertscore_options: dict | None,
             confidence: float = 0.95) -> dict:
    from .compare import METRICS, compare, pair

    seeds = sorted(set(a_folders) & set(b_folders))
    result = compare(pair(a_name, _pooled(a_folders, seeds), b_name, _pooled(b_folders, seeds)),
                     METRICS if bertscore_options else [m for m in METRICS if not m.startswith("bertscore")],
                     n_resamples=n_resamples, bertscore_options=bertscore_options, confidence=confidence)
    result["seeds"] = seeds
    for m in result["metrics"]:
        m["verdict"] = verdict(m)
    return result


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


def evaluate_claims(results: Path, only: Sequence[int] | None = None, n_resamples: int = 1000,
                    bertscore_options: dict | None = None) -> dict:
    """Every claim's comparison from the finished arms in `results`; missing arms leave a row "not run"."""
    plan_file = results / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
    finished = _finished(results)
    if not finished:
        raise PipelineError(f"{results}: no finished arm yet (run `empathy claims` first)")
    rows = []
    for claim in claims(plan):
        if only is not None and claim.number not in only:
            continue
        row: dict = {"claim": claim.number, "source": claim.source, "statement": claim.statement, "parts": []}
        if claim.sweep:
            row.update(_sweep(plan, finished, n_resamples, bertscore_options) if plan
                       else {"points": [], "parts": [], "verdict": "not run"})
        else:
            for a, b in claim.pairs:
                if a not in finished or b not in finished or not set(finished[a]) & set(finished[b]):
                    row["parts"].append({"a": a, "b": b, "status": "not run"})
                    continue
                result = _compare(finished[a], finished[b], a, b, n_resamples, bertscore_options)
                row["parts"].append({"a": a, "b": b, "status": "done", "comparison": result})
            row["verdict"] = _claim_verdict(row["parts"])
        rows.append(row)
    arms_summary = {family: {"seeds": sorted(folders), "metrics": _arm_summary(folders)}
                    for family, folders in sorted(finished.items())}
    return {"plan": plan, "headline": list(HEADLINE), "n_resamples": n_resamples, "claims": rows,
            "arms": arms_summary}


def _headline_verdicts(comparison: dict) -> list[str]:
    by_key = {m["metric"]: m for m in comparison["metrics"]}
    return [by_key[k]["verdict"] for k in HEADLINE]


def _claim_verdict(parts: Sequence[dict]) -> str:
    """A claim of several pairs (the sweep: both ends) holds only when every pair holds; "mixed" is kept
    for pairs that hold and pairs that are reversed, the rest is not resolved."""
    if any(p["status"] != "done" for p in parts):
        return "not run"
    return claim_verdict([row_verdict(_headline_verdicts(p["comparison"])) for p in parts])


def claim_verdict(pair_verdicts: Sequence[str]) -> str:
    kinds = set(pair_verdicts)
    if len(kinds) == 1:
        return pair_verdicts[0]
    if "mixed" in kinds or {"holds", "reversed"} <= kinds:
        return "mixed"
    return "not resolved"


def _sweep(plan: dict, finished: dict, n_resamples: int, bertscore_options: dict | None) -> dict:
    """Rise then fall: the best interior T beats both ends of the sweep (by CIDEr, as Fig. 8)."""
    points = []
    for t in plan["thresholds"]:
        folders = finished.get(f"se-synth-t{_t_label(t)}", {})
        if not folders:
            continue
        folder = folders[min(folders)]
        m = json.loads((folder / "metrics.json").read_text())
        selection = json.loads((folder / "selection.json").read_text()) if (folder / "selection.json").exists() else {}
        diversity = json.loads((folder / "diversity.json").read_text()) if (folder / "diversity.json").exists() else {}
        points.append({"threshold": t, "family": f"se-synth-t{_t_label(t)}", "folders": folders,
                       **{k: m.get(k) for k in (*HEADLINE, "bleu4", "rougeL")},
                       "n_kept": selection.get("n_kept"), "k": diversity.get("k")})
    out: dict = {"points": [{k: v for k, v in p.items() if k != "folders"} for p in points], "parts": []}
    if len(points) < len(plan["thresholds"]) or len(points) < 3:
        out["verdict"] = "not run"
        return out
    interior = max(points[1:-1], key=lambda p: p["cider"])
    # The interior point is picked on the same test items it is then tested on: Bonferroni over the
    # candidates keeps the verdict honest (both ends must hold, an intersection, so no correction for two).
    confidence = 1 - 0.05 / len(points[1:-1])
    out["confidence"] = round(confidence, 4)
    for end in (points[0], points[-1]):
        result = _compare(end["folders"], interior["folders"], end["family"], interior["family"],
                          n_resamples, bertscore_options, confidence)
        out["parts"].append({"a": end["family"], "b": interior["family"], "status": "done", "comparison": result})
    out["verdict"] = _claim_verdict(out["parts"])
    return out


# ---- rendering ------------------------------------------------------------------------------------


def _cell(comparison: dict, key: str) -> str:
    m = {x["metric"]: x for x in comparison["metrics"]}[key]
    return f"{m['diff']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]"


def render(table: dict) -> str:
    """The claims table: one row per claim (one line per compared pair), B − A with its 95 % CI."""
    head = " | ".join(f"{k} B − A [95 % CI]".replace("bleu1", "B-1").replace("rouge1", "R-1")
                      .replace("cider", "CIDEr") for k in HEADLINE)
    lines = [f"| # | paper | claim | A → B (seeds) | {head} | verdict |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in HEADLINE) + " | --- |"]
    for row in table["claims"]:
        parts = row["parts"] or [{"status": "not run", "a": "", "b": ""}]
        for i, part in enumerate(parts):
            first = i == 0
            lead = f"| {row['claim']} | {row['source']} | {row['statement']} |" if first else "| | | |"
            if part["status"] != "done":
                cells = " | ".join("—" for _ in HEADLINE)
                pair = f"{part['a']} → {part['b']} (not run)" if part["a"] else "(not run)"
            else:
                comparison = part["comparison"]
                cells = " | ".join(_cell(comparison, k) for k in HEADLINE)
                level = "" if comparison["confidence"] == 0.95 else f"; {100 * comparison['confidence']:.1f} % CI"
                pair = f"{part['a']} → {part['b']} ({','.join(map(str, comparison['seeds']))}{level})"
            verdict_cell = f"**{row['verdict']}**" if first else ""
            lines.append(f"{lead} {pair} | {cells} | {verdict_cell} |")
    if table.get("arms"):
        lines += ["", "Arms (mean ± std over training seeds; std needs two):", "",
                  "| arm | seeds | B-1 | R-1 | CIDEr | BERT-F1 |", "| --- | --- | --- | --- | --- | --- |"]
        for family, arm in table["arms"].items():
            cells = []
            for key in (*HEADLINE, "bertscore_f1"):
                m = arm["metrics"].get(key)
                cells.append("—" if m is None else f"{m['mean']:.2f}" + ("" if m["std"] is None else f" ± {m['std']:.2f}"))
            lines.append(f"| {family} | {','.join(map(str, arm['seeds']))} | " + " | ".join(cells) + " |")
    sweep = next((r for r in table["claims"] if "points" in r), None)
    if sweep and sweep["points"]:
        lines += ["", "T sweep (claim 7, seed 0): T | B-1 | R-1 | CIDEr | kept after T | after K-Center",
                  "", "| T | B-1 | R-1 | CIDEr | kept | k |", "| --- | --- | --- | --- | --- | --- |"]
        for p in sweep["points"]:
            lines.append(f"| {p['threshold']:g} | {p['bleu1']:.2f} | {p['rouge1']:.2f} | {p['cider']:.2f} | "
                         f"{p['n_kept']} | {p['k']} |")
    return "\n".join(lines)


def write_outputs(table: dict, json_path: Path, md_path: Path, sweep_png: Path | None = None) -> None:
    write_json(json_path, table)
    with atomic_path(md_path) as tmp:
        tmp.write_text(render(table) + "\n")
    sweep = next((r for r in table["claims"] if "points" in r), None)
    if sweep_png is not None and sweep and len(sweep["points"]) >= 2:
        from .sweeps import Point, plot_png

        points = [Point(p["family"], p["threshold"], {"cider": p["cider"], "bleu1": p["bleu1"],
                                                       "n_kept": p["n_kept"], "k": p["k"]})
                  for p in sweep["points"]]
        plot_png(points, "quality.threshold", ["cider", "bleu1"], ["n_kept", "k"], sweep_png,
                 title="synth against quality T (Synth-Empathy Fig. 8), real-mini")
