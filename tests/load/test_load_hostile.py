"""Values YAML resolves but cannot construct, control characters, empty documents.

Each is a diagnostic at the value's `path:line:col`, never a traceback, from the
loader, from `reconciler validate` and from `reconciler apply` (which loads the
revision from Git the way `run` does). The document holding the bad value is
still known by its name: nothing else reports it missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.load.load import load_files
from tests.conftest import BASE_FILES, ROOT, as_bytes
from tests.e2e.support import Fleet

# machines.yaml of the base repository, with a label on m1 (which m2 depends on).
LABELLED = "metadata: {name: m1, labels: {since: VALUE}}"
AT = "machines.yaml:3:38: metadata.labels.since: "

UNREADABLE: dict[str, tuple[str, str]] = {
    "impossible-date": (
        "2024-02-30",
        "looks like a date but is not one (day is out of range for month); quote it if it is text",
    ),
    "month-13": (
        "2024-13-01",
        "looks like a date but is not one (month must be in 1..12); quote it if it is text",
    ),
    "int-tag-on-text": (
        "!!int twenty",
        "the value tagged !!int is not an integer; fix the value or remove the tag",
    ),
    "float-tag-on-text": (
        "!!float fast",
        "the value tagged !!float is not a number; fix the value or remove the tag",
    ),
    "bool-tag-maybe": (
        "!!bool maybe",
        "the value tagged !!bool is not a boolean; fix the value or remove the tag",
    ),
    "timestamp-tag-yesterday": (
        "!!timestamp yesterday",
        "the value tagged !!timestamp is not a date or time; fix the value or remove the tag",
    ),
    "empty-int-tag": (
        "!!int ''",
        "an empty value tagged !!int is not an integer; fix the value or remove the tag",
    ),
    "over-int-digit-limit": (
        "9" * 5000,
        "integer with more than 4300 digits is too large; quote it if it is text",
    ),
    "hex-over-int-digit-limit": (
        "0x" + "f" * 4000,
        "integer with more than 4300 digits is too large; quote it if it is text",
    ),
}


def machines_with(value: str) -> dict[str, str]:
    files = dict(BASE_FILES)
    files["machines.yaml"] = files["machines.yaml"].replace(
        "metadata: {name: m1}", LABELLED.replace("VALUE", value), 1
    )
    return files


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_a_value_yaml_cannot_construct_is_one_diagnostic_at_the_value(case: str) -> None:
    value, message = UNREADABLE[case]
    result = load_files(as_bytes(machines_with(value)))
    assert result.desired is None
    # m2 depends on m1: m1 is still known, so this is the only error.
    assert [str(d) for d in result.diagnostics] == [AT + message]


def test_validate_reports_an_impossible_date_and_exits_1(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, machines_with("2024-02-30"))
    result = cli("validate", str(repo))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [AT + UNREADABLE["impossible-date"][1]]
    assert "Traceback" not in result.stderr
    assert "invalid: 1 errors in 1 files" in result.stderr


def test_validate_at_a_git_revision_reports_an_unreadable_tag(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, machines_with("!!bool maybe"))
    result = cli("validate", "--ref", "main", str(fleet.bare))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [AT + UNREADABLE["bool-tag-maybe"][1]]
    assert "Traceback" not in result.stderr


def test_apply_refuses_an_unconstructable_revision_without_a_traceback(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, machines_with("9" * 5000))
    result = fleet.run("apply")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert AT + UNREADABLE["over-int-digit-limit"][1] in result.stderr.splitlines()
    assert "is invalid (1 error)" in result.stderr
    assert fleet.started_actions() == 0, "nothing of an invalid revision is acted on"


def test_a_nul_byte_is_reported_at_its_own_line_and_column_in_one_line() -> None:
    files = as_bytes(BASE_FILES)
    # "é" is two bytes in UTF-8: the column counts characters, as an editor does.
    files["machines.yaml"] = files["machines.yaml"].replace(
        b"  params: {os: ubuntu}\n", "  params: {os: \u00e9t\u00e9\x00}\n".encode(), 1
    )
    result = load_files(files)
    assert [str(d) for d in result.diagnostics] == [
        "machines.yaml:7:19: character U+0000 is not allowed in YAML "
        "(control characters are not allowed)"
    ]


def test_other_control_characters_are_located_too() -> None:
    files = as_bytes(BASE_FILES)
    files["stages.yaml"] = files["stages.yaml"].replace(b"[params.app]", b"[params.app\x07]")
    assert [str(d) for d in load_files(files).diagnostics] == [
        "stages.yaml:13:25: character U+0007 is not allowed in YAML "
        "(control characters are not allowed)"
    ]


@pytest.mark.parametrize("ending", ["---\n", "---", "--- ~\n", "---\n# nothing more\n---\n"])
def test_an_explicit_empty_document_is_not_an_error(ending: str) -> None:
    files = as_bytes({**BASE_FILES, "machines.yaml": BASE_FILES["machines.yaml"] + ending})
    result = load_files(files)
    assert result.diagnostics == ()
    assert sorted(result.desired.resources) == ["Machine/m1", "Machine/m2"]


def test_a_document_after_a_bad_value_in_the_same_file_is_still_checked() -> None:
    files = machines_with("!!int twenty")
    files["machines.yaml"] = files["machines.yaml"].replace("provider: sim", "provider: nope")
    assert [str(d) for d in load_files(as_bytes(files)).diagnostics] == [
        AT + UNREADABLE["int-tag-on-text"][1],
        "machines.yaml:5:13: unknown Provider 'nope'; known: sim",
        "machines.yaml:13:13: unknown Provider 'nope'; known: sim",
    ]


def test_documents_after_a_syntax_error_are_still_known_by_name() -> None:
    files = dict(BASE_FILES)
    # install-os breaks with an undefined alias: the pipeline using it must not call it unknown.
    files["stages.yaml"] = files["stages.yaml"].replace(
        "  converges: [params.os]\n", "  converges: *nowhere\n"
    )
    assert [str(d) for d in load_files(as_bytes(files)).diagnostics] == [
        "stages.yaml:5:14: found undefined alias"
    ]
