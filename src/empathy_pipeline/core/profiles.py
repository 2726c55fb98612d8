"""Params profiles: `profiles/<name>.yaml` lists the values a profile sets; applying one rewrites
those keys of params.yaml in place (ruamel.yaml, shipped with DVC, keeps the comments)."""

from __future__ import annotations

from pathlib import Path

from empathy_pipeline.core.errors import PipelineError

PROFILES_DIR = Path(__file__).resolve().parents[3] / "profiles"


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> dict[str, object]:
    from ruamel.yaml import YAML

    path = profiles_dir / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in profiles_dir.glob("*.yaml")))
        raise PipelineError(f"unknown profile {name!r} (known: {known})")
    return _flatten(YAML(typ="safe").load(path.read_text()) or {})


def apply_profile(name: str, params_file: Path, profiles_dir: Path = PROFILES_DIR) -> list[str]:
    """Set every key of the profile in params_file; returns the dotted keys whose value changed."""
    return set_params(params_file, load_profile(name, profiles_dir), f"profiles/{name}.yaml")


def set_params(params_file: Path, values: dict[str, object], source: str = "override") -> list[str]:
    """Set dotted keys (`quality.threshold`) of params_file in place, keeping its comments; returns
    the keys whose value changed. A key params_file lacks is an error naming `source`."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    # Write nulls as `null` (ruamel's default is an empty value), as params.yaml does.
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    if not params_file.exists():
        raise PipelineError(f"{params_file}: params file not found")
    doc = yaml.load(params_file.read_text())
    changed = []
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = doc
        for key in parents:
            if key not in node or not hasattr(node[key], "keys"):
                raise PipelineError(f"{source}: {dotted} has no place in {params_file}")
            node = node[key]
        if leaf not in node:
            raise PipelineError(f"{source}: {dotted} is not a key of {params_file}")
        if node[leaf] != value:
            changed.append(dotted)
            node[leaf] = value
    with params_file.open("w") as fh:
        yaml.dump(doc, fh)
    return changed
