"""dvc.yaml as the tests read it: stages with foreach expanded and ${...} interpolated, and each
stage's command split into its script and options. Tests run stage scripts with exactly the
command line dvc.yaml gives them (`stage_argv`), so no test repeats a stage's paths."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


# ---- dvc.yaml, with foreach expanded ---------------------------------------------------------------

def _substitute(value, key: str, item):
    if isinstance(value, str):
        value = value.replace("${key}", key)
        if isinstance(item, dict):
            for k, v in item.items():
                value = value.replace(f"${{item.{k}}}", str(v))
        else:
            value = value.replace("${item}", str(item))
        return value
    if isinstance(value, list):
        return [_substitute(v, key, item) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, key, item): _substitute(v, key, item) for k, v in value.items()}
    return value


def stages() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    out: dict[str, dict] = {}
    for name, stage in spec["stages"].items():
        if "foreach" in stage:
            items = stage["foreach"]
            if isinstance(items, str):  # foreach: ${section} iterates a params dict (DVC's own rule)
                items = lookup(params, re.fullmatch(r"\$\{([a-z_][a-z_.0-9]*)\}", items).group(1))
            pairs = items.items() if isinstance(items, dict) else ((str(i), i) for i in items)
            for key, item in pairs:
                out[f"{name}@{key}"] = _substitute(stage["do"], key, item)
        else:
            out[name] = stage
    for stage in out.values():  # ${section.key} from params.yaml, as DVC interpolates them
        stage["cmd"] = _interpolate(stage["cmd"], params)
        stage["deps"] = [_interpolate(d, params) for d in stage.get("deps", [])]
    return out


def lookup(tree: dict, dotted: str):
    """The value at a dotted params key (`train.max_steps`)."""
    node = tree
    for key in dotted.split("."):
        node = node[key]
    return node


def _interpolate(text: str, params: dict) -> str:
    def value(match):
        return str(lookup(params, match.group(1)))

    return re.sub(r"\$\{([a-z_][a-z_.0-9]*)\}", value, text)


def paths(entries) -> set[str]:
    names = set()
    for entry in entries or []:
        names.update(entry if isinstance(entry, dict) else [entry])
    return {str(Path(n)) for n in names}


def covered(path: str, declared: set[str]) -> bool:
    """The path itself, or a file inside a declared directory (data/split/x.parquet in data/split)."""
    p = Path(path)
    return any(p == Path(d) or Path(d) in p.parents for d in declared)


def command(stage: dict) -> tuple[Path, dict[str, list[str]]]:
    """(the script, {option: [values]}) of `<launcher> stages/x.py --opt value ...`."""
    words = shlex.split(stage["cmd"])
    script = next(i for i, w in enumerate(words) if w.startswith("stages/") and w.endswith(".py"))
    options: dict[str, list[str]] = {}
    rest = words[script + 1:]
    for i, word in enumerate(rest):
        if word.startswith("--"):
            options.setdefault(word[2:].replace("-", "_"), []).append(rest[i + 1])
    return ROOT / words[script], options




def stage_argv(name: str, **overrides: str) -> list[str]:
    """The argv dvc would run for stage `name`, with this interpreter and the script's absolute path;
    `overrides` replace the value of single-valued options (source="other/dir" for --source)."""
    script, _ = command(STAGES[name])
    words = shlex.split(STAGES[name]["cmd"])
    at = next(i for i, w in enumerate(words) if w.startswith("stages/"))
    args = words[at + 1:]
    for option, value in overrides.items():
        flag = "--" + option.replace("_", "-")
        args[args.index(flag) + 1] = str(value)
    return [sys.executable, str(script), *args]


STAGES = stages()
