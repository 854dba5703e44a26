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
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.errors import Diagnostic
from reconciler.load.desired import (
    GLOBAL_PROFILE,
    Desired,
    ResolvedResource,
    Resolver,
    merge_layers,
)
from reconciler.load.explain import INLINE_SECRET, dotted, explain, type_word, yaml11_hint
from reconciler.load.resolved_checks import (
    Finding,
    ObservedFields,
    duplicate_task_names,
    unobserved_converges,
)
from reconciler.load.yamlpos import (
    Location,
    YamlDocument,
    YamlFault,
    YamlLimits,
    document_root,
    locate,
    parse_documents,
)
from reconciler.model import KINDS, RESOURCE_KINDS, SUPPORTED_VERSIONS, Input, document_class
from reconciler.model.common import inline_secrets, is_secret_ref
from reconciler.model.kinds import PolicySpec
from reconciler.model.versions import to_hub

IGNORE_FILE = ".reconcilerignore"
CONTROLLER_DIRS = ("status", "reports", "audit", "plans")
"""Top-level folders the controller writes; never read back as declared state."""

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedDocument:
    """A document of the revision, by kind and name, and its model.

    A document with schema errors is listed too (its errors are in the file's
    diagnostics): `document` is then what validates once the wrong parts are
    left out, or None when too little does, and `left_out` names those parts
    (`((),)`: all of it). Its kind and name are still known, so nothing reports
    it missing, and the checks across documents run on what it has.
    """

    document: Any
    kind: str
    name: str
    path: str
    index: int
    line: int
    col: int
    left_out: tuple[Loc, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def intact(self, *locs: Loc) -> bool:
        """Whether each of `locs` is in `document` as written (nothing in or above it left out)."""
        if self.document is None:
            return False
        return not any(
            cut[: len(loc)] == loc or loc[: len(cut)] == cut
            for cut in self.left_out
            for loc in locs
        )


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

_PARAM_FIELDS = {
    "Machine": ("params",),
    "Instance": ("params",),
    "Resource": ("params",),
    "Profile": ("params",),
    "Pipeline": ("params",),
    "Stage": ("params",),
    "Provider": ("settings",),
}
"""Free-form maps of each kind where a secret-looking key must hold a reference.

Free-form maps inside tasks (provider `args`, http `body` and `headers`) are
checked by the task models themselves (`reconciler.model.tasks`).
"""

_ALL_KINDS = frozenset(kind for kinds in KINDS.values() for kind in kinds)
_SALVAGE_ROUNDS = 16
_UNSALVAGEABLE = {(), ("apiVersion",), ("kind",), ("metadata",), ("metadata", "name")}


def _existing(data: Any, loc: Loc) -> Loc:
    """The part of `loc` that exists in `data`, skipping what is not a key or index there."""
    found: list[str | int] = []
    for element in loc:
        if isinstance(data, dict) and str(element) in data:
            found.append(str(element))
            data = data[str(element)]
        elif isinstance(data, list) and isinstance(element, int) and 0 <= element < len(data):
            found.append(element)
            data = data[element]
    return tuple(found)


def _cut(data: Any, loc: Loc) -> Loc:
    """The mapping key to leave out so an error at `loc` goes away: never a list item,
    so that list indexes (and the positions found through them) stay as written."""
    path = _existing(data, loc)
    while path and isinstance(path[-1], int):
        path = path[:-1]
    return path


def _without(data: Any, cuts: Iterable[Loc]) -> Any:
    """A copy of `data` with the values at `cuts` (mapping keys) left out."""
    copy = deepcopy(data)
    for cut in cuts:
        parent = copy
        for element in cut[:-1]:
            try:
                parent = parent[element]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(parent, dict) and cut and cut[-1] in parent:
                del parent[cut[-1]]
    return copy


def _under(loc: Loc, cuts: Iterable[Loc]) -> bool:
    return any(loc[: len(cut)] == cut for cut in cuts)


def _salvage(cls: type[BaseModel], data: Any, cuts: list[Loc]) -> BaseModel | None:
    """What of a document validates once its wrong parts are left out (None: not enough).

    Only for the checks across documents, so that a schema error in one part
    does not hide the references and params of the rest; never acted on.
    """
    for _ in range(_SALVAGE_ROUNDS):
        try:
            return cls.model_validate(_without(data, cuts))
        except ValidationError as exc:
            more = {_cut(_without(data, cuts), tuple(e["loc"])) for e in exc.errors()}
            if more & _UNSALVAGEABLE or more <= set(cuts):
                return None
            cuts.extend(sorted(more - set(cuts), key=str))
    return None


@dataclass
class _DocumentCheck:
    """Phase 1 for one document: its diagnostics, and what it is known as."""

    path: str
    doc: YamlDocument
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def report(self, line: int, col: int, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.path, line, col, message))

    def report_at(self, loc: Loc, message: str, *, at_key: bool = False) -> None:
        where = locate(self.doc.root, loc, at_key=at_key)
        self.report(where.line, where.col, message)

    def run(self) -> LoadedDocument | None:
        doc = self.doc
        for fault, _ in doc.faults:
            self.report(fault.line, fault.col, fault.message)
        raw = doc.data
        if doc.whole:
            return None
        if not isinstance(raw, dict):
            self.report(
                doc.line, doc.col, "a document is a mapping: apiVersion, kind, metadata, spec"
            )
            return None
        cuts = [loc for _, loc in doc.faults if loc is not None]
        cls = self._document_class(raw, cuts)
        if cls is None:
            return None
        cuts += self._inline_secrets(raw)
        data = _without(raw, cuts) if cuts else raw
        model: BaseModel | None
        try:
            model = cls.model_validate(data)
        except ValidationError as exc:
            self._explain(cls, exc, cuts)
            model = _salvage(cls, raw, list(cuts))
        if model is not None:
            return self._loaded(to_hub(model, raw["apiVersion"]), tuple(cuts))
        metadata = raw.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(name, str) and name:
            # Known by kind and name only: nothing else reports it missing.
            return self._loaded(None, ((),), kind=raw["kind"], name=name)
        return None

    def _document_class(self, raw: dict[str, Any], cuts: list[Loc]) -> type[BaseModel] | None:
        doc = self.doc
        for name in ("apiVersion", "kind"):
            if (name,) in cuts:
                return None  # already reported: its value could not be read
            if name not in raw:
                self.report(
                    doc.line,
                    doc.col,
                    f"missing required field {name!r} "
                    f"(supported apiVersions: {', '.join(SUPPORTED_VERSIONS)})",
                )
                return None
            if not isinstance(raw[name], str):
                self.report_at((name,), f"{name} must be a string, got {type_word(raw[name])}")
                return None
        try:
            return document_class(raw["apiVersion"], raw["kind"])
        except ValueError as exc:
            self.report_at(("apiVersion" if "apiVersion" in str(exc) else "kind",), str(exc))
            return None

    def _inline_secrets(self, raw: dict[str, Any]) -> list[Loc]:
        spec = raw.get("spec")
        found: list[Loc] = []
        if not isinstance(spec, dict):
            return found
        for name in _PARAM_FIELDS.get(raw["kind"], ()):
            for loc in inline_secrets(spec.get(name), ("spec", name)):
                # The key holding the secret is left out whole: a list index would shift.
                found.append(_cut(raw, loc))
                self.report_at(loc, f"{dotted(loc)}: {INLINE_SECRET}", at_key=True)
        return found

    def _explain(self, cls: type[BaseModel], exc: ValidationError, cuts: list[Loc]) -> None:
        def plain_at(loc: Loc) -> str | None:
            return locate(self.doc.root, loc).plain

        for error in exc.errors(include_url=False):
            if _under(_existing(self.doc.data, tuple(error["loc"])), cuts):
                continue  # a value left out, already reported
            for item in explain(error, cls, plain_at):
                self.report_at(item.loc, item.message, at_key=item.at_key)

    def _loaded(
        self, model: Any, cuts: tuple[Loc, ...], *, kind: str = "", name: str = ""
    ) -> LoadedDocument:
        return LoadedDocument(
            document=model,
            kind=model.kind if model is not None else kind,
            name=model.metadata.name if model is not None else name,
            path=self.path,
            index=self.doc.index,
            line=self.doc.line,
            col=self.doc.col,
            left_out=cuts,
        )


def parse_file(path: str, data: bytes, limits: YamlLimits = YamlLimits()) -> ParsedFile:
    """Documents of one file, each checked on its own; pure, so cacheable by content.

    A document with errors is still listed (by kind and name, with what of it
    validates), so the checks across documents run on the rest of the revision.
    """
    documents: list[LoadedDocument] = []
    diagnostics: list[Diagnostic] = []
    try:
        for doc in parse_documents(data, limits):
            check = _DocumentCheck(path, doc)
            loaded = check.run()
            diagnostics += check.diagnostics
            if loaded is not None:
                documents.append(loaded)
    except YamlFault as fault:
        diagnostics.append(Diagnostic(path, fault.line, fault.col, fault.message))
        # Documents the fault cut off are still known by the kind and name they wrote.
        documents += [
            LoadedDocument(None, d.kind, d.name, path, d.index, d.line, d.col, ((),))
            for d in fault.declared
            if d.kind in _ALL_KINDS
        ]
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


_ARTICLE = {"integer": "an"}
_ARTICLE = {t: _ARTICLE.get(t, "a") for t in _TYPE_CHECKS}


@dataclass
class _Assembler:
    read: Callable[[str], bytes]
    docs: dict[tuple[str, str], LoadedDocument] = field(default_factory=dict)
    diagnostics: set[Diagnostic] = field(default_factory=set)
    _roots: dict[tuple[str, int], Any] = field(default_factory=dict)

    def at(
        self,
        doc: LoadedDocument,
        loc: Loc,
        message: str,
        *,
        at_key: bool = False,
        hint: Callable[[Location], str] | None = None,
    ) -> None:
        """Report `message` at `loc` inside `doc`, re-reading the file to find the position.

        `hint` adds to the message from what is written there (see `yaml11_hint`).
        """
        where = self.where(doc, loc, at_key=at_key)
        if where is None:
            self.diagnostics.add(Diagnostic(doc.path, doc.line, doc.col, message))
            return
        if hint is not None:
            message += hint(where)
        self.diagnostics.add(Diagnostic(doc.path, where.line, where.col, message))

    def where(self, doc: LoadedDocument, loc: Loc, *, at_key: bool = False) -> Location | None:
        """Where `loc` is inside `doc` (re-reading its file), or None if it cannot be read."""
        root_key = (doc.path, doc.index)
        if root_key not in self._roots:
            try:
                self._roots[root_key] = document_root(self.read(doc.path), doc.index)
            except (
                Exception
            ):  # the file parsed before; a reader failing now must not hide the error
                self._roots[root_key] = None
        root = self._roots[root_key]
        return None if root is None else locate(root, loc, at_key=at_key)

    def finding(self, found: Finding) -> None:
        message = found.message
        if found.also is not None:
            other, other_loc = found.also
            place = self.where(other, other_loc)
            line, col = (place.line, place.col) if place else (other.line, other.col)
            message += f"; also at {other.path}:{line}:{col}"
        self.at(found.doc, found.loc, message)

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
    observed_fields: ObservedFields | None = None,
) -> LoadResult:
    """Cross-document checks and resolution; `read(path)` is used only to locate errors.

    `observed_fields` (the provider registry's) lets stages' `converges` be checked
    against what each resource's provider observes; without it they are not.
    """
    asm = _Assembler(read)
    files, count = _index(asm, parsed)
    kinds = _Kinds.of(asm)
    _check_policies(asm, kinds.policies)
    bad_pipelines = _check_pipelines_and_stages(asm, kinds)
    context = (
        tuple(sorted((k, id(d)) for k, d in asm.docs.items() if d.kind not in RESOURCE_KINDS)),
        frozenset(kinds.resources),
    )
    reusable = cache.resources if cache is not None and cache.context == context else {}
    checked = _check_resources(asm, kinds, bad_pipelines, reusable)
    resolver = Resolver(
        kinds.models(kinds.pipelines), kinds.models(kinds.stages), kinds.models(kinds.profiles)
    )
    _check_all_params(asm, kinds, resolver, checked)
    if asm.diagnostics:
        return LoadResult(None, tuple(sorted(asm.diagnostics)), count, files)

    reused = checked.reused
    resolved: dict[str, ResolvedResource] = {
        key: reused.get(key)
        or resolver.resolve(
            doc.document,
            path=doc.path,
            line=doc.line,
            depends_on=tuple(checked.dependencies[key]),
        )
        for key, doc in sorted(kinds.resources.items())
    }
    _check_resolved(
        asm,
        {k: r for k, r in resolved.items() if k not in reused},
        kinds.resources,
        resolver,
        kinds.models(kinds.providers),
        observed_fields,
    )
    if asm.diagnostics:
        return LoadResult(None, tuple(sorted(asm.diagnostics)), count, files)
    if cache is not None:
        cache.context = context
        cache.resources = {key: (kinds.resources[key], r) for key, r in resolved.items()}
        cache.reused = len(reused)
    return LoadResult(_desired(kinds, resolver, resolved, revision), (), count, files)


def _index(asm: _Assembler, parsed: Iterable[ParsedFile]) -> tuple[int, int]:
    """Every parsed document into `asm.docs` by (kind, name), a second one of a name
    reported; the parse diagnostics kept. (files, documents) counted."""
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
    return files, count


@dataclass(frozen=True)
class _Kinds:
    """The documents by kind and name (resources by key). Documents with schema errors
    are in these maps too (references to them resolve); what of them validated is
    checked, the rest was reported already."""

    providers: dict[str, LoadedDocument]
    pipelines: dict[str, LoadedDocument]
    stages: dict[str, LoadedDocument]
    profiles: dict[str, LoadedDocument]
    policies: dict[str, LoadedDocument]
    resources: dict[str, LoadedDocument]

    @classmethod
    def of(cls, asm: _Assembler) -> _Kinds:
        return cls(
            providers=asm.of_kind("Provider"),
            pipelines=asm.of_kind("Pipeline"),
            stages=asm.of_kind("Stage"),
            profiles=asm.of_kind("Profile"),
            policies=asm.of_kind("Policy"),
            resources={
                key: d
                for key, d in ((f"{k}/{n}", d) for (k, n), d in asm.docs.items())
                if d.kind in RESOURCE_KINDS
            },
        )

    @staticmethod
    def models(docs: Mapping[str, LoadedDocument]) -> dict[str, Any]:
        """The validated documents of a map, by name."""
        return {n: d.document for n, d in docs.items() if d.document is not None}


def _check_ref(
    asm: _Assembler, doc: LoadedDocument, loc: Loc, target: str, known: Mapping[str, Any], kind: str
) -> bool:
    """Whether `target` names a declared `kind`; reported at `loc` when it does not."""
    if target in known:
        return True
    hint = f"; known: {', '.join(sorted(known)[:10])}" if known else f"; no {kind} is declared"
    asm.at(doc, loc, f"unknown {kind} {target!r}{hint}")
    return False


def _check_hooks(
    asm: _Assembler, doc: LoadedDocument, hooks: Mapping[str, Any], stages: Mapping[str, Any]
) -> None:
    for stage_name in hooks:
        if stage_name != "*" and stage_name not in stages:
            asm.at(
                doc,
                ("spec", "hooks", stage_name),
                f"hooks for unknown Stage {stage_name!r}",
                at_key=True,
            )


def _check_policies(asm: _Assembler, policies: Mapping[str, LoadedDocument]) -> None:
    if len(policies) > 1:
        for name, doc in sorted(policies.items())[1:]:
            asm.at(
                doc, ("metadata", "name"), f"only one Policy is allowed; {name!r} is a second one"
            )


def _check_pipelines_and_stages(asm: _Assembler, kinds: _Kinds) -> set[str]:
    """References of pipelines (steps, includes, hooks), stages (chains) and profiles
    (hooks), and cycles of includes and chains; the pipelines in an include cycle."""
    stages, pipelines = kinds.stages, kinds.pipelines
    include_graph: dict[str, list[str]] = {}
    for name, doc in pipelines.items():
        if doc.document is None:
            continue
        spec = doc.document.spec
        include_graph[name] = []
        for i, step in enumerate(spec.steps):
            if step.stage:
                _check_ref(asm, doc, ("spec", "steps", i, "stage"), step.stage, stages, "Stage")
            elif step.include and _check_ref(
                asm, doc, ("spec", "steps", i, "include"), step.include, pipelines, "Pipeline"
            ):
                include_graph[name].append(step.include)
        _check_hooks(asm, doc, spec.hooks, stages)
    chain_graph: dict[str, list[str]] = {}
    for name, doc in stages.items():
        if doc.document is None:
            continue
        chain_graph[name] = []
        for i, follower in enumerate(doc.document.spec.chain):
            if _check_ref(asm, doc, ("spec", "chain", i), follower, stages, "Stage"):
                chain_graph[name].append(follower)
    for doc in kinds.profiles.values():
        if doc.document is not None:
            _check_hooks(asm, doc, doc.document.spec.hooks, stages)

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
    return bad_pipelines


@dataclass(frozen=True)
class _Checked:
    """What checking the resources' references found, per resource key."""

    reused: dict[str, ResolvedResource]
    """Resolved last time and unchanged since (`AssembleCache`)."""
    dependencies: dict[str, list[str]]
    """The keys it depends on (those that could be found)."""
    usable: dict[str, bool]
    """Whether its provider, pipeline and profiles are declared (and it validated)."""


def _check_resources(
    asm: _Assembler,
    kinds: _Kinds,
    bad_pipelines: set[str],
    reusable: Mapping[str, tuple[LoadedDocument, ResolvedResource]],
) -> _Checked:
    """Each resource's references (provider, pipeline, profiles, hooks, dependsOn), and
    cycles of dependsOn; a resource unchanged since the last clean assemble is reused."""
    names_by_bare: dict[str, list[str]] = {}
    for key in kinds.resources:
        names_by_bare.setdefault(key.split("/", 1)[1], []).append(key)
    checked = _Checked(reused={}, dependencies={}, usable={})
    for key, doc in sorted(kinds.resources.items()):
        hit = reusable.get(key)
        if hit is not None and hit[0] is doc:
            checked.reused[key] = hit[1]
            checked.dependencies[key] = list(hit[1].depends_on)
            checked.usable[key] = True
            continue
        if doc.document is None:
            checked.dependencies[key] = []
            checked.usable[key] = False
            continue
        spec = doc.document.spec
        ok = _check_ref(asm, doc, ("spec", "provider"), spec.provider, kinds.providers, "Provider")
        pipeline_loc = ("spec", "pipeline")
        if _check_ref(asm, doc, pipeline_loc, spec.pipeline, kinds.pipelines, "Pipeline"):
            ok = ok and spec.pipeline not in bad_pipelines
        else:
            ok = False
        for i, profile in enumerate(spec.profiles):
            loc = ("spec", "profiles", i)
            ok = _check_ref(asm, doc, loc, profile, kinds.profiles, "Profile") and ok
        _check_hooks(asm, doc, spec.hooks, kinds.stages)
        checked.dependencies[key] = _dependencies(asm, doc, kinds.resources, names_by_bare)
        checked.usable[key] = ok
    for cycle in find_cycles(checked.dependencies):
        doc = kinds.resources[cycle[0]]
        index = checked.dependencies[cycle[0]].index(cycle[1 % len(cycle)])
        asm.at(
            doc, ("spec", "dependsOn", index), "dependsOn cycle: " + " -> ".join([*cycle, cycle[0]])
        )
    return checked


def _dependencies(
    asm: _Assembler,
    doc: LoadedDocument,
    resources: Mapping[str, LoadedDocument],
    names_by_bare: Mapping[str, list[str]],
) -> list[str]:
    """The keys a resource's `dependsOn` names (`Kind/name`, or a bare name when it names
    one resource); an unknown or ambiguous one reported."""
    deps: list[str] = []
    for i, dep in enumerate(doc.document.spec.depends_on):
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
    return deps


def _check_all_params(
    asm: _Assembler, kinds: _Kinds, resolver: Resolver, checked: _Checked
) -> None:
    """The params of each usable resource not reused, against its pipeline's inputs."""
    # With every document valid (the usual case) every param is certain: skip the bookkeeping.
    partial = any(d.left_out for d in asm.docs.values())
    pipelines, profiles = kinds.pipelines, kinds.profiles
    for key, doc in sorted(kinds.resources.items()):
        if not checked.usable[key] or key in checked.reused:
            continue
        if partial and not _inputs_known(doc, resolver, pipelines):
            continue
        layers = resolver.param_layers(doc.document)
        _check_params(
            asm,
            doc,
            resolver.inputs(doc.document.spec.pipeline),
            doc.document.spec.pipeline,
            pipelines,
            profiles,
            layers,
            _certainty(doc, layers, pipelines, profiles) if partial else _always,
        )


def _desired(
    kinds: _Kinds, resolver: Resolver, resolved: dict[str, ResolvedResource], revision: str | None
) -> Desired:
    """The clean revision as the value the rest of the flow takes (its pipelines, stages
    and profiles the maps the resolver used)."""
    policies = kinds.policies
    policy = next(iter(policies.values())).document.spec if policies else PolicySpec()
    policy_source = next(((n, d.path) for n, d in policies.items()), None)
    return Desired(
        revision=revision,
        resources=resolved,
        providers={n: d.document for n, d in sorted(kinds.providers.items())},
        policy=policy,
        pipelines=resolver.pipelines,
        stages=resolver.stages,
        profiles=resolver.profiles,
        policy_source=policy_source,
    )


def _check_resolved(
    asm: _Assembler,
    resolved: Mapping[str, ResolvedResource],
    resources: Mapping[str, LoadedDocument],
    resolver: Resolver,
    providers: Mapping[str, Any],
    observed_fields: ObservedFields | None,
) -> None:
    """`reconciler.load.resolved_checks` over the newly resolved resources, once per shape."""
    stage_docs = asm.of_kind("Stage")
    seen_tasks: set[tuple[str, tuple[str, ...]]] = set()
    seen_fields: set[tuple[str, str, str]] = set()
    fields_of: dict[str, Mapping[str, frozenset[str]] | None] = {}
    for key, resource in resolved.items():
        doc = resources[key]
        spec = doc.document.spec
        shape = (spec.pipeline, tuple(spec.profiles))
        if spec.hooks or shape not in seen_tasks:
            seen_tasks.add(shape)
            chain = resolver.pipeline_chain(spec.pipeline)
            for found in duplicate_task_names(resource, doc, chain, asm.docs):
                asm.finding(found)
        provider = providers.get(resource.provider)
        if observed_fields is None or provider is None:
            continue
        if resource.provider not in fields_of:
            fields_of[resource.provider] = observed_fields(provider)
        observed = fields_of[resource.provider]
        combination = (resource.provider, resource.kind, spec.pipeline)
        if observed is None or combination in seen_fields:
            continue
        seen_fields.add(combination)
        for found in unobserved_converges(resource, provider, observed, stage_docs, doc):
            asm.finding(found)


def _always(param: str) -> bool:
    return True


def _inputs_known(
    doc: LoadedDocument, resolver: Resolver, pipelines: Mapping[str, LoadedDocument]
) -> bool:
    """Whether the inputs of a resource's pipeline (and what it includes) are as written.

    Part of a document with a schema error was left out; checking params against
    what remains would report errors that are not there.
    """
    if not doc.intact(("spec", "pipeline")) or doc.document.spec.pipeline not in resolver.pipelines:
        return False
    for name in resolver.pipeline_chain(doc.document.spec.pipeline):
        pipeline = pipelines[name]
        if not pipeline.intact(("spec", "inputs"), ("spec", "steps")):
            return False
        includes = (s.include for s in pipeline.document.spec.steps if s.include)
        if any(not pipelines[i].intact() for i in includes if i in pipelines):
            return False
    return True


def _certainty(
    doc: LoadedDocument,
    layers: list[tuple[str, Mapping[str, Any]]],
    pipelines: Mapping[str, LoadedDocument],
    profiles: Mapping[str, LoadedDocument],
) -> Callable[[str], bool]:
    """Whether a param's effective value is known: no layer before the one that sets it
    (first match wins) lost that param with a schema error."""
    owners: list[LoadedDocument | None] = []
    for origin, _ in layers:
        kind, _, name = origin.partition("/")
        if origin.endswith("#defaults"):
            owners.append(None)  # the pipelines' inputs, known as written (`_inputs_known`)
        else:
            owners.append({"Profile": profiles, "Pipeline": pipelines}.get(kind, {}).get(name, doc))
    # A profile known by name only is no layer at all, and a resource whose `profiles`
    # list was left out has layers nobody knows: nothing after its own params is certain.
    listed = [*doc.document.spec.profiles, GLOBAL_PROFILE]
    blind_after_own = not doc.intact(("spec", "profiles")) or any(
        profiles[p].document is None for p in listed if p in profiles
    )
    order = {origin: i for i, (origin, _) in enumerate(layers)}
    merged = merge_layers(layers)

    def certain(param: str) -> bool:
        stop = order[merged[param][1]] if param in merged else len(layers)
        if blind_after_own and stop > 0:
            return False
        return all(
            owner is None or owner.intact(("spec", "params", param)) for owner in owners[: stop + 1]
        )

    return certain


def _check_params(
    asm: _Assembler,
    doc: LoadedDocument,
    inputs: Mapping[str, Input],
    pipeline: str,
    pipelines: Mapping[str, LoadedDocument],
    profiles: Mapping[str, LoadedDocument],
    layers: list[tuple[str, Mapping[str, Any]]],
    certain: Callable[[str], bool],
) -> None:
    """A resource's params against its pipeline's inputs: the service catalog's form check.

    A param whose value is not `certain` (a schema error left part of a layer out) is
    not checked: its error, if any, shows once that schema error is fixed.
    """
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
        if not certain(name):
            continue
        if name not in merged:
            if item.required:
                asm.at(doc, ("spec", "params"), f"pipeline {pipeline!r} requires param {name!r}")
            continue
        value, origin = merged[name]
        origin_kind, _, origin_name = origin.partition("/")
        origin_name = origin_name.split("#", 1)[0]
        loc: Loc
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
            expected = item.type

            def hint(where: Location, value: Any = value, expected: str = expected) -> str:
                return yaml11_hint(where.plain, value, expected, where.path)

            asm.at(
                target,
                loc,
                f"param {name!r} must be {_ARTICLE[item.type]} {item.type} for pipeline "
                f"{pipeline!r}, got {shown}{source}",
                hint=hint,
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


def load_directory(
    root: Path,
    *,
    limits: YamlLimits = YamlLimits(),
    observed_fields: ObservedFields | None = None,
) -> LoadResult:
    """A checkout on disk (e.g. `reconciler validate sample-repo`)."""
    root = Path(root)
    ignore_file = root / IGNORE_FILE
    ignore = read_ignore_patterns(ignore_file.read_bytes() if ignore_file.is_file() else None)
    parsed: list[ParsedFile] = []
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root).as_posix()
        if file.is_file() and is_declared_path(relative, ignore):
            parsed.append(parse_file(relative, file.read_bytes(), limits))
    return assemble(parsed, lambda p: (root / p).read_bytes(), observed_fields=observed_fields)
