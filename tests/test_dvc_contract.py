"""dvc.yaml is the one source of truth, checked without running anything (ast and YAML only).

For every stage: its deps list every module of the package that its script imports, directly or
through other modules (the import closure); every path its command passes to an `In` option is a
dep and every path passed to an `Out` option is an out, metric or plot; and every params section
the script loads is among the stage's params. A missed dep is how `dvc repro` ends up saying
"up to date" after a change to the code that made the numbers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from dvc_spec import ROOT, STAGES, command, covered, paths

PACKAGE = "empathy_pipeline"
PACKAGE_DIR = ROOT / "src" / PACKAGE


# ---- the import closure -------------------------------------------------------------------------

def _module_file(dotted: str) -> Path | None:
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    else:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[Path]:
    """Package modules imported by one file (absolute, relative, `from pkg import module`, lazy ones too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[Path] = set()
    inside = path.is_relative_to(PACKAGE_DIR)
    for node in _runtime_nodes(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not inside:
                    continue
                package = _package_of(path).split(".")
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
        for name in names:
            # importing a.b.c also runs a/__init__.py and a/b/__init__.py
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                module = _module_file(".".join(parts[:i]))
                if module is not None:
                    found.add(module)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations never run).

    Imports inside functions count: which branch runs can depend on params (the LLM backend), so
    a lazy import is a dependency as surely as a top-level one.
    """
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = list(_imports(script))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_imports(module) - seen)
    return seen


def _option_kinds(script: Path) -> dict[str, str]:
    """Parameter name -> annotation name (In, Out, Ins, str, ...) of the script's main()."""
    tree = ast.parse(script.read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    return {a.arg: ast.unparse(a.annotation) for a in main.args.args}


def _loaded_sections(script: Path, options: dict[str, list[str]]) -> set[str]:
    """Params sections the script reads with params.load(...): literals, or an option's value."""
    sections = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "params"):
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                sections.add(arg.value)
            elif isinstance(arg, ast.Name):
                sections.update(options[arg.id])
    return sections


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_list_every_module_the_stage_imports(name):
    stage = STAGES[name]
    script, _ = command(stage)
    deps = paths(stage.get("deps"))
    needed = {str(p.relative_to(ROOT)) for p in import_closure(script)} | {str(script.relative_to(ROOT))}
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {name}: deps miss {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_command_paths_are_declared(name):
    stage = STAGES[name]
    script, options = command(stage)
    kinds = _option_kinds(script)
    assert set(options) == set(kinds), f"{name}: cmd options {sorted(options)} != main() parameters {sorted(kinds)}"
    deps = paths(stage.get("deps"))
    outs = paths(stage.get("outs")) | paths(stage.get("metrics")) | paths(stage.get("plots"))
    for option, values in options.items():
        for value in values:
            if kinds[option] in ("In", "Ins"):
                assert covered(value, deps), f"{name}: --{option} {value} is not a dep"
            elif kinds[option] == "Out":
                assert covered(value, outs), f"{name}: --{option} {value} is not an out, metric or plot"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_sections_are_declared(name):
    stage = STAGES[name]
    script, options = command(stage)
    declared = {p.split(".")[0] for p in stage.get("params", []) if isinstance(p, str)}
    missing = sorted(_loaded_sections(script, options) - declared)
    assert not missing, f"dvc.yaml stage {name}: params miss {missing}"


def test_no_stage_script_names_a_data_path():
    """Paths come from dvc.yaml: a stage script holds no literal under data/, models/, metrics/, plots/, outputs/."""
    roots = ("data/", "models/", "metrics/", "plots/", "outputs/")
    for script in sorted((ROOT / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith(roots), f"{script.name}: path literal {node.value!r}"


def test_stage_scripts_are_wiring_only():
    for script in sorted((ROOT / "stages").glob("*.py")):
        code = [line for line in script.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert len(code) <= 40, f"{script.name}: {len(code)} lines; move the logic into the package"


def test_closure_follows_relative_and_lazy_imports(tmp_path):
    """The checker itself: a module reached only through a relative import inside a function counts."""
    closure = {p.name for p in import_closure(ROOT / "stages" / "train.py")}
    # train.py imports training lazily inside main(); training imports prompts relatively.
    assert {"training.py", "prompts.py", "params.py", "stage.py", "errors.py"} <= closure


def test_a_removed_dep_is_caught(monkeypatch):
    """Drop one module from a stage's deps: the check must fail for that stage."""
    stage = dict(STAGES["split"])
    stage["deps"] = [d for d in stage["deps"] if d != "src/empathy_pipeline/split.py"]
    monkeypatch.setitem(STAGES, "split", stage)
    with pytest.raises(AssertionError, match="split.py"):
        test_deps_list_every_module_the_stage_imports("split")
