"""The newcomer's demo, timed: a fresh clone, `make setup`, `make demo`, then one threshold change.

Two cases, each in its own process (so each peak RSS is its own): `with_shared`, the clone with
`../shared` beside it as on the developers' machines, and `without_shared`, a clone with nothing
beside it, as a user who has only the repository has it.
1. `git clone` of this repository's HEAD into a scratch directory (with or without `../shared`);
2. `make setup` (a fresh .venv from the lock) and `make demo` (`dvc repro` of the whole DAG),
   wall time and peak RSS (the largest process, as `/usr/bin/time -v` reports it);
3. per-stage wall times, from the stages' own log (`logs/stage_times.jsonl`);
4. the incremental ratio: `quality.threshold` moved by --threshold-step, `dvc repro` again;
   its wall time over the full DAG's, with the stages that ran.

Writes benchmarks/results/demo.json. Goals: setup + demo <= 15 min, peak RSS <= 6 GB (2 cores).
    python benchmarks/bench_demo.py                      # both cases, ~25-35 min
    python benchmarks/bench_demo.py --case without_shared  # one case, ~12-17 min
    python benchmarks/bench_demo.py --export DIR         # also keep the full run's dvc.lock and metrics
    python benchmarks/bench_demo.py --cache ../.dvc/cache  # outputs land in that DVC cache too
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
GOAL_MINUTES, GOAL_RSS_GB = 15.0, 6.0


def run(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    # The clone's own venv first, as its Makefile does for `make demo`: stages run `python`.
    env = {**os.environ, "PATH": f"{cwd / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, cwd=cwd, check=True, env=env)
    return time.perf_counter() - started


def stage_log(clone: Path) -> list[dict]:
    path = clone / "logs" / "stage_times.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stage_name(entry: dict) -> str:
    """`evaluate@moe`, `train@train_synth`: the stage script plus the item it ran for."""
    args = entry["args"]
    for flag in ("--name", "--section"):
        if flag in args:
            return f"{entry['stage']}@{args[args.index(flag) + 1]}"
    return entry["stage"]


def set_threshold(params: Path, step: float) -> tuple[float, float]:
    import yaml

    text = params.read_text()
    old = yaml.safe_load(text)["quality"]["threshold"]
    new = old + step
    new = int(new) if float(new).is_integer() else new
    lines = text.splitlines(keepends=True)
    section = None
    for i, line in enumerate(lines):
        if line and not line[0].isspace():
            section = line.split(":")[0]
        elif section == "quality" and line.strip().startswith("threshold:"):
            lines[i] = line.replace(f"threshold: {old}", f"threshold: {new}", 1)
            break
    params.write_text("".join(lines))
    return old, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--threshold-step", type=float, default=-5.0)
    parser.add_argument("--export", type=Path, default=None, help="copy the full run's dvc.lock, metrics/ and plots/ here")
    parser.add_argument("--cache", type=Path, default=None, help="use this DVC cache directory in the clone")
    parser.add_argument("--case", choices=CASES, action="append", help="run only this case (repeatable)")
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)  # one case's child process
    args = parser.parse_args()
    if args.result is None:
        both(args)
    else:
        one_case(args, args.case[0])


CASES = ("with_shared", "without_shared")


def both(args: argparse.Namespace) -> None:
    """Each case in a child process; demo.json gets every case run now and keeps the others' last figures."""
    cases = args.case or list(CASES)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = dict(old.get("cases", {}))
    for case in cases:
        out = Path(tempfile.mkdtemp(prefix=f"bench-demo-{case}-")) / "result.json"
        argv = [sys.executable, __file__, "--case", case, "--result", str(out),
                "--threshold-step", str(args.threshold_step)]
        for flag, value in (("--export", args.export), ("--cache", args.cache)):
            if value and case == cases[0]:
                argv += [flag, str(value)]
        load = os.getloadavg()[0]
        subprocess.run(argv, check=True)
        results[case] = {**json.loads(out.read_text()), "load_average_at_start": round(load, 2),
                         "load_average_15min_at_end": round(os.getloadavg()[2], 2)}
        # After each case, so a long second case that is stopped leaves the first one's figures.
        result = {"cpus": os.cpu_count(), "goal_minutes": GOAL_MINUTES, "goal_rss_gb": GOAL_RSS_GB,
                  "cases": results, "note": NOTE}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(RESULTS.read_text())


NOTE = ("Fresh clone of the commit named per case, no DVC cache shared (every stage ran). with_shared: "
        "../shared beside the clone; without_shared: nothing beside it (the demo reads only the repository). "
        "load_average_at_start (1-minute) and load_average_15min_at_end tell how busy the machine was: above ~0.5 "
        "it was not idle, and the wall times are longer than on an idle one (2 torch threads on 2 shared cores "
        "slow down far more than the load suggests). setup used pip's warm download cache.")


def one_case(args: argparse.Namespace, case: str) -> None:
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    clone = work / "empathy-pipeline"
    shared = ROOT.parent / "shared"
    if case == "with_shared" and shared.exists() and not (work / "shared").exists():
        (work / "shared").symlink_to(shared.resolve())
    assert case == "with_shared" or not (work / "shared").exists()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                            capture_output=True, text=True).stdout.strip()
    if args.cache:
        (clone / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {args.cache.resolve()}\n")

    os.environ.pop("VIRTUAL_ENV", None)  # the clone's Makefile puts its own .venv first on PATH
    setup_s = run(["make", "setup"], clone)
    demo_s = run(["make", "demo"], clone)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    full_log = stage_log(clone)
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        shutil.copy2(clone / "dvc.lock", args.export / "dvc.lock")
        for sub in ("metrics", "plots"):
            if (clone / sub).exists():
                shutil.copytree(clone / sub, args.export / sub, dirs_exist_ok=True)

    partial = {"commit": commit, "setup_seconds": round(setup_s, 1), "demo_seconds": round(demo_s, 1),
               "peak_rss_gb": round(peak_kb / 1024 ** 2, 2)}
    (work / "full_run.json").write_text(json.dumps(partial, indent=2) + "\n")  # kept if what follows fails

    old, new = set_threshold(clone / "params.yaml", args.threshold_step)
    before = len(stage_log(clone))
    incremental_s = run([str(clone / ".venv" / "bin" / "dvc"), "repro", "-q"], clone)
    reran = [stage_name(e) for e in stage_log(clone)[before:]]

    per_stage: dict[str, float] = {}
    for entry in full_log:
        name = stage_name(entry)
        per_stage[name] = round(per_stage.get(name, 0.0) + entry["seconds"], 2)
    metrics_written = sorted(p.name for p in (clone / "metrics").glob("*.json"))
    result = {
        "commit": commit,
        "setup_seconds": round(setup_s, 1), "demo_seconds": round(demo_s, 1),
        "total_minutes": round((setup_s + demo_s) / 60, 2),
        "peak_rss_gb": round(peak_kb / 1024 ** 2, 2),
        "metrics_files": metrics_written,
        "stage_seconds_total": round(sum(per_stage.values()), 1),
        "dvc_overhead_seconds": round(demo_s - sum(per_stage.values()), 1),
        "stages": dict(sorted(per_stage.items(), key=lambda kv: -kv[1])),
        "incremental": {"change": f"quality.threshold {old} -> {new}", "seconds": round(incremental_s, 1),
                        "ratio": round(incremental_s / demo_s, 3), "stages_run": reran},
    }
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
