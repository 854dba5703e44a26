"""The loader: one broken repository per kind of fault, each reported at its exact place."""

from __future__ import annotations

import pytest

from reconciler.load.load import is_declared_path, load_files, read_ignore_patterns
from tests.conftest import BASE_FILES, as_bytes


def errors_of(files: dict[str, str]) -> list[str]:
    result = load_files(as_bytes(files))
    assert not result.ok
    assert result.desired is None, "an invalid revision must yield nothing to act on"
    return [str(d) for d in result.diagnostics]


def with_file(path: str, text: str) -> dict[str, str]:
    return {**BASE_FILES, path: text}


def test_base_repository_is_valid() -> None:
    result = load_files(as_bytes(BASE_FILES))
    assert result.diagnostics == ()
    assert result.ok
    assert sorted(result.desired.resources) == ["Machine/m1", "Machine/m2"]
    assert result.desired.resources["Machine/m2"].depends_on == ("Machine/m1",)


MACHINE = """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m3}
spec:
  provider: sim
  pipeline: bm
  params: {os: ubuntu}
"""

CORPUS: dict[str, tuple[str, str]] = {
    "yaml-syntax": (
        "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m3\nspec: {}\n",
        "m3.yaml:4:5: while parsing a flow mapping did not find expected ',' or '}'",
    ),
    "wrong-type": (
        MACHINE.replace("  params: {os: ubuntu}\n", "  profiles: oops\n  params: {os: ubuntu}\n"),
        "m3.yaml:7:13: spec.profiles: must be a list, got a string",
    ),
    "unknown-field": (
        MACHINE + "  colour: blue\n",
        "m3.yaml:8:3: unknown field 'colour' in spec",
    ),
    "unknown-task-field": (
        MACHINE
        + "  hooks:\n    install-os:\n      pre-notify:\n"
        + "        - {name: n, type: notify, url: 'http://x/', retries: 3}\n",
        "m3.yaml:11:53: unknown field 'retries' in spec.hooks.install-os.pre-notify[0] "
        "(did you mean 'retry'?)",
    ),
    "missing-field": (
        "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: i1}\n"
        "spec: {provider: sim, pipeline: bm, image: x}\n",
        "m3.yaml:4:7: missing required field 'size' in spec",
    ),
    "duplicate-key": (
        MACHINE + "  pipeline: app\n",
        "m3.yaml:8:3: duplicate key 'pipeline' (first at line 6, column 3)",
    ),
    "duplicate-kind-name": (
        MACHINE.replace("m3", "m1"),
        "machines.yaml:3:18: duplicate Machine 'm1': already declared at m3.yaml:1:1",
    ),
    "dangling-provider": (
        MACHINE.replace("provider: sim", "provider: nope"),
        "m3.yaml:5:13: unknown Provider 'nope'; known: sim",
    ),
    "dangling-depends-on": (
        MACHINE + "  dependsOn: [m1, ghost]\n",
        "m3.yaml:8:19: unknown resource 'ghost' in dependsOn",
    ),
    "inline-secret": (
        MACHINE.replace("{os: ubuntu}", "{os: ubuntu, adminPassword: hunter2}"),
        "m3.yaml:7:24: spec.params.adminPassword: inline secret not allowed; "
        "give a reference, env:NAME or file:PATH",
    ),
    "inline-secret-credentials": (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: bmc}\n"
        "spec:\n  type: redfish\n  credentials:\n    password: hunter2\n",
        "m3.yaml:7:15: spec.credentials.password: inline secret not allowed: "
        "give a reference, env:NAME or file:PATH",
    ),
    "param-not-offered": (
        MACHINE.replace("{os: ubuntu}", "{os: windows-95}"),
        "m3.yaml:7:16: param 'os' = 'windows-95' is not offered by pipeline 'bm' "
        "(allowed: ubuntu, rhel)",
    ),
    "param-unknown": (
        MACHINE.replace("{os: ubuntu}", "{os: ubuntu, colour: blue}"),
        "m3.yaml:7:24: param 'colour' is not an input of pipeline 'bm' "
        "(inputs: app, licence, os, rootPassword)",
    ),
    "secure-param-inline": (
        MACHINE.replace("{os: ubuntu}", "{os: ubuntu, rootPassword: s3cret}"),
        "m3.yaml:7:24: spec.params.rootPassword: inline secret not allowed; "
        "give a reference, env:NAME or file:PATH",
    ),
    "secure-param-not-a-reference": (
        MACHINE.replace("{os: ubuntu}", "{os: ubuntu, licence: ABCD-1234}"),
        "m3.yaml:7:33: param 'licence' is secure: give a reference, env:NAME or file:PATH",
    ),
    "required-param-missing": (
        MACHINE.replace("  params: {os: ubuntu}\n", ""),
        "m3.yaml:5:3: pipeline 'bm' requires param 'os'",
    ),
    "unknown-api-version": (
        MACHINE.replace("reconciler/v1", "reconciler/v9"),
        "m3.yaml:1:13: unsupported apiVersion 'reconciler/v9'; supported: reconciler/v1",
    ),
    "unknown-kind": (
        MACHINE.replace("kind: Machine", "kind: Server"),
        "m3.yaml:2:7: unknown kind 'Server' for reconciler/v1; known: Provider, Machine, "
        "Instance, Resource, Pipeline, Stage, Profile, Policy",
    ),
    "bad-task-type": (
        MACHINE + "  hooks:\n    '*':\n      pre-process:\n        - {name: x, type: shell}\n",
        "m3.yaml:11:27: spec.hooks.*.pre-process[0]: unknown task type 'shell'; "
        "known: provider, http, command, ansible, wait-for, notify, terraform",
    ),
    "not-a-mapping": (
        "- just\n- a list\n",
        "m3.yaml:1:1: a document is a mapping: apiVersion, kind, metadata, spec",
    ),
    "unsupported-tag": (
        MACHINE.replace("{os: ubuntu}", "!!python/object:os.system {os: ubuntu}"),
        "m3.yaml:7:11: spec.params: unsupported tag 'tag:yaml.org,2002:python/object:os.system'",
    ),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_broken_repository_reports_exact_position(case: str) -> None:
    text, expected = CORPUS[case]
    assert errors_of(with_file("m3.yaml", text)) == [expected]


def test_dependency_cycle_is_named() -> None:
    files = dict(BASE_FILES)
    files["machines.yaml"] = files["machines.yaml"].replace(
        "  params: {os: ubuntu}\n", "  params: {os: ubuntu}\n  dependsOn: [m2]\n", 1
    )
    assert errors_of(files) == [
        "machines.yaml:8:15: dependsOn cycle: Machine/m1 -> Machine/m2 -> Machine/m1"
    ]


def test_include_cycle_is_named() -> None:
    files = dict(BASE_FILES)
    files["pipelines.yaml"] = files["pipelines.yaml"].replace(
        "    - stage: install-app\n", "    - stage: install-app\n    - include: bm\n"
    )
    assert errors_of(files) == ["pipelines.yaml:9:16: pipeline include cycle: app -> bm -> app"]


def test_chain_cycle_is_named() -> None:
    files = dict(BASE_FILES)
    files["stages.yaml"] = (
        files["stages.yaml"]
        .replace("  converges: [params.os]\n", "  converges: [params.os]\n  chain: [install-app]\n")
        .replace(
            "  converges: [params.app]\n", "  converges: [params.app]\n  chain: [install-os]\n"
        )
    )
    assert errors_of(files) == [
        "stages.yaml:15:10: stage chain cycle: install-app -> install-os -> install-app"
    ]


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    errors = errors_of(with_file("bomb.yaml", "\n".join(lines) + "\n"))
    assert errors == [
        "bomb.yaml:5:5: document expands to more than 200000 values (alias expansion bomb?)"
    ]


def test_oversize_file_is_refused() -> None:
    big = MACHINE + "# " + "x" * (1024 * 1024) + "\n"
    assert errors_of(with_file("big.yaml", big)) == [
        f"big.yaml:1:1: file is {len(big)} bytes, over the limit of 1048576 bytes"
    ]


def test_non_utf8_file_is_refused() -> None:
    files = as_bytes(BASE_FILES)
    files["latin1.yaml"] = "apiVersion: reconciler/v1\nkind: Machine\n# caf\xe9\n".encode("latin-1")
    result = load_files(files)
    assert [str(d) for d in result.diagnostics] == ["latin1.yaml:3:6: file is not valid UTF-8"]


def test_deep_nesting_is_refused_without_crashing() -> None:
    deep = "a: " + "[" * 100_000 + "]" * 100_000 + "\n"
    errors = errors_of(with_file("deep.yaml", deep))
    # Our own limit answers first; PyYAML >= 6.0.4's libyaml has one too, a little deeper.
    assert len(errors) == 1
    assert errors[0].startswith("deep.yaml:1:")
    assert "nest" in errors[0]
    block = "a:\n" + "".join(" " * i + "k:\n" for i in range(1, 80))
    assert errors_of(with_file("block.yaml", block)) == [
        "block.yaml:66:66: nested deeper than 64 levels"
    ]


def test_every_error_is_reported_sorted() -> None:
    files = with_file("a.yaml", MACHINE.replace("provider: sim", "provider: nope"))
    files["z.yaml"] = MACHINE.replace("m3", "m4") + "  colour: blue\n"
    files["b.yaml"] = "kind: [\n"
    errors = errors_of(files)
    assert [e.split(":")[0] for e in errors] == ["a.yaml", "b.yaml", "z.yaml"]


def test_errors_never_echo_a_secret_value() -> None:
    canary = "CANARY-7f3a9c-do-not-leak"
    files = with_file(
        "m3.yaml", MACHINE.replace("{os: ubuntu}", f"{{os: ubuntu, apiToken: {canary}}}")
    )
    files["p.yaml"] = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: bmc}\n"
        f"spec:\n  type: redfish\n  credentials:\n    password: {canary}\n"
    )
    files["n.yaml"] = MACHINE.replace("m3", "m5").replace(
        "{os: ubuntu}", f"{{os: ubuntu, rootPassword: {canary}}}"
    )
    errors = errors_of(files)
    assert len(errors) == 3
    assert not any(canary in e for e in errors)


def test_ignored_and_controller_paths_are_not_loaded() -> None:
    patterns = read_ignore_patterns(b"# playbooks are YAML too\nplaybooks/\n*.draft.yaml\n")
    assert patterns == ("playbooks/", "*.draft.yaml")
    assert is_declared_path("machines/rack1.yaml", patterns)
    assert is_declared_path("machines/rack1.yml", patterns)
    assert not is_declared_path("playbooks/site.yaml", patterns)
    assert not is_declared_path("x.draft.yaml", patterns)
    assert not is_declared_path("status/Machine/m1.yaml", patterns)
    assert not is_declared_path(".github/workflows/ci.yaml", patterns)
    assert not is_declared_path("README.md", patterns)
    files = as_bytes(BASE_FILES)
    files[".reconcilerignore"] = b"playbooks/\n"
    files["playbooks/site.yaml"] = b"- hosts: all\n  tasks: []\n"
    files["status/Machine/m1.yaml"] = b"phase: Ready\n"
    assert load_files(files).ok


def test_ambiguous_bare_depends_on() -> None:
    files = with_file(
        "i.yaml",
        "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: m1}\n"
        "spec: {provider: sim, pipeline: bm, size: s, image: i, params: {os: rhel}}\n",
    )
    files["machines.yaml"] += "  # m2 depends on a bare name that is now ambiguous\n"
    assert errors_of(files) == [
        "machines.yaml:16:15: ambiguous dependsOn 'm1': write one of Instance/m1, Machine/m1"
    ]


def test_assemble_cache_reuses_unchanged_resources_and_rechecks_changed() -> None:
    from reconciler.load.load import AssembleCache, assemble, parse_file

    files = as_bytes(BASE_FILES)
    parsed = {p: parse_file(p, d) for p, d in files.items()}
    cache = AssembleCache()
    first = assemble(parsed.values(), files.__getitem__, cache=cache)
    assert first.ok and cache.reused == 0
    again = assemble(parsed.values(), files.__getitem__, cache=cache)
    assert again.ok and cache.reused == 2
    assert again.desired.resources == first.desired.resources
    # A changed pipeline invalidates everything: m1's os is no longer offered.
    changed = dict(files)
    changed["pipelines.yaml"] = files["pipelines.yaml"].replace(b"[ubuntu, rhel]", b"[rhel]")
    parsed["pipelines.yaml"] = parse_file("pipelines.yaml", changed["pipelines.yaml"])
    result = assemble(parsed.values(), changed.__getitem__, cache=cache)
    assert [str(d) for d in result.diagnostics] == [
        "machines.yaml:7:16: param 'os' = 'ubuntu' is not offered by pipeline 'bm' (allowed: rhel)"
    ]
