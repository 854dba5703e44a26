"""Validation in one round, in the project's words.

Every error of a repository comes in one run: a document with a schema error is
still known by its kind and name (nothing reports it missing) and the checks
across documents run on what of it validates. Messages name the field and say
what it must be, not pydantic's wording; values YAML 1.1 typed by surprise
(`on`, `1.10`, `0755`, `10:30`) get a hint to quote them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.load.load import load_files
from tests.conftest import BASE_FILES, ROOT, as_bytes

CANARY = "CANARY-9d2e-never-shown"

MORE = """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: Web_01}
spec: {provider: sim, pipeline: bm, params: {os: rhel}}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m4}
spec:
  provider: nope
  pipeline: bm
  params: {os: rhel}
  colour: blue
  dependsOn: [m1, ghost]
"""


def broken_everywhere() -> dict[str, str]:
    """The base repository with eleven errors in five files, six documents invalid."""
    files = dict(BASE_FILES)
    files["stages.yaml"] = (
        files["stages.yaml"]
        .replace("type: provider, action: install-os", "type: https, action: install-os")
        .replace("  converges: [params.app]\n", "  conveges: [params.app]\n")
    )
    files["pipelines.yaml"] = files["pipelines.yaml"].replace(
        "  steps:\n    - stage: install-app\n",
        "  steps:\n    - stage: install-app\n  hooks:\n    install-app:\n"
        "      pre-notify: [{name: n, type: notify}]\n",
    )
    files["machines.yaml"] = (
        files["machines.yaml"]
        .replace(
            "  provider: sim\n  pipeline: bm\n  params: {os: ubuntu}\n",
            "  provider: Lab_Sim\n  pipeline: bm\n  params: {os: ubuntu}\n",
        )
        .replace("metadata: {name: m2}", "metadata: {name: m2, labels: {enabled: on}}")
        .replace("  params: {os: rhel}\n", "  profiles: [web]\n  params: {os: windows}\n")
    )
    files["profiles.yaml"] = (
        "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: web}\n"
        f"spec:\n  params: {{apiToken: {CANARY}}}\n"
    )
    files["more.yaml"] = MORE
    return files


DNS = "must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (a DNS-style name)"  # noqa: E501
EVERY_ERROR = [
    f"machines.yaml:5:13: spec.provider: 'Lab_Sim' {DNS}",
    "machines.yaml:11:40: metadata.labels.enabled: must be a string, got a boolean; "
    "YAML reads on as true: quote it ('on') if you mean the text",
    "machines.yaml:16:16: param 'os' = 'windows' is not offered by pipeline 'bm' "
    "(allowed: ubuntu, rhel)",
    f"more.yaml:3:18: metadata.name: 'Web_01' {DNS}",
    "more.yaml:10:13: unknown Provider 'nope'; known: sim",
    "more.yaml:13:3: unknown field 'colour' in spec",
    "more.yaml:14:19: unknown resource 'ghost' in dependsOn",
    "pipelines.yaml:11:20: missing required field 'url' in spec.hooks.install-app.pre-notify[0]",
    "profiles.yaml:5:12: spec.params.apiToken: inline secret not allowed; "
    "give a reference, env:NAME or file:PATH",
    "stages.yaml:7:29: spec.work[0]: unknown task type 'https' (did you mean 'http'?); "
    "known: provider, http, command, ansible, wait-for, notify, terraform",
    "stages.yaml:13:3: unknown field 'conveges' in spec (did you mean 'converges'?)",
]


def test_every_error_of_the_repository_comes_in_one_round() -> None:
    result = load_files(as_bytes(broken_everywhere()))
    assert result.desired is None
    assert [str(d) for d in result.diagnostics] == EVERY_ERROR


def test_no_document_that_exists_is_reported_missing() -> None:
    # install-os, install-app, web, m1 and Web_01 all have schema errors; they exist.
    messages = [d.message for d in load_files(as_bytes(broken_everywhere())).diagnostics]
    unknown = [m for m in messages if re.search(r"unknown (Stage|Pipeline|Profile|resource)", m)]
    assert unknown == ["unknown resource 'ghost' in dependsOn"]
    assert not any(CANARY in m for m in messages)


def test_validate_prints_every_error_in_one_run(tmp_path: Path) -> None:
    for path, text in broken_everywhere().items():
        (tmp_path / path).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == EVERY_ERROR
    assert f"invalid: {len(EVERY_ERROR)} errors in 5 files" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_fixing_the_reported_errors_leaves_none() -> None:
    """What the round reported is all there was: fixing those makes the repository valid."""
    files = broken_everywhere()
    files["stages.yaml"] = BASE_FILES["stages.yaml"]
    files["pipelines.yaml"] = BASE_FILES["pipelines.yaml"]
    files["machines.yaml"] = BASE_FILES["machines.yaml"].replace(
        "  params: {os: rhel}\n", "  profiles: [web]\n  params: {os: rhel}\n"
    )
    files["profiles.yaml"] = files["profiles.yaml"].replace(CANARY, "env:WEB_TOKEN")
    files["more.yaml"] = MORE.replace("Web_01", "web-01").replace("nope", "sim")
    files["more.yaml"] = files["more.yaml"].replace("  colour: blue\n", "").replace(", ghost", "")
    assert load_files(as_bytes(files)).diagnostics == ()


MACHINE = """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m3}
spec:
  provider: sim
  pipeline: bm
  params: {os: ubuntu}
"""
STAGE = "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: s9}\nspec:\n  work:\n    - TASK\n"
POLICY = "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: policy}\nspec:\n  SPEC\n"


def label(text: str) -> str:
    return MACHINE.replace("metadata: {name: m3}", f"metadata: {{name: m3, labels: {{{text}}}}}")


def task(text: str) -> str:
    return STAGE.replace("TASK", "{name: x, " + text + "}")


MESSAGES: dict[str, tuple[str, str]] = {
    "name-pattern": (
        MACHINE.replace("{name: m3}", "{name: Web_01}"),
        f"3:18: metadata.name: 'Web_01' {DNS}",
    ),
    "name-too-long": (
        MACHINE.replace("{name: m3}", "{name: " + "a" * 300 + "}"),
        "3:18: metadata.name: must be at most 253 characters",
    ),
    "task-type": (
        task("type: https, url: 'http://x/'"),
        "6:23: spec.work[0]: unknown task type 'https' (did you mean 'http'?); "
        "known: provider, http, command, ansible, wait-for, notify, terraform",
    ),
    "task-type-missing": (
        task("url: 'http://x/'"),
        "6:7: missing required field 'type' in spec.work[0]; "
        "one of: provider, http, command, ansible, wait-for, notify, terraform",
    ),
    "task-name-pattern": (
        STAGE.replace("TASK", "{name: 'bad name', type: http, url: 'http://x/'}"),
        "6:14: spec.work[0].name: 'bad name' must be letters, digits, '.', '_' and '-', "
        "starting with a letter or digit, at most 63 characters",
    ),
    "unknown-field-did-you-mean": (
        task("type: command, argv: ['true'], agrv: [x]"),
        "6:48: unknown field 'agrv' in spec.work[0] (did you mean 'argv'?)",
    ),
    "unknown-top-level-field": (
        MACHINE + "specs: {}\n",
        "8:1: unknown field 'specs' (did you mean 'spec'?)",
    ),
    "missing-field": (
        task("type: provider"),
        "6:7: missing required field 'action' in spec.work[0]",
    ),
    "one-of-did-you-mean": (
        task("type: http, url: 'http://x/', method: get"),
        "6:55: spec.work[0].method: 'get' is not one of GET, POST, PUT, PATCH, DELETE "
        "(did you mean 'GET'?)",
    ),
    "not-a-url": (
        task("type: notify, url: 'not a url'"),
        "6:36: spec.work[0].url: must be a URL such as https://host/path "
        "(relative URL without a base)",
    ),
    "too-few-items": (
        task("type: command, argv: []"),
        "6:38: spec.work[0].argv: must have at least 1 item",
    ),
    "below-minimum": (
        task("type: command, argv: ['true'], retry: {attempts: 0}"),
        "6:66: spec.work[0].retry.attempts: must be at least 1",
    ),
    "wrong-type-list": (
        POLICY.replace("SPEC", "protected: web"),
        "5:14: spec.protected: must be a list, got a string",
    ),
    "wrong-type-mapping": (
        MACHINE.replace(
            "spec:\n  provider: sim\n  pipeline: bm\n  params: {os: ubuntu}\n", "spec: [a]\n"
        ),
        "4:7: spec: must be a mapping, got a list",
    ),
    "wrong-type-boolean": (
        POLICY.replace("SPEC", "prune: maybe"),
        "5:10: spec.prune: must be true or false, got a string",
    ),
    "mac-pattern": (
        MACHINE.replace("  params", "  bmc: {mac: '52:54:00'}\n  params"),
        "7:14: spec.bmc.mac: '52:54:00' must be a MAC address such as 52:54:00:01:00:01",
    ),
    "weekday": (
        POLICY.replace("SPEC", "changeWindows: [{days: [saturday], start: '10:30', end: '12:00'}]"),
        "5:27: spec.changeWindows[0].days[0]: 'saturday' is not one of mon, tue, wed, thu, fri, "
        "sat, sun (did you mean 'sat'?)",
    ),
    "kind-not-a-string": (
        "apiVersion: reconciler/v1\nkind: 5\n",
        "2:7: kind must be a string, got an integer",
    ),
}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_schema_errors_are_said_in_the_projects_words(case: str) -> None:
    text, expected = MESSAGES[case]
    result = load_files(as_bytes({**BASE_FILES, "x.yaml": text}))
    assert [str(d) for d in result.diagnostics] == [f"x.yaml:{expected}"]
    assert not any(
        "Input should" in d.message or "Extra inputs" in d.message for d in result.diagnostics
    )


def quote_it(word: str, value: str) -> str:
    return f"YAML reads {word} as {value}: quote it ('{word}')"


YAML11: dict[str, tuple[str, str, str]] = {
    # case: (document, "line:col: field: must be a string, got ...", the hint)
    "on": (
        label("monitoring: on"),
        "3:43: metadata.labels.monitoring: must be a string, got a boolean",
        quote_it("on", "true") + " if you mean the text",
    ),
    "off": (
        label("a: off"),
        "3:34: metadata.labels.a: must be a string, got a boolean",
        quote_it("off", "false") + " if you mean the text",
    ),
    "yes": (
        label("a: yes"),
        "3:34: metadata.labels.a: must be a string, got a boolean",
        quote_it("yes", "true") + " if you mean the text",
    ),
    "no": (
        label("a: no"),
        "3:34: metadata.labels.a: must be a string, got a boolean",
        quote_it("no", "false") + " if you mean the text",
    ),
    "float": (
        label("version: 1.10"),
        "3:40: metadata.labels.version: must be a string, got a number",
        quote_it("1.10", "the number 1.1"),
    ),
    "octal": (
        label("mode: 0755"),
        "3:37: metadata.labels.mode: must be a string, got an integer",
        quote_it("0755", "the octal number 493"),
    ),
    "number": (
        label("port: 8080"),
        "3:37: metadata.labels.port: must be a string, got an integer",
        "quote it ('8080') if you mean the text",
    ),
    "date": (
        label("since: 2024-01-01"),
        "3:38: metadata.labels.since: must be a string, got a date",
        quote_it("2024-01-01", "a date"),
    ),
    "base-60": (
        POLICY.replace("SPEC", "changeWindows: [{days: [sat], start: 10:30, end: '12:00'}]"),
        "5:40: spec.changeWindows[0].start: must be a string, got an integer",
        quote_it("10:30", "the base-60 number 630"),
    ),
    "param-on": (
        MACHINE.replace("{os: ubuntu}", "{os: ubuntu, app: on}"),
        "7:29: param 'app' must be a string for pipeline 'bm', got True",
        quote_it("on", "true") + " if you mean the text",
    ),
}


@pytest.mark.parametrize("case", sorted(YAML11))
def test_yaml_1_1_surprises_get_a_hint_to_quote(case: str) -> None:
    text, expected, hint = YAML11[case]
    result = load_files(as_bytes({**BASE_FILES, "x.yaml": text}))
    assert [str(d) for d in result.diagnostics] == [f"x.yaml:{expected}; {hint}"]


def test_a_leading_zero_number_read_as_text_where_a_number_is_expected() -> None:
    files = dict(BASE_FILES)
    files["pipelines.yaml"] = files["pipelines.yaml"].replace(
        "    - {name: licence, secure: true}\n",
        "    - {name: licence, secure: true}\n    - {name: disks, type: integer}\n",
    )
    files["machines.yaml"] = files["machines.yaml"].replace(
        "{os: ubuntu}", "{os: ubuntu, disks: 08}"
    )
    assert [str(d) for d in load_files(as_bytes(files)).diagnostics] == [
        "machines.yaml:7:31: param 'disks' must be an integer for pipeline 'bm', got '08'; "
        "YAML reads 08 as text because of the leading zero: write it without"
    ]


def test_quoted_values_get_no_hint() -> None:
    result = load_files(as_bytes({**BASE_FILES, "x.yaml": label("a: 'on'")}))
    assert result.diagnostics == ()
