"""Which package modules each DVC stage runs, and which stages an edit of a module makes stale.

dvc.yaml lists, under each stage's script, every module of src/empathy_pipeline that the script
imports directly or through other modules (the import closure, lazy imports inside functions
included: which branch runs can depend on params). DVC reruns a stage when one of its deps changes,
so a module is the unit that decides what reruns: this tool keeps those lists true and says what an
edit of each module costs.

    python tools/stage_deps.py check        # exit 1, one line per stage whose module deps are wrong
    python tools/stage_deps.py write        # rewrite the module lists in dvc.yaml from the closures
    python tools/stage_deps.py invalidates  # per module: the stages that list it, and those downstream

Stages, their deps and outs come from DVC itself (foreach expanded, ${...} interpolated). The
closure is read with ast from the files; nothing of the package is imported.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "empathy_pipeline"
PACKAGE_DIR = ROOT / "src" / PACKAGE
MARKER = "# and every package module it imports:"


# ---- the import closure -------------------------------------------------------------------------

def module_file(dotted: str) -> Path | None:
    """The file of a dotted module name of the package (a module or a package's __init__.py)."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return parts[:-1]  # a module's package; for an __init__.py, the package it starts


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports(path: Path) -> set[Path]:
    """Package modules one file imports (absolute, relative, `from pkg import module`, lazy ones too)."""
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
                package = _package_of(path)
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c also runs a/__init__.py and a/b/__init__.py
                module = module_file(".".join(parts[:i]))
                if module is not None:
                    found.add(module)
    return found


def import_closure(script: Path) -> set[Path]:
    """Every package module that running `script` can import."""
    seen: set[Path] = set()
    todo = list(imports(script))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imports(module) - seen)
    return seen


def relative(paths) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in paths)


# ---- the stages, as DVC reads them ----------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    name: str                 # as `dvc repro` names it: train_expert@sensibility
    script: str               # stages/x.py
    deps: tuple[str, ...]
    outs: tuple[str, ...]


def stages(root: Path = ROOT) -> list[Stage]:
    from dvc.repo import Repo

    out = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            script = re.search(r"\bstages/\w+\.py\b", stage.cmd or "")
            out.append(Stage(stage.addressing, script.group(0) if script else "",
                             tuple(str(d.def_path) for d in stage.deps), tuple(str(o.def_path) for o in stage.outs)))
    return out


def _inside(path: str, outs: tuple[str, ...]) -> bool:
    p = Path(path)
    return any(p == Path(o) or Path(o) in p.parents or p in Path(o).parents for o in outs)


def downstream(all_stages: list[Stage], names: set[str]) -> set[str]:
    """`names` and every stage that reads, directly or not, what one of them writes."""
    reached, todo = set(names), list(names)
    by_name = {s.name: s for s in all_stages}
    while todo:
        outs = by_name[todo.pop()].outs
        for stage in all_stages:
            if stage.name not in reached and any(_inside(dep, outs) for dep in stage.deps):
                reached.add(stage.name)
                todo.append(stage.name)
    return reached


def invalidates(all_stages: list[Stage], module: str) -> tuple[set[str], set[str]]:
    """(the stages that list `module` among their deps, those and every stage downstream of them)."""
    direct = {s.name for s in all_stages if module in s.deps}
    return direct, downstream(all_stages, direct)


def package_modules() -> list[str]:
    return relative(p for p in PACKAGE_DIR.rglob("*.py") if "metric_modules" not in p.parts)


# ---- checking and writing dvc.yaml ----------------------------------------------------------------

def problems(all_stages: list[Stage]) -> list[str]:
    """One line per stage whose deps miss a module its script imports, or list one it does not."""
    lines = []
    for stage in all_stages:
        if not stage.script:
            continue
        needed = set(relative(import_closure(ROOT / stage.script)))
        listed = {d for d in stage.deps if d.startswith(f"src/{PACKAGE}/")}
        if missing := sorted(needed - listed):
            lines.append(f"{stage.name}: deps miss {', '.join(missing)}")
        if extra := sorted(listed - needed):
            lines.append(f"{stage.name}: deps list {', '.join(extra)}, which {stage.script} never imports")
    return lines


def rewrite(text: str) -> str:
    """dvc.yaml with the module list under every `- stages/x.py   # and every package module it imports:`
    replaced by the closure of stages/x.py (sorted), the rest of the file as it was."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        match = re.match(r"^(\s*)- (stages/\w+\.py)\s+" + re.escape(MARKER), line)
        if not match:
            continue
        indent, script = match.groups()
        while i < len(lines) and re.match(rf"^{indent}- src/{PACKAGE}/", lines[i]):
            i += 1
        out.extend(f"{indent}- {path}\n" for path in relative(import_closure(ROOT / script)))
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("check", "write", "invalidates"))
    args = parser.parse_args(argv)
    dvc_yaml = ROOT / "dvc.yaml"
    if args.command == "write":
        dvc_yaml.write_text(rewrite(dvc_yaml.read_text()))
        return 0
    all_stages = stages()
    if args.command == "check":
        found = problems(all_stages)
        print("\n".join(found) if found else "stage deps: every stage lists exactly the modules it imports")
        return 1 if found else 0
    print(f"{'module':<48}{'lists it':>9}{'+ downstream':>14}")
    for module in package_modules():
        direct, reached = invalidates(all_stages, module)
        print(f"{module.removeprefix(f'src/{PACKAGE}/'):<48}{len(direct):>9}{len(reached):>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
