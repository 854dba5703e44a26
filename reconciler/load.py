"""Load and validate: the files of one revision -> a resolved `Desired`, or every error at once.

The first pure step of the flow, after `source` has read the files of a
revision. Two phases, so the source can cache the first by blob id:

- `parse_file` (per file): YAML with positions, hostile-input limits, apiVersion
  and kind, the pydantic schema, inline secrets. Depends on the file alone.
- `assemble` (per revision): unique (kind, name), references, cycles, params
  against the pipeline's inputs, then resolution into `Desired`.

Every problem becomes a `Diagnostic` (`path:line:col: message`), sorted; a
revision with any diagnostic yields no `Desired`, so nothing from it is acted on.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.desired import Desired, ResolvedResource, Resolver, merge_layers
from reconciler.errors import Diagnostic
from reconciler.model import RESOURCE_KINDS, SUPPORTED_VERSIONS, Input, document_class
from reconciler.model.common import SECRET_LOOKING_KEY, is_secret_ref
from reconciler.model.kinds import PolicySpec
from reconciler.model.versions import to_hub
from reconciler.yamlpos import YamlFault, YamlLimits, document_root, locate, parse_documents

IGNORE_FILE = ".reconcilerignore"
CONTROLLER_DIRS = ("status", "reports", "audit", "plans")
"""Top-level folders the controller writes; never read back as declared state."""

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedDocument:
    document: Any
    kind: str
    name: str
    path: str
    index: int
    line: int
    col: int

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class ParsedFile:
    path: str
    documents: tuple[LoadedDocument, ...]
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class LoadResult:
    desired: Desired | None
    diagnostics: tuple[Diagnostic, ...]
    documents: int = 0
    files: int = 0

    @property
    def ok(self) -> bool:
        return self.desired is not None and not self.diagnostics


# --- which files hold documents ---------------------------------------------------


def read_ignore_patterns(data: bytes | None) -> tuple[str, ...]:
    """Glob patterns of a `.reconcilerignore` file, one per line, `#` comments."""
    if not data:
        return ()
    lines = data.decode("utf-8", errors="replace").splitlines()
    return tuple(p.strip() for p in lines if p.strip() and not p.strip().startswith("#"))


def is_declared_path(path: str, ignore_patterns: Sequence[str] = ()) -> bool:
    """YAML files outside hidden folders, the controller's own folders and ignored paths."""
    pure = PurePosixPath(path)
    if pure.suffix not in (".yaml", ".yml"):
        return False
    if any(part.startswith(".") for part in pure.parts) or pure.parts[0] in CONTROLLER_DIRS:
        return False
    prefixes = ["/".join(pure.parts[: i + 1]) for i in range(len(pure.parts))]
    for pattern in ignore_patterns:
        pattern = pattern.strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return False
    return True


# --- phase 1: one file ----------------------------------------------------------------


def _dotted(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Any, found: Loc) -> tuple[str, bool]:
    """A message for one pydantic error, and whether it points at a key (not a value)."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _dotted(found[:-1])
        return f"unknown field {loc[-1]!r}" + (f" in {parent}" if parent else ""), True
    if kind == "missing":
        where = _dotted(found)
        return f"missing required field {loc[-1]!r}" + (f" in {where}" if where else ""), False
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    where = _dotted(found)
    return (f"{where}: {message}" if where else message), False


def _inline_secrets(data: Any, loc: Loc) -> Iterable[Loc]:
    """Locations of secret-looking keys whose values are written inline."""
    if isinstance(data, dict):
        for key, value in data.items():
            if SECRET_LOOKING_KEY.search(str(key)) and isinstance(value, str | int):
                if not is_secret_ref(value):
                    yield (*loc, key)
            else:
                yield from _inline_secrets(value, (*loc, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _inline_secrets(item, (*loc, i))


_PARAM_FIELDS = {
    "Machine": ("params",),
    "Instance": ("params",),
    "Resource": ("params",),
    "Profile": ("params",),
    "Pipeline": ("params",),
    "Stage": ("params",),
    "Provider": ("settings",),
}


def parse_file(path: str, data: bytes, limits: YamlLimits = YamlLimits()) -> ParsedFile:
    """Documents of one file, each checked on its own; pure, so cacheable by content."""
    documents: list[LoadedDocument] = []
    diagnostics: list[Diagnostic] = []

    def report(line: int, col: int, message: str) -> None:
        diagnostics.append(Diagnostic(path, line, col, message))

    try:
        for doc in parse_documents(data, limits):
            raw = doc.data
            if not isinstance(raw, dict):
                report(
                    doc.line, doc.col, "a document is a mapping: apiVersion, kind, metadata, spec"
                )
                continue
            if "apiVersion" not in raw or "kind" not in raw:
                missing = "apiVersion" if "apiVersion" not in raw else "kind"
                report(
                    doc.line,
                    doc.col,
                    f"missing required field {missing!r} "
                    f"(supported apiVersions: {', '.join(SUPPORTED_VERSIONS)})",
                )
                continue
            try:
                cls = document_class(str(raw["apiVersion"]), str(raw["kind"]))
            except ValueError as exc:
                field_name = "apiVersion" if "apiVersion" in str(exc) else "kind"
                where = locate(doc.root, (field_name,))
                report(where.line, where.col, str(exc))
                continue
            spec = raw.get("spec")
            secrets_found = False
            for field_name in _PARAM_FIELDS.get(str(raw["kind"]), ()):
                if isinstance(spec, dict):
                    for loc in _inline_secrets(spec.get(field_name), ("spec", field_name)):
                        where = locate(doc.root, loc, at_key=True)
                        report(
                            where.line,
                            where.col,
                            f"{_dotted(loc)}: inline secret not allowed; "
                            "give a reference, env:NAME or file:PATH",
                        )
                        secrets_found = True
            try:
                model: BaseModel = cls.model_validate(raw)
            except ValidationError as exc:
                for error in exc.errors(include_url=False, include_input=False):
                    loc = tuple(error["loc"])
                    probe = locate(doc.root, loc)
                    message, at_key = _describe(error, probe.path)
                    where = locate(doc.root, loc, at_key=True) if at_key else probe
                    report(where.line, where.col, message)
                continue
            if secrets_found:
                continue
            model = to_hub(model, str(raw["apiVersion"]))
            documents.append(
                LoadedDocument(
                    document=model,
                    kind=model.kind,  # type: ignore[attr-defined]
                    name=model.metadata.name,  # type: ignore[attr-defined]
                    path=path,
                    index=doc.index,
                    line=doc.line,
                    col=doc.col,
                )
            )
    except YamlFault as fault:
        report(fault.line, fault.col, fault.message)
    return ParsedFile(path, tuple(documents), tuple(diagnostics))


# --- phase 2: the whole revision --------------------------------------------------------


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle once, as the list of nodes from its smallest member (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles: dict[tuple[str, ...], list[str]] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(graph.get(start, ())))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if state.get(child) == 1:
                    cycle = path[path.index(child) :]
                    low = cycle.index(min(cycle))
                    canon = cycle[low:] + cycle[:low]
                    cycles.setdefault(tuple(canon), canon)
                elif not state.get(child) and child in graph:
                    state[child] = 1
                    stack.append((child, iter(graph.get(child, ()))))
                    path.append(child)
                    break
            else:
                stack.pop()
                path.pop()
                state[node] = 2
    return list(cycles.values())


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
}


@dataclass
class _Assembler:
    read: Callable[[str], bytes]
    docs: dict[tuple[str, str], LoadedDocument] = field(default_factory=dict)
    diagnostics: set[Diagnostic] = field(default_factory=set)
    _roots: dict[tuple[str, int], Any] = field(default_factory=dict)

    def at(self, doc: LoadedDocument, loc: Loc, message: str, *, at_key: bool = False) -> None:
        """Report `message` at `loc` inside `doc`, re-reading the file to find the position."""
        root_key = (doc.path, doc.index)
        if root_key not in self._roots:
            try:
                self._roots[root_key] = document_root(self.read(doc.path), doc.index)
            except (
                Exception
            ):  # the file parsed before; a reader failing now must not hide the error
                self._roots[root_key] = None
        root = self._roots[root_key]
        if root is None:
            self.diagnostics.add(Diagnostic(doc.path, doc.line, doc.col, message))
            return
        where = locate(root, loc, at_key=at_key)
        self.diagnostics.add(Diagnostic(doc.path, where.line, where.col, message))

    def of_kind(self, kind: str) -> dict[str, LoadedDocument]:
        return {name: d for (k, name), d in self.docs.items() if k == kind}


@dataclass
class AssembleCache:
    """What the last clean `assemble` resolved, for a next revision that changed little.

    A resource document that is the very same parsed object as last time (the
    source's parse cache hands back the same object for an unchanged blob) keeps
    its checks and resolution, as long as nothing it may depend on changed: every
    non-resource document is the same object and the set of resource keys is the
    same. Anything else is checked and resolved again.
    """

    context: tuple[Any, ...] | None = None
    resources: dict[str, tuple[LoadedDocument, ResolvedResource]] = field(default_factory=dict)
    reused: int = 0


def assemble(
    parsed: Iterable[ParsedFile],
    read: Callable[[str], bytes],
    *,
    revision: str | None = None,
    cache: AssembleCache | None = None,
) -> LoadResult:
    """Cross-document checks and resolution; `read(path)` is used only to locate errors."""
    asm = _Assembler(read)
    files = 0
    count = 0
    for parsed_file in sorted(parsed, key=lambda p: p.path):
        files += 1
        asm.diagnostics.update(parsed_file.diagnostics)
        for doc in parsed_file.documents:
            count += 1
            first = asm.docs.get((doc.kind, doc.name))
            if first is not None:
                asm.at(
                    doc,
                    ("metadata", "name"),
                    f"duplicate {doc.kind} {doc.name!r}: already declared at "
                    f"{first.path}:{first.line}:{first.col}",
                )
                continue
            asm.docs[(doc.kind, doc.name)] = doc

    providers = asm.of_kind("Provider")
    pipelines = asm.of_kind("Pipeline")
    stages = asm.of_kind("Stage")
    profiles = asm.of_kind("Profile")
    policies = asm.of_kind("Policy")
    resources = {
        key: d
        for key, d in ((f"{k}/{n}", d) for (k, n), d in asm.docs.items())
        if d.kind in RESOURCE_KINDS
    }

    if len(policies) > 1:
        for name, doc in sorted(policies.items())[1:]:
            asm.at(
                doc, ("metadata", "name"), f"only one Policy is allowed; {name!r} is a second one"
            )

    def check_ref(
        doc: LoadedDocument, loc: Loc, target: str, known: Mapping[str, Any], kind: str
    ) -> bool:
        if target in known:
            return True
        hint = f"; known: {', '.join(sorted(known)[:10])}" if known else f"; no {kind} is declared"
        asm.at(doc, loc, f"unknown {kind} {target!r}{hint}")
        return False

    def check_hooks(doc: LoadedDocument, hooks: Mapping[str, Any]) -> None:
        for stage_name in hooks:
            if stage_name != "*" and stage_name not in stages:
                asm.at(
                    doc,
                    ("spec", "hooks", stage_name),
                    f"hooks for unknown Stage {stage_name!r}",
                    at_key=True,
                )

    include_graph: dict[str, list[str]] = {}
    for name, doc in pipelines.items():
        spec = doc.document.spec
        include_graph[name] = []
        for i, step in enumerate(spec.steps):
            if step.stage:
                check_ref(doc, ("spec", "steps", i, "stage"), step.stage, stages, "Stage")
            elif step.include and check_ref(
                doc, ("spec", "steps", i, "include"), step.include, pipelines, "Pipeline"
            ):
                include_graph[name].append(step.include)
        check_hooks(doc, spec.hooks)
    chain_graph: dict[str, list[str]] = {}
    for name, doc in stages.items():
        chain_graph[name] = []
        for i, follower in enumerate(doc.document.spec.chain):
            if check_ref(doc, ("spec", "chain", i), follower, stages, "Stage"):
                chain_graph[name].append(follower)
    for doc in profiles.values():
        check_hooks(doc, doc.document.spec.hooks)

    bad_pipelines: set[str] = set()
    for cycle in find_cycles(include_graph):
        bad_pipelines.update(cycle)
        doc = pipelines[cycle[0]]
        step = next(
            i for i, s in enumerate(doc.document.spec.steps) if s.include == cycle[(1) % len(cycle)]
        )
        asm.at(
            doc,
            ("spec", "steps", step, "include"),
            "pipeline include cycle: " + " -> ".join([*cycle, cycle[0]]),
        )
    for cycle in find_cycles(chain_graph):
        doc = stages[cycle[0]]
        asm.at(doc, ("spec", "chain"), "stage chain cycle: " + " -> ".join([*cycle, cycle[0]]))

    names_by_bare: dict[str, list[str]] = {}
    for key in resources:
        names_by_bare.setdefault(key.split("/", 1)[1], []).append(key)

    context = (
        tuple(sorted((k, id(d)) for k, d in asm.docs.items() if d.kind not in RESOURCE_KINDS)),
        frozenset(resources),
    )
    reusable = cache.resources if cache is not None and cache.context == context else {}
    reused: dict[str, ResolvedResource] = {}
    dependency_graph: dict[str, list[str]] = {}
    usable: dict[str, bool] = {}
    for key, doc in sorted(resources.items()):
        hit = reusable.get(key)
        if hit is not None and hit[0] is doc:
            reused[key] = hit[1]
            dependency_graph[key] = list(hit[1].depends_on)
            usable[key] = True
            continue
        spec = doc.document.spec
        ok = check_ref(doc, ("spec", "provider"), spec.provider, providers, "Provider")
        if check_ref(doc, ("spec", "pipeline"), spec.pipeline, pipelines, "Pipeline"):
            ok = ok and spec.pipeline not in bad_pipelines
        else:
            ok = False
        for i, profile in enumerate(spec.profiles):
            ok = check_ref(doc, ("spec", "profiles", i), profile, profiles, "Profile") and ok
        check_hooks(doc, spec.hooks)
        deps: list[str] = []
        for i, dep in enumerate(spec.depends_on):
            if "/" in dep:
                target = dep if dep in resources else None
                if target is None:
                    asm.at(doc, ("spec", "dependsOn", i), f"unknown resource {dep!r} in dependsOn")
            else:
                matches = names_by_bare.get(dep, [])
                target = matches[0] if len(matches) == 1 else None
                if not matches:
                    asm.at(doc, ("spec", "dependsOn", i), f"unknown resource {dep!r} in dependsOn")
                elif len(matches) > 1:
                    asm.at(
                        doc,
                        ("spec", "dependsOn", i),
                        f"ambiguous dependsOn {dep!r}: write one of {', '.join(sorted(matches))}",
                    )
            if target is not None:
                deps.append(target)
        dependency_graph[key] = deps
        usable[key] = ok
    for cycle in find_cycles(dependency_graph):
        doc = resources[cycle[0]]
        index = dependency_graph[cycle[0]].index(cycle[1 % len(cycle)])
        asm.at(
            doc, ("spec", "dependsOn", index), "dependsOn cycle: " + " -> ".join([*cycle, cycle[0]])
        )

    pipeline_models = {n: d.document for n, d in pipelines.items()}
    stage_models = {n: d.document for n, d in stages.items()}
    profile_models = {n: d.document for n, d in profiles.items()}
    resolver = Resolver(pipeline_models, stage_models, profile_models)
    for key, doc in sorted(resources.items()):
        if usable[key] and key not in reused:
            pipeline = doc.document.spec.pipeline
            _check_params(
                asm,
                doc,
                resolver.inputs(pipeline),
                pipeline,
                pipelines,
                profiles,
                resolver.param_layers(doc.document),
            )

    if asm.diagnostics:
        return LoadResult(None, tuple(sorted(asm.diagnostics)), count, files)

    resolved: dict[str, ResolvedResource] = {
        key: reused.get(key)
        or resolver.resolve(
            doc.document,
            path=doc.path,
            line=doc.line,
            depends_on=tuple(dependency_graph[key]),
        )
        for key, doc in sorted(resources.items())
    }
    if cache is not None:
        cache.context = context
        cache.resources = {key: (resources[key], r) for key, r in resolved.items()}
        cache.reused = len(reused)
    policy = next(iter(policies.values())).document.spec if policies else PolicySpec()
    policy_source = next(((n, d.path) for n, d in policies.items()), None)
    desired = Desired(
        revision=revision,
        resources=resolved,
        providers={n: d.document for n, d in sorted(providers.items())},
        policy=policy,
        pipelines=pipeline_models,
        stages=stage_models,
        profiles=profile_models,
        policy_source=policy_source,
    )
    return LoadResult(desired, (), count, files)


def _check_params(
    asm: _Assembler,
    doc: LoadedDocument,
    inputs: Mapping[str, Input],
    pipeline: str,
    pipelines: Mapping[str, LoadedDocument],
    profiles: Mapping[str, LoadedDocument],
    layers: list[tuple[str, Mapping[str, Any]]],
) -> None:
    """A resource's params against its pipeline's inputs: the service catalog's form check."""
    spec = doc.document.spec
    if inputs:
        for name in spec.params:
            if name not in inputs:
                asm.at(
                    doc,
                    ("spec", "params", name),
                    f"param {name!r} is not an input of pipeline {pipeline!r} "
                    f"(inputs: {', '.join(sorted(inputs))})",
                    at_key=True,
                )
    merged = merge_layers(layers)
    for name, item in inputs.items():
        if name not in merged:
            if item.required:
                asm.at(doc, ("spec", "params"), f"pipeline {pipeline!r} requires param {name!r}")
            continue
        value, origin = merged[name]
        origin_kind, _, origin_name = origin.partition("/")
        origin_name = origin_name.split("#", 1)[0]
        if origin_kind == "Profile":
            target, loc = profiles[origin_name], ("spec", "params", name)
        elif origin_kind == "Pipeline" and origin.endswith("#defaults"):
            target, loc = doc, ("spec", "pipeline")
        elif origin_kind == "Pipeline":
            target, loc = pipelines[origin_name], ("spec", "params", name)
        else:
            target, loc = doc, ("spec", "params", name)
        source = "" if target is doc else f" (set by {origin.split('#', 1)[0]})"
        shown = "a value" if item.secure else repr(value)
        if item.secure:
            if not is_secret_ref(value):
                asm.at(
                    target,
                    loc,
                    f"param {name!r} is secure: give a reference, env:NAME or file:PATH{source}",
                )
            continue
        if not _TYPE_CHECKS[item.type](value):
            asm.at(
                target,
                loc,
                f"param {name!r} must be a {item.type} for pipeline {pipeline!r}, "
                f"got {shown}{source}",
            )
        elif item.allowed is not None and value not in item.allowed:
            allowed = ", ".join(map(str, item.allowed))
            asm.at(
                target,
                loc,
                f"param {name!r} = {shown} is not offered by pipeline {pipeline!r} "
                f"(allowed: {allowed}){source}",
            )


# --- conveniences ------------------------------------------------------------------------


def load_files(
    files: Mapping[str, bytes], *, revision: str | None = None, limits: YamlLimits = YamlLimits()
) -> LoadResult:
    """Filter, parse and assemble a revision given as {repository path: bytes}."""
    ignore = read_ignore_patterns(files.get(IGNORE_FILE))
    parsed = [
        parse_file(p, data, limits)
        for p, data in sorted(files.items())
        if is_declared_path(p, ignore)
    ]
    return assemble(parsed, files.__getitem__, revision=revision)


def load_directory(root: Path, *, limits: YamlLimits = YamlLimits()) -> LoadResult:
    """A checkout on disk (e.g. `reconciler validate sample-repo`)."""
    root = Path(root)
    ignore_file = root / IGNORE_FILE
    ignore = read_ignore_patterns(ignore_file.read_bytes() if ignore_file.is_file() else None)
    parsed: list[ParsedFile] = []
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root).as_posix()
        if file.is_file() and is_declared_path(relative, ignore):
            parsed.append(parse_file(relative, file.read_bytes(), limits))
    return assemble(parsed, lambda p: (root / p).read_bytes())
