"""The hostile-input corpus through the real CLI: `reconciler validate` as a subprocess.

tests/test_load_hostile.py, test_load_messages.py and test_load_secrets.py check
these classes through `load_files()`; here the same cases (their tables are
imported, not copied) go through `python -m reconciler validate DIR` as a user
runs it, and each asserts what the user sees: exit code 1, the exact
`path:line:col: message` line on stdout, the error count on stderr, and no
traceback anywhere. A trailing `---` exits 0. An inline secret's value appears in
neither stream, in text or JSON output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_FILES, ROOT
from tests.load.test_load_messages import MESSAGES, YAML11
from tests.load.test_load_secrets import CANARY, PROFILE, REFUSED, SECRET_LOOKING

pytestmark = pytest.mark.slow


def validate(tmp: Path, files: dict[str, bytes | str], *args: str) -> subprocess.CompletedProcess:
    repo = tmp / "repo"
    for path, content in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        (repo / path).write_bytes(data)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(repo), *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def assert_one_error(done: subprocess.CompletedProcess, line: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.splitlines() == [line], done.stdout
    assert "invalid: 1 errors in 1 files" in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_nul_byte_is_one_line_at_its_position(tmp_path: Path) -> None:
    machines = BASE_FILES["machines.yaml"].replace(
        "  params: {os: ubuntu}\n", "  params: {os: \u00e9t\u00e9\x00}\n", 1
    )
    done = validate(tmp_path, {**BASE_FILES, "machines.yaml": machines})
    assert_one_error(
        done,
        "machines.yaml:7:19: character U+0000 is not allowed in YAML "
        "(control characters are not allowed)",
    )
    assert "position" not in done.stdout + done.stderr  # not PyYAML's second line


@pytest.mark.parametrize("ending", ["---\n", "---", "--- ~\n", "---\n# nothing more\n---\n"])
def test_a_trailing_empty_document_validates(tmp_path: Path, ending: str) -> None:
    files = {**BASE_FILES, "machines.yaml": BASE_FILES["machines.yaml"] + ending}
    done = validate(tmp_path, files)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_schema_errors_in_the_projects_words(tmp_path: Path, case: str) -> None:
    text, expected = MESSAGES[case]
    done = validate(tmp_path, {**BASE_FILES, "x.yaml": text})
    assert_one_error(done, f"x.yaml:{expected}")
    assert "Input should" not in done.stdout and "Extra inputs" not in done.stdout


@pytest.mark.parametrize("case", sorted(YAML11))
def test_yaml_1_1_surprises_get_their_hint(tmp_path: Path, case: str) -> None:
    text, expected, hint = YAML11[case]
    done = validate(tmp_path, {**BASE_FILES, "x.yaml": text})
    assert_one_error(done, f"x.yaml:{expected}; {hint}")


@pytest.mark.parametrize("key", SECRET_LOOKING)
def test_an_inline_value_under_a_secret_looking_key_is_refused(tmp_path: Path, key: str) -> None:
    files = {**BASE_FILES, "p.yaml": PROFILE + f"    {key}: {CANARY}\n"}
    done = validate(tmp_path, files)
    assert_one_error(done, f"p.yaml:6:5: spec.params.{key}: {REFUSED}")
    assert CANARY not in done.stdout + done.stderr
    as_json = validate(tmp_path, files, "--output", "json")
    assert as_json.returncode == 1 and f"spec.params.{key}" in as_json.stdout
    assert CANARY not in as_json.stdout + as_json.stderr
    assert "Traceback" not in as_json.stdout + as_json.stderr


def test_provider_settings_refuse_an_inline_secret_access_key(tmp_path: Path) -> None:
    provider = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: aws}\nspec:\n"
        f"  type: aws-ec2\n  settings:\n    secretAccessKey: {CANARY}\n"
    )
    done = validate(tmp_path, {**BASE_FILES, "aws.yaml": provider})
    assert_one_error(done, f"aws.yaml:7:5: spec.settings.secretAccessKey: {REFUSED}")
    assert CANARY not in done.stdout + done.stderr
