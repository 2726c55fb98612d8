"""dvc.yaml is the one source of truth, checked without running anything (ast and YAML only).

For every stage: its deps list every module of the package that its script imports, directly or
through other modules (the import closure); every path its command passes to an `In` option is a
dep and every path passed to an `Out` option is an out, metric or plot; and every params section
the script loads is among the stage's params. A missed dep is how `dvc repro` ends up saying
"up to date" after a change to the code that made the numbers. The closure is tools/stage_deps.py's,
which also writes the lists (`python tools/stage_deps.py write`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from dvc_spec import ROOT, STAGES, command, covered, paths

sys.path.insert(0, str(ROOT / "tools"))
from stage_deps import import_closure, rewrite  # noqa: E402


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


def test_closure_follows_lazy_imports_and_package_inits():
    """The checker itself: a module reached only through an import inside a function counts, and so
    does every __init__.py on the way."""
    closure = {str(p.relative_to(ROOT / "src/empathy_pipeline")) for p in import_closure(ROOT / "stages" / "train.py")}
    # train.py imports modeling.training lazily inside main(); training imports data.chat at its top.
    assert {"modeling/training.py", "data/chat.py", "core/params.py", "core/stage.py", "core/errors.py",
            "__init__.py", "modeling/__init__.py", "data/__init__.py"} <= closure


def test_closure_follows_relative_imports(tmp_path, monkeypatch):
    """A relative import (`from ..core import io`) counts like an absolute one."""
    import stage_deps

    package = tmp_path / "src" / "empathy_pipeline"
    (package / "core").mkdir(parents=True)
    (package / "data").mkdir()
    for init in ("__init__.py", "core/__init__.py", "data/__init__.py"):
        (package / init).write_text('"""x"""\n')
    (package / "core" / "io.py").write_text("X = 1\n")
    (package / "data" / "ed.py").write_text("def f():\n    from ..core import io\n    return io.X\n")
    script = tmp_path / "stage.py"
    script.write_text("from empathy_pipeline.data import ed\n")
    monkeypatch.setattr(stage_deps, "PACKAGE_DIR", package)
    closure = {str(p.relative_to(package)) for p in stage_deps.import_closure(script)}
    assert closure == {"__init__.py", "data/__init__.py", "data/ed.py", "core/__init__.py", "core/io.py"}


def test_the_committed_dvc_yaml_is_what_the_tool_writes():
    """`python tools/stage_deps.py write` would change nothing: the module lists are the closures, sorted."""
    text = (ROOT / "dvc.yaml").read_text()
    assert rewrite(text) == text


def test_a_removed_dep_is_caught(monkeypatch):
    """Drop one module from a stage's deps: the check must fail for that stage."""
    stage = dict(STAGES["split"])
    stage["deps"] = [d for d in stage["deps"] if d != "src/empathy_pipeline/efficient_empathy/split.py"]
    monkeypatch.setitem(STAGES, "split", stage)
    with pytest.raises(AssertionError, match="split.py"):
        test_deps_list_every_module_the_stage_imports("split")
