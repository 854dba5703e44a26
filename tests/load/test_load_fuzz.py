"""No bytes crash the loader: random, mutated and structured documents, and every past crasher.

The loader's entry points (`parse_file` for one file, `load_files` for a
revision) answer every input with diagnostics, never an exception. Hypothesis
runs a bounded number of examples here so the suite stays fast; set
`RECONCILER_FUZZ_EXAMPLES` to hunt longer. Every input that ever crashed the
loader is kept in `tests/load/corpus/crashers/` and checked on each run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.errors import Diagnostic
from reconciler.load.load import LoadResult, ParsedFile, load_files, parse_file
from reconciler.model import KINDS
from tests.conftest import BASE_FILES, as_bytes

CRASHERS = Path(__file__).parent / "corpus" / "crashers"
EXAMPLES = int(os.environ.get("RECONCILER_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_SCALARS = [
    "2024-02-30",
    "2024-13-01",
    "2024-01-01 25:00:00",
    "2024-01-01T00:00:00+99:00",
    "!!int twenty",
    "!!int",
    "!!float fast",
    "!!bool maybe",
    "!!timestamp yesterday",
    "!!binary '@@@'",
    "!!null x",
    "!!str {a: 1}",
    "!!map [1]",
    "!!set {a}",
    "!!python/object:os.system x",
    "!custom x",
    "9" * 4400,
    "0x" + "f" * 4000,
    "0b" + "1" * 15000,
    "1:" + "59:" * 3000 + "1",
    "on",
    "1.10",
    "0755",
    "08",
    ".nan",
    "-.inf",
    "1e999",
    "~",
    "*nope",
    "&a x",
    "'\\x00'",
    '"\\0"',
    '"\\ud800"',
    "\x00",
    "\ufeff",
    "\x85",
    "[",
    "{a: 1, a: 2}",
    "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
    "{<<: 1}",
    "{<<: [*x]}",
    "? [a]\n  : b",
    "|\n  text",
    "env:NAME",
    "file:/x",
]
TOKENS = [
    "\n",
    "---\n",
    "...\n",
    "- ",
    ": ",
    "? ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!",
    "%YAML 1.1\n",
    "%TAG ! tag:yaml.org,2002:\n",
    "'",
    '"',
    "#",
    "{",
    "}",
    "[",
    "]",
    ",",
    "  ",
    "\t",
    *HOSTILE_SCALARS,
]


def documents() -> list[str]:
    return [d for text in BASE_FILES.values() for d in text.split("---\n")]


def assert_only_diagnostics(diagnostics: tuple[Diagnostic, ...]) -> None:
    for d in diagnostics:
        assert isinstance(d, Diagnostic)
        assert d.line >= 1 and d.col >= 1, d
        assert "\n" not in str(d), d


def check_file(data: bytes) -> ParsedFile:
    parsed = parse_file("fuzz.yaml", data)
    assert_only_diagnostics(parsed.diagnostics)
    return parsed


def check_revision(files: dict[str, bytes]) -> LoadResult:
    result = load_files(files)
    assert_only_diagnostics(result.diagnostics)
    assert result.ok == (not result.diagnostics)
    return result


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A document of the base repository with a few edits: tokens in, slices out."""
    text = draw(st.sampled_from(documents()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 12)) :]
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def hostile_value(draw: st.DrawFn) -> str:
    """A document of the base repository with one value replaced by a hostile scalar."""
    text = draw(st.sampled_from(documents()))
    lines = text.splitlines()
    candidates = [i for i, line in enumerate(lines) if ": " in line]
    i = draw(st.sampled_from(candidates))
    key = lines[i].split(": ", 1)[0]
    lines[i] = f"{key}: {draw(st.sampled_from(HOSTILE_SCALARS))}"
    return "\n".join(lines) + "\n"


FIELDS = [
    "provider",
    "pipeline",
    "profiles",
    "params",
    "dependsOn",
    "hooks",
    "bmc",
    "mac",
    "rack",
    "size",
    "image",
    "steps",
    "stage",
    "include",
    "inputs",
    "name",
    "type",
    "allowed",
    "default",
    "secure",
    "work",
    "validate",
    "pre-notify",
    "post-process",
    "chain",
    "converges",
    "action",
    "args",
    "url",
    "headers",
    "body",
    "auth",
    "bearer",
    "username",
    "password",
    "argv",
    "env",
    "secretEnv",
    "condition",
    "field",
    "equals",
    "exists",
    "prune",
    "selfHeal",
    "protected",
    "changeWindows",
    "start",
    "days",
    "settings",
    "credentials",
    "limits",
    "concurrency",
    "tls",
    "caBundle",
    "labels",
    "apiToken",
    "secretAccessKey",
    "*",
    "install-os",
]
plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_SCALARS),
)
data_trees = st.recursive(
    plain,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)


@st.composite
def structured(draw: st.DrawFn) -> str:
    """A document of a known kind whose metadata and spec are random data."""
    kind = draw(st.sampled_from(sorted(KINDS["reconciler/v1"])))
    name = draw(st.sampled_from(["m1", "sim", "bm", "app", "install-os", "x", "Bad_Name"]))
    body = {"metadata": {"name": name}, "spec": draw(data_trees)}
    dumped = yaml.safe_dump(body, allow_unicode=True)
    return f"apiVersion: reconciler/v1\nkind: {kind}\n{dumped}"


@FUZZ
@given(st.binary(max_size=2000))
@example(b"a: 2024-02-30\n")
@example(b"\xff\xfe\x00")
def test_random_bytes_give_diagnostics_only(data: bytes) -> None:
    check_file(data)


@FUZZ
@given(st.lists(st.sampled_from([*TOKENS, *"abc:-0129 \n\x00é"]), max_size=40).map("".join))
def test_yaml_like_text_gives_diagnostics_only(text: str) -> None:
    check_file(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(mutated())
def test_mutated_documents_give_diagnostics_only(data: bytes) -> None:
    check_file(data)
    check_revision({**as_bytes(BASE_FILES), "fuzz.yaml": data})


@FUZZ
@given(st.sampled_from(sorted(BASE_FILES)), hostile_value())
def test_hostile_values_in_the_repository_give_diagnostics_only(path: str, text: str) -> None:
    files = as_bytes(BASE_FILES)
    files[path] = files[path] + b"---\n" + text.encode("utf-8", errors="surrogatepass")
    check_revision(files)


@FUZZ
@given(st.lists(structured(), min_size=1, max_size=3))
def test_structured_documents_give_diagnostics_only(docs: list[str]) -> None:
    data = "---\n".join(docs).encode("utf-8", errors="surrogatepass")
    check_file(data)
    check_revision({**as_bytes(BASE_FILES), "fuzz.yaml": data})


@pytest.mark.parametrize("path", sorted(CRASHERS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_past_crasher_gives_diagnostics(path: Path) -> None:
    data = path.read_bytes()
    parsed = check_file(data)
    assert parsed.diagnostics, f"{path.name} should be refused"
    result = check_revision({**as_bytes(BASE_FILES), "crasher.yaml": data})
    assert not result.ok
    assert result.desired is None


def test_the_crasher_corpus_is_there() -> None:
    assert len(list(CRASHERS.glob("*.yaml"))) >= 10


# --- whole repositories: references, cycles, params, and a schema error or two -----------

STAGES = ["s1", "s2", "s3"]
PIPELINES = ["p1", "p2"]
MACHINES = ["m1", "m2", "m3"]
GHOST = "ghost"


def task(draw: st.DrawFn, i: int) -> dict[str, object]:
    kind = draw(st.sampled_from(["provider", "http", "command", "wait-for", "notify", "https"]))
    body: dict[str, object] = {"name": f"t{i}", "type": kind}
    if kind == "provider":
        body["action"] = draw(st.sampled_from(["install-os", "Bad Action"]))
        body["args"] = draw(st.sampled_from([{}, {"dbPassword": "leak"}, {"token": "env:T"}]))
    elif kind == "http":
        body["url"] = "http://127.0.0.1/x"
        body["headers"] = draw(st.sampled_from([{}, {"X-Api-Key": "leak"}]))
    elif kind == "command":
        body["argv"] = draw(st.sampled_from([["true"], []]))
    elif kind == "wait-for":
        body["condition"] = {"field": "power", "equals": ["on"]}
    elif kind == "notify":
        body["url"] = draw(st.sampled_from(["http://127.0.0.1/n", "not a url"]))
    return body


@st.composite
def repository(draw: st.DrawFn) -> tuple[dict[str, bytes], set[tuple[str, str]]]:
    """A small repository of every kind, with dangling references, cycles and broken values."""
    names = st.sampled_from
    docs: list[dict[str, object]] = [
        {"kind": "Provider", "metadata": {"name": "sim"}, "spec": {"type": "simulator"}}
    ]
    for stage in STAGES:
        spec: dict[str, object] = {
            "chain": draw(st.lists(names([*STAGES, GHOST]), max_size=2, unique=True)),
            "work": [task(draw, i) for i in range(draw(st.integers(0, 2)))],
        }
        docs.append({"kind": "Stage", "metadata": {"name": stage}, "spec": spec})
    for pipeline in PIPELINES:
        steps = draw(
            st.lists(
                st.one_of(
                    names([*STAGES, GHOST]).map(lambda s: {"stage": s}),
                    names([*PIPELINES, GHOST]).map(lambda p: {"include": p}),
                ),
                min_size=1,
                max_size=3,
            )
        )
        inputs = draw(st.sampled_from([[], [{"name": "os", "allowed": ["a", "b"]}]]))
        spec = {"steps": steps, "inputs": inputs, "params": {"os": draw(names(["a", "c"]))}}
        docs.append({"kind": "Pipeline", "metadata": {"name": pipeline}, "spec": spec})
    docs.append({"kind": "Profile", "metadata": {"name": "global"}, "spec": {}})
    for machine in MACHINES:
        spec = {
            "provider": draw(names(["sim", GHOST])),
            "pipeline": draw(names([*PIPELINES, GHOST])),
            "params": draw(st.sampled_from([{}, {"os": "b"}, {"os": "z"}, {"apiToken": "leak"}])),
            "dependsOn": draw(st.lists(names([*MACHINES, GHOST]), max_size=2, unique=True)),
            "hooks": draw(st.sampled_from([{}, {"s1": {}}, {GHOST: {}}])),
        }
        docs.append({"kind": "Machine", "metadata": {"name": machine}, "spec": spec})
    texts = [yaml.safe_dump({"apiVersion": "reconciler/v1", **d}, sort_keys=False) for d in docs]
    for _ in range(draw(st.integers(0, 2))):
        # A broken value somewhere in a spec: the document must still be known by its name.
        i = draw(st.integers(1, len(texts) - 1))
        lines = texts[i].splitlines()
        spec_at = next(k for k, line in enumerate(lines) if line.startswith("spec:"))
        j = draw(st.integers(spec_at, len(lines) - 1))
        if ": " in lines[j]:
            key = lines[j].split(": ", 1)[0]
            lines[j] = f"{key}: {draw(st.sampled_from(HOSTILE_SCALARS[:30]))}"
        texts[i] = "\n".join(lines) + "\n"
    declared = {(str(d["kind"]), str(d["metadata"]["name"])) for d in docs}  # type: ignore[index]
    files = {f"doc{i}.yaml": t.encode() for i, t in enumerate(texts)}
    return files, declared


UNKNOWN = re.compile(
    r"unknown (Stage|Pipeline|Provider|Profile) '([^']*)'|hooks for unknown Stage '([^']*)'"
)


@FUZZ
@given(repository())
def test_whole_repositories_report_nothing_declared_as_missing(
    drawn: tuple[dict[str, bytes], set[tuple[str, str]]],
) -> None:
    files, declared = drawn
    result = check_revision(files)
    for d in result.diagnostics:
        found = UNKNOWN.search(d.message)
        if found:
            kind = found.group(1) or "Stage"
            name = found.group(2) or found.group(3)
            assert (kind, name) not in declared, f"{d}: it is declared (maybe invalid)"
        if "in dependsOn" in d.message and "unknown resource" in d.message:
            assert d.message.split("'")[1] not in MACHINES, str(d)
        assert "leak" not in d.message, str(d)
