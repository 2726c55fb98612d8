"""The GPU path checked on a CPU: the CUDA lock, the vLLM calls and the DeepSpeed configs.

`make check-gpu` runs `python tools/check_gpu.py all ...`; nothing here needs a GPU, CUDA or an
importable vllm. Three checks, each printing one line per problem:

- lock: requirements/gpu.lock holds the pins its inputs resolve to today (the Makefile re-runs the
  very `uv pip compile` that made it and passes the result as --resolved);
- vllm: every call the project makes into vllm (found in src/ by ast: the `LLM(**kwargs)` keys,
  the keywords of `SamplingParams(...)`, `LoRARequest(...)`'s arguments, `llm.chat(...)`'s) is
  accepted by the locked vllm, read as source from its wheel (zipfile + ast, never imported);
- deepspeed: the ZeRO-3 JSON, completed the way the Trainer completes its "auto" values, passes
  deepspeed's own DeepSpeedConfig, and every accelerate yaml loads with accelerate's config loader.
  This one runs inside a venv holding the lock's deepspeed, accelerate and transformers over the
  CPU torch (--deepspeed-python), as a subprocess of this script.

Standard library only, except the deepspeed check, which imports what that venv holds.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"
# The paper profile that trains under ZeRO-3 (its train.launcher names deepspeed_zero3.yaml): its
# batch settings are what the Trainer writes into ds_zero3.json's "auto" values.
ZERO3_PROFILE = ROOT / "profiles" / "efficient-empathy.yaml"
# CUDA runtime packages: a CPU torch neither needs nor can use them, so the check venv skips them.
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton$|torch$)")


# ---- the lock file --------------------------------------------------------------------------------

@dataclass
class Pin:
    name: str  # normalised (PEP 503)
    version: str
    block: str  # the pin's lines in the lock: requirement, hashes, via comments
    via: set[str] = field(default_factory=set)  # packages that require it (normalised names)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
VIA_NAME = re.compile(r"^#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*$")


def parse_lock(text: str) -> dict[str, Pin]:
    """The pins of a `uv pip compile --generate-hashes` output, with uv's `# via` annotations."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        match = PIN_LINE.match(line)
        if match:
            current = Pin(normalise(match[1]), match[2], line)
            pins[current.name] = current
            continue
        if current is None or not line.startswith((" ", "\t")):
            current = None if not line.strip() or not line.startswith((" ", "\t")) else current
            continue
        current.block += "\n" + line
        via = VIA_NAME.match(line.strip())
        if via and via[1] != "via":
            current.via.add(normalise(via[1]))
    return pins


def closure(pins: dict[str, Pin], roots: Iterable[str]) -> list[Pin]:
    """The roots and everything they require, transitively, by the lock's `# via` lines."""
    requires: dict[str, set[str]] = {}
    for pin in pins.values():
        for parent in pin.via:
            requires.setdefault(parent, set()).add(pin.name)
    todo, seen = [normalise(r) for r in roots], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in pins:
            raise SystemExit(f"check_gpu: {name} is not in the lock")
        seen.add(name)
        todo.extend(requires.get(name, ()))
    return [pins[n] for n in sorted(seen)]


def stale_lock_problems(lock: Path, resolved: Path) -> list[str]:
    """One line if the lock's pins differ from a fresh resolve of the same inputs, else none."""
    have = {n: p.version for n, p in parse_lock(lock.read_text()).items()}
    want = {n: p.version for n, p in parse_lock(resolved.read_text()).items()}
    changes = [f"{n} {have[n]} -> {want[n]}" for n in sorted(have.keys() & want.keys()) if have[n] != want[n]]
    changes += [f"{n} {want[n]} missing" for n in sorted(want.keys() - have.keys())]
    changes += [f"{n} {have[n]} no longer required" for n in sorted(have.keys() - want.keys())]
    if not changes:
        return []
    return [f"{rel(lock)}: does not match its inputs (pyproject.toml, requirements/gpu.in): "
            f"{', '.join(changes)}; run `make lock-gpu`"]


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)



# ---- the project's vLLM calls (from src/, by ast) ---------------------------------------------------

@dataclass
class Argument:
    name: str
    line: int


@dataclass
class ProjectCall:
    """One call into vllm: `symbol` is what is called ("vllm.LLM"; a method: "vllm.LLM.chat")."""

    file: Path
    line: int
    symbol: str
    keywords: list[Argument]
    positional: int
    unresolved: list[str]  # `**x` whose keys could not be read from the code


def project_vllm_calls(src: Path = SRC) -> list[ProjectCall]:
    calls: list[ProjectCall] = []
    for file in sorted(src.rglob("*.py")):
        tree = ast.parse(file.read_text(), str(file))
        bound = vllm_bindings(tree)
        if bound:
            calls += calls_in_module(file, tree, bound)
    return calls


def vllm_bindings(tree: ast.Module) -> dict[str, str]:
    """Local name -> vllm dotted name, from every import of vllm in the module (function-level too)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vllm":
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vllm":
                    bound[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "vllm"
    return bound


def dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def calls_in_module(file: Path, tree: ast.Module, bound: dict[str, str]) -> list[ProjectCall]:
    def symbol_of(func: ast.AST) -> str | None:
        name = dotted(func)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head in bound:
            return bound[head] + (f".{rest}" if rest else "")
        # a method of an object made from a vllm class: `self.llm = LLM(...)`, then `self.llm.chat(...)`
        owner, _, method = name.rpartition(".")
        return f"{instances[owner]}.{method}" if owner in instances else None

    instances: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            made = symbol_of(node.value.func)
            for target in node.targets:
                if made and dotted(target):
                    instances[dotted(target)] = made

    calls = []
    for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
        for node in direct_nodes(function):
            if isinstance(node, ast.Call) and (symbol := symbol_of(node.func)):
                keywords, unresolved = [], []
                for kw in node.keywords:
                    if kw.arg is not None:
                        keywords.append(Argument(kw.arg, kw.lineno))
                        continue
                    keys = dict_keys(function, kw.value)
                    if keys is None:
                        unresolved.append(ast.unparse(kw.value))
                    else:
                        keywords += keys
                calls.append(ProjectCall(file, node.lineno, symbol, keywords,
                                         sum(not isinstance(a, ast.Starred) for a in node.args), unresolved))
    return calls


def direct_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function (or module) body, not those of functions nested in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def dict_keys(function: ast.AST, value: ast.AST) -> list[Argument] | None:
    """The keys a `**name` passes, read from how `name` is built in the function: `name = dict(k=...)`
    or `{"k": ...}`, `name["k"] = ...`, `name.update(k=...)` / `name.update({...})`,
    `name.setdefault("k", ...)`. None when any part of it cannot be read (a key from a variable,
    a `**other` inside, or `name` coming from elsewhere)."""
    if not isinstance(value, ast.Name):
        return None
    name, keys, built = value.id, [], False

    def literal(node: ast.AST) -> list[Argument] | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            return None if any(k.arg is None for k in node.keywords) else [Argument(k.arg, k.lineno) for k in node.keywords]
        if isinstance(node, ast.Dict):
            if not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
                return None
            return [Argument(k.value, k.lineno) for k in node.keys]
        return None

    for node in direct_nodes(function):
        target_value = None
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            target_value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            target_value = node.value
        if target_value is not None:
            found = literal(target_value)
            if found is None:
                return None
            keys += found
            built = True
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)
              and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == name):
            key = node.targets[0].slice
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                return None
            keys.append(Argument(key.value, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == name):
            if node.func.attr == "update":
                if node.args:
                    found = literal(node.args[0]) if len(node.args) == 1 else None
                    if found is None:
                        return None
                    keys += found
                if any(k.arg is None for k in node.keywords):
                    return None
                keys += [Argument(k.arg, k.lineno) for k in node.keywords]
            elif node.func.attr == "setdefault":
                if not (node.args and isinstance(node.args[0], ast.Constant)):
                    return None
                keys.append(Argument(node.args[0].value, node.lineno))
    return keys if built else None


# ---- the locked vllm's source (from the wheel, never imported) --------------------------------------

@dataclass
class Signature:
    """What a callable accepts: keywords, how many positionals (None: any), where that was read."""

    keywords: set[str]
    positional: int | None
    open: bool  # takes **kwargs that go somewhere this reader cannot follow: any keyword passes
    where: list[str]
    guards: list[Guard] = field(default_factory=list)


@dataclass
class Guard:
    """`if <kwargs.get(key) ...>: raise ...` in a constructor: a value of `key` it refuses."""

    key: str
    also: list[str]  # other kwargs the condition reads (passing one may lift the guard)
    where: str
    message: str


class VllmSource:
    """vllm's Python files from a wheel (or a directory holding the `vllm` package), parsed on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None
        self._trees: dict[str, ast.Module | None] = {}

    def read(self, relpath: str) -> str | None:
        if self._zip is not None:
            try:
                return self._zip.read(relpath).decode()
            except KeyError:
                return None
        file = self.path / relpath
        return file.read_text() if file.is_file() else None

    def module(self, dotted_name: str) -> tuple[str, ast.Module] | None:
        """(file, tree) of a module: vllm/a/b.py or vllm/a/b/__init__.py."""
        base = dotted_name.replace(".", "/")
        for relpath in (f"{base}.py", f"{base}/__init__.py"):
            if relpath not in self._trees:
                text = self.read(relpath)
                self._trees[relpath] = ast.parse(text, relpath) if text is not None else None
            if self._trees[relpath] is not None:
                return relpath, self._trees[relpath]
        return None

    def find_class(self, symbol: str, depth: int = 0) -> tuple[str, str, ast.ClassDef] | None:
        """(module name, file, class) for "vllm.x.Name", following re-exports: `from .m import Name`
        and vllm's lazy MODULE_ATTRS table ("Name": ".m:Name")."""
        module_name, _, name = symbol.rpartition(".")
        found = self.module(module_name)
        if found is None or depth > 8:
            return None
        relpath, tree = found
        package = module_name if relpath.endswith("__init__.py") else module_name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return module_name, relpath, node
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return self.find_class(f"{absolute(node, package)}.{alias.name}", depth + 1)
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == "MODULE_ATTRS" for t in node.targets)):
                for key, value in zip(node.value.keys, node.value.values):
                    if isinstance(key, ast.Constant) and key.value == name and isinstance(value, ast.Constant):
                        where, _, attr = value.value.partition(":")
                        target = package + where if where.startswith(".") else where
                        return self.find_class(f"{target}.{attr}", depth + 1)
        return None

    def signature(self, symbol: str, method: str | None = None, depth: int = 0) -> Signature | None:
        """What calling the class `symbol` (or its `method`) accepts; None if it is not in this vllm."""
        found = self.find_class(symbol)
        if found is None:
            return None
        module_name, relpath, cls = found
        package = module_name if relpath.endswith("__init__.py") else module_name.rpartition(".")[0]
        wanted = method or "__init__"
        function = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == wanted), None)
        bases = [b for b in (self._base_symbol(base, relpath, package) for base in cls.bases) if b]
        if function is None and method is not None:
            for base in bases:
                inherited = self.signature(base, method, depth + 1)
                if inherited is not None:
                    return inherited
            return None
        if function is None:
            return self._fields(cls, relpath, package, bases, depth)
        return self._parameters(function, cls, relpath, package, depth)

    def _base_symbol(self, base: ast.AST, relpath: str, package: str) -> str | None:
        name = dotted(base)
        if name is None:
            return None
        module_name = module_of(relpath)
        tree = self.module(module_name)[1]
        head = name.split(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return f"{module_name}.{name}"
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == head:
                        module = absolute(node, package)
                        return f"{module}.{alias.name}" if module.split(".")[0] == "vllm" else None
        return None

    def _parameters(self, function: ast.FunctionDef, cls: ast.ClassDef, relpath: str, package: str,
                    depth: int) -> Signature:
        args = function.args
        params = args.posonlyargs + args.args
        positional = [a.arg for a in params][1:]  # without self
        keywords = {a.arg for a in args.args + args.kwonlyargs} - {params[0].arg if params else ""}
        where = [f"{relpath}:{function.lineno} {cls.name}.{function.name}"]
        sig = Signature(keywords, None if args.vararg else len(positional), open=False, where=where)
        if args.kwarg is None:
            return sig
        # **kwargs: follow them into the call that receives them (LLM.__init__ -> EngineArgs(**kwargs)).
        sig.open = True
        sig.guards = self._guards(function, args.kwarg.arg, relpath)
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and any(
                    k.arg is None and isinstance(k.value, ast.Name) and k.value.id == args.kwarg.arg for k in node.keywords):
                target = self._base_symbol(node.func, relpath, package)
                inner = self.signature(target, None, depth + 1) if target and depth < 8 else None
                if inner is not None:
                    sig.keywords |= inner.keywords
                    sig.where += inner.where
                    sig.guards += inner.guards
                    sig.open = inner.open
        return sig

    def _fields(self, cls: ast.ClassDef, relpath: str, package: str, bases: list[str], depth: int) -> Signature:
        """A dataclass / msgspec.Struct / pydantic model: its annotated fields are its parameters,
        in order (a Struct takes them positionally too), after those of its vllm base classes."""
        names: list[str] = []
        for base in bases:
            inherited = self.signature(base, None, depth + 1) if depth < 8 else None
            if inherited is not None:
                names += sorted(inherited.keywords)
        for node in cls.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            if "ClassVar" in ast.unparse(node.annotation):
                continue
            value = node.value
            if (isinstance(value, ast.Call) and (dotted(value.func) or "").split(".")[-1] == "field"
                    and any(k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
                            for k in value.keywords)):
                continue
            names.append(node.target.id)
        return Signature(set(names), len(names), open=False, where=[f"{relpath}:{cls.lineno} {cls.name}"])

    @staticmethod
    def _guards(function: ast.FunctionDef, kwargs_name: str, relpath: str) -> list[Guard]:
        """Conditions on `kwargs.get("key")` that raise: values of a keyword the constructor refuses."""
        def key_read(node: ast.AST) -> str | None:
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "get"
                        and isinstance(sub.func.value, ast.Name) and sub.func.value.id == kwargs_name
                        and sub.args and isinstance(sub.args[0], ast.Constant)):
                    return sub.args[0].value
            return None

        variables = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                key = key_read(node.value)
                if key:
                    variables[node.targets[0].id] = key
        guards = []
        for node in ast.walk(function):
            if not isinstance(node, ast.If):
                continue
            raised = next((n for n in node.body if isinstance(n, ast.Raise)), None)
            if raised is None:
                continue
            read = [variables[n.id] for n in ast.walk(node.test) if isinstance(n, ast.Name) and n.id in variables]
            read += [k for k in [key_read(node.test)] if k]
            if read:
                guards.append(Guard(read[0], sorted(set(read[1:])), f"{relpath}:{raised.lineno}", message_of(raised)))
        return guards


def module_of(relpath: str) -> str:
    """vllm/a/b.py or vllm/a/b/__init__.py -> vllm.a.b"""
    return relpath.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module an ImportFrom names, inside `package` for a relative one."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def message_of(raised: ast.Raise) -> str:
    """The text of `raise E("...")`, formatted fields shown as {...}, cut to one short line."""
    exc = raised.exc
    if not (isinstance(exc, ast.Call) and exc.args):
        return ast.unparse(exc) if exc else "raise"
    text = ""
    for part in ast.walk(exc.args[0]):
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            text += part.value
        elif isinstance(part, ast.FormattedValue):
            text += "{...}"
    text = " ".join(text.split())
    return f"{type_name(exc)}: {text[:110]}{'...' if len(text) > 110 else ''}"


def type_name(exc: ast.Call) -> str:
    return dotted(exc.func) or "exception"


def vllm_api_problems(source: VllmSource, version: str, src: Path = SRC) -> tuple[list[str], list[ProjectCall]]:
    """One line per project argument the locked vllm does not accept (or refuses outright)."""
    problems, calls = [], project_vllm_calls(src)
    for call in calls:
        cls, _, method = call.symbol.rpartition(".")
        sig = source.signature(call.symbol)
        if sig is None and source.find_class(cls) is not None:  # a method of a vllm class
            sig = source.signature(cls, method)
        what = call.symbol.removeprefix("vllm.").split(".")[-1] if sig is not None else call.symbol
        where = f"{rel(call.file)}:{call.line}"
        if sig is None:
            problems.append(f"{where}: {call.symbol} does not exist in vllm {version}")
            continue
        read_in = " -> ".join(sig.where)
        if sig.positional is not None and call.positional > sig.positional:
            problems.append(f"{where}: {what}() takes {sig.positional} positional argument(s) in vllm {version}, "
                            f"the project passes {call.positional} ({read_in})")
        for name in call.unresolved:
            problems.append(f"{where}: {what}(**{name}): cannot tell which arguments it passes; "
                            "build it as a dict literal, dict(...), [...] = or .update(...) in the same function")
        passed = {a.name for a in call.keywords}
        for arg in call.keywords:
            if arg.name not in sig.keywords and not sig.open:
                problems.append(f"{rel(call.file)}:{arg.line}: {what}({arg.name}=...) is not an argument of "
                                f"vllm {version} ({read_in})")
        for guard in sig.guards:
            if guard.key in passed and not (set(guard.also) & passed):
                unless = f" unless {' or '.join(guard.also)} is passed too" if guard.also else ""
                problems.append(f"{where}: {what}({guard.key}=...) is refused by vllm {version} for values "
                                f"other than its default{unless} ({guard.where}: {guard.message})")
    return problems, calls



# The LoRA ranks: vLLM takes only some max_lora_rank values, and the backend picks one from its own
# list (VLLM_MAX_LORA_RANKS in llm/vllm.py), which must be the locked vllm's.
RANKS_CONSTANT, RANKS_FILE, RANKS_LITERAL = "VLLM_MAX_LORA_RANKS", "vllm/config/lora.py", "MaxLoRARanks"


def module_value(tree: ast.Module, name: str) -> ast.expr | None:
    """The expression assigned to `name` at module level (`name = ...` or `name: T = ...`)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def lora_rank_problems(source: VllmSource, version: str, src: Path = SRC) -> tuple[list[str], list[str]]:
    """The project's list of max_lora_rank values against vllm's `MaxLoRARanks = Literal[...]`."""
    ours = [(f, module_value(ast.parse(f.read_text(), str(f)), RANKS_CONSTANT)) for f in sorted(src.rglob("*.py"))]
    ours = [(f, v) for f, v in ours if v is not None]
    if not ours:
        return [], []
    file, value = ours[0]
    project_ranks = tuple(ast.literal_eval(value))
    text = source.read(RANKS_FILE)
    literal = module_value(ast.parse(text, RANKS_FILE), RANKS_LITERAL) if text is not None else None
    if not isinstance(literal, ast.Subscript):
        return [f"{rel(file)}:{value.lineno}: {RANKS_CONSTANT}: vllm {version} has no {RANKS_LITERAL} = "
                f"Literal[...] in {RANKS_FILE} to check it against"], []
    vllm_ranks = tuple(ast.literal_eval(literal.slice))
    if project_ranks != vllm_ranks:
        return [f"{rel(file)}:{value.lineno}: {RANKS_CONSTANT} = {project_ranks}, but vllm {version} takes "
                f"max_lora_rank in {vllm_ranks} ({RANKS_FILE} {RANKS_LITERAL})"], []
    return [], [f"vllm {version}: max_lora_rank values {vllm_ranks} = {rel(file)} {RANKS_CONSTANT}"]


# ---- DeepSpeed ZeRO-3 and accelerate configs (run inside the check venv) --------------------------

# Llama-3-8B-Instruct's hidden_size (its config.json): the Trainer sizes ds_zero3.json's "auto"
# buckets from the model's hidden size; any positive value validates the same way.
ZERO3_HIDDEN_SIZE = 4096


class DataParallelWorld:
    """The `mpu` DeepSpeedConfig asks for its data-parallel world size: the config's batch rule
    (train_batch_size = micro batch x accumulation x GPUs) is checked for the GPU count the
    accelerate yaml launches, not for this one CPU process."""

    def __init__(self, size: int):
        self.size = size

    def get_data_parallel_world_size(self) -> int:
        return self.size

    def get_data_parallel_rank(self) -> int:
        return 0

    def get_model_parallel_world_size(self) -> int:
        return 1


def one_line(exc: BaseException) -> str:
    if callable(getattr(exc, "errors", None)) and hasattr(exc, "title"):  # pydantic: model.field: message
        return "; ".join(f"{exc.title}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                         for e in exc.errors())
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    return f"{type(exc).__name__}: {'; '.join(lines)[:300]}"


def train_settings(profile: Path) -> dict:
    """params.yaml's train section with the profile's train keys on top (what `empathy profile` does)."""
    import yaml

    train = dict(yaml.safe_load((ROOT / "params.yaml").read_text()).get("train") or {})
    train.update((yaml.safe_load(profile.read_text()) or {}).get("train") or {})
    return train


def deepspeed_problems(config_dir: Path = ACCELERATE_CONFIGS, profile: Path = ZERO3_PROFILE) -> tuple[list[str], list[str]]:
    """(problems, what was checked): every accelerate yaml through accelerate's loader; each ZeRO
    config one points at, completed as the Trainer completes it, through DeepSpeedConfig."""
    import accelerate
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    problems, checked = [], []
    for yaml_file in sorted(config_dir.glob("*.yaml")):
        try:
            cluster = load_config_from_file(str(yaml_file))
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"{rel(yaml_file)}: accelerate {accelerate.__version__} cannot load it ({one_line(exc)})")
            continue
        checked.append(f"{rel(yaml_file)} ({cluster.distributed_type.value}, accelerate {accelerate.__version__})")
        if cluster.distributed_type != DistributedType.DEEPSPEED:
            continue
        ds = cluster.deepspeed_config or {}
        json_file = ds.get("deepspeed_config_file")
        if not json_file or not (ROOT / json_file).is_file():
            problems.append(f"{rel(yaml_file)}: deepspeed_config_file {json_file!r} is not a file")
            continue
        found, stage = zero_config_problems(ROOT / json_file, int(cluster.num_processes), train_settings(profile))
        problems += found
        if not found:
            checked.append(f"{json_file} (ZeRO stage {stage} on {cluster.num_processes} GPUs)")
        if ds.get("zero3_init_flag") and stage not in (None, 3):
            problems.append(f"{rel(yaml_file)}: zero3_init_flag needs ZeRO stage 3, {json_file} has {stage}")
    return problems, checked


def zero_config_problems(json_file: Path, world_size: int, train: dict) -> tuple[list[str], int | None]:
    """([problem], stage): the ZeRO config with its "auto" values filled by transformers'
    HfTrainerDeepSpeedConfig from `train`, as the Trainer does, then built by DeepSpeedConfig."""
    import deepspeed
    import hjson  # deepspeed's own reader of its config files (duplicate keys are an error)
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.config_utils import dict_raise_error_on_duplicate_keys
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    where = f"{rel(json_file)}: deepspeed {deepspeed.__version__} rejects it"
    try:
        config = hjson.loads(json_file.read_text(), object_pairs_hook=dict_raise_error_on_duplicate_keys)
    except (ValueError, hjson.HjsonDecodeError) as exc:
        return [f"{where} ({one_line(exc)})"], None

    class ArgumentsOnGpus(TrainingArguments):
        # The Trainer reads the process count from the launched world; here it is the yaml's.
        @property
        def world_size(self) -> int:
            return world_size

    args = ArgumentsOnGpus(output_dir=str(ROOT / ".cache" / "gpucheck-trainer"), report_to="none", use_cpu=True,
                           per_device_train_batch_size=int(train["batch_size"]),
                           gradient_accumulation_steps=int(train["gradient_accumulation_steps"]),
                           bf16=bool(train["bf16"]), learning_rate=float(train["learning_rate"]))

    class ModelShape:
        class config:
            hidden_size = ZERO3_HIDDEN_SIZE

    try:
        filled = HfTrainerDeepSpeedConfig(config)
        filled.trainer_config_process(args)
        filled.trainer_config_finalize(args, ModelShape(), num_training_steps=1000)
    except ValueError as exc:  # transformers names values that disagree with TrainingArguments
        return [f"{rel(json_file)}: the Trainer rejects it ({one_line(exc)})"], None
    init_gloo_once()
    try:
        built = DeepSpeedConfig(filled.config, mpu=DataParallelWorld(world_size))
    except (ValueError, AssertionError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
        return [f"{where} ({one_line(exc)})"], None
    # Some fields DeepSpeed reads leniently; an "auto" left there would reach the engine as a string.
    still_auto = sorted(key for key, value in flatten(filled.config) if value == "auto")
    if still_auto:
        return [f"{rel(json_file)}: the Trainer leaves {', '.join(still_auto)} as \"auto\" (set a value)"], None
    return [], int(built.zero_optimization_stage)


def flatten(config: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in config.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def init_gloo_once() -> None:
    """A one-process gloo group: DeepSpeedConfig reads its rank from torch.distributed."""
    import os
    import socket

    import deepspeed

    if deepspeed.comm.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)


# ---- command line ---------------------------------------------------------------------------------

def sublock(lock: Path, only: list[str], closure_of: list[str]) -> str:
    """Requirement lines with hashes, for pip --require-hashes: the named pins, or a closure of them
    without the CUDA runtime (the check venv runs a CPU torch installed beforehand)."""
    pins = parse_lock(lock.read_text())
    chosen = [pins[normalise(n)] for n in only] + [p for p in closure(pins, closure_of) if not CUDA_ONLY.match(p.name)]
    return "".join(p.block + "\n" for p in chosen)


def locked_vllm(lock: Path, dist_dir: Path) -> tuple[str, Path]:
    """(version, wheel) of the vllm pinned in the lock, from the download directory."""
    version = parse_lock(lock.read_text())["vllm"].version
    wheels = sorted(dist_dir.glob(f"vllm-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"check_gpu: no vllm-{version} wheel in {dist_dir} (`make check-gpu` downloads it)")
    return version, wheels[0]


def run_deepspeed_check(python: Path, config_dir: Path) -> tuple[list[str], list[str]]:
    """deepspeed_problems() in the venv that holds deepspeed (its logging kept out of our output)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        run = subprocess.run([str(python), __file__, "deepspeed", "--configs", str(config_dir), "--report", str(report)],
                             capture_output=True, text=True)
        if not report.exists():
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
            return [f"deepspeed check: {python} failed (exit {run.returncode}): {tail[0]}"], []
        result = json.loads(report.read_text())
    return result["problems"], result["checked"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sublock", help="print pins of the lock, with hashes")
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--only", nargs="*", default=[], help="these pins alone")
    p.add_argument("--closure-of", nargs="*", default=[], help="these pins and what they require, minus CUDA")
    p = sub.add_parser("all", help="the three checks (what `make check-gpu` runs)")
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--resolved", type=Path, required=True, help="a fresh resolve of the lock's inputs")
    p.add_argument("--dist-dir", type=Path, required=True, help="where the lock's vllm wheel was downloaded")
    p.add_argument("--vllm-source", type=Path, help="a vllm wheel or source tree instead of the downloaded wheel")
    p.add_argument("--src", type=Path, default=SRC, help="the project code whose vllm calls are checked")
    p.add_argument("--deepspeed-python", type=Path, required=True, help="python of the venv holding deepspeed")
    p.add_argument("--configs", type=Path, default=ACCELERATE_CONFIGS)
    p = sub.add_parser("deepspeed", help="the DeepSpeed/accelerate part alone (run by the check venv's python)")
    p.add_argument("--configs", type=Path, default=ACCELERATE_CONFIGS)
    p.add_argument("--report", type=Path, help="write {problems, checked} as JSON here")
    args = parser.parse_args(argv)

    if args.command == "sublock":
        sys.stdout.write(sublock(args.lock, args.only, args.closure_of))
        return 0
    if args.command == "deepspeed":
        problems, checked = deepspeed_problems(args.configs)
        if args.report:
            args.report.write_text(json.dumps({"problems": problems, "checked": checked}))
        return report(problems, checked)

    problems = stale_lock_problems(args.lock, args.resolved)
    checked = [f"{rel(args.lock)} matches its inputs ({len(parse_lock(args.lock.read_text()))} pins)"] if not problems else []
    version, wheel = locked_vllm(args.lock, args.dist_dir)
    source = VllmSource(args.vllm_source or wheel)
    found, calls = vllm_api_problems(source, version, args.src)
    problems += found
    found, ranks_checked = lora_rank_problems(source, version, args.src)
    problems += found
    checked += ranks_checked
    n_args = sum(len(c.keywords) + c.positional for c in calls)
    checked.append(f"vllm {version}: {len(calls)} calls, {n_args} arguments in "
                   f"{', '.join(sorted({rel(c.file) for c in calls}))} against {(args.vllm_source or wheel).name}")
    found, ds_checked = run_deepspeed_check(args.deepspeed_python, args.configs)
    return report(problems + found, checked + ds_checked)


def report(problems: list[str], checked: list[str]) -> int:
    for line in checked:
        print(f"ok: {line}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
