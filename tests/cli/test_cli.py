"""The command line as CI and users call it: a real subprocess, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import BASE_FILES, ROOT


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=60,
    )


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def test_sample_repo_validates() -> None:
    result = run("validate", "sample-repo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "valid:" in result.stderr


def test_invalid_repo_exits_1_with_one_line_errors(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["machines.yaml"] = files["machines.yaml"].replace("provider: sim", "provider: gone", 1)
    files["extra.yaml"] = "kind: [\n"
    result = run("validate", str(write_repo(tmp_path, files)))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("extra.yaml:2:1: ")
    assert lines[1] == "machines.yaml:5:13: unknown Provider 'gone'; known: sim"
    assert "invalid: 2 errors in 2 files" in result.stderr


def test_validate_json_output(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["machines.yaml"] = files["machines.yaml"].replace("{os: ubuntu}", "{os: beos}", 1)
    result = run("validate", "--output", "json", str(write_repo(tmp_path, files)))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["errors"] == [
        {
            "path": "machines.yaml",
            "line": 7,
            "col": 16,
            "message": "param 'os' = 'beos' is not offered by pipeline 'bm' "
            "(allowed: ubuntu, rhel)",
        }
    ]


def test_validate_missing_directory() -> None:
    result = run("validate", "/nonexistent/repo")
    assert result.returncode == 1
    assert "not a directory" in result.stderr


def test_schemas_are_up_to_date(tmp_path: Path) -> None:
    result = run("schema", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in (ROOT / "schemas").iterdir()}
    assert generated == committed, "schemas/ is stale: run `reconciler schema`"


def test_sample_repo_files_point_at_their_schema() -> None:
    for path in (ROOT / "sample-repo").rglob("*.yaml"):
        if "playbooks" in path.parts:
            continue
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        schema = (path.parent / first.split("=", 1)[1]).resolve()
        assert schema.is_file(), f"{path}: {schema} does not exist"


def test_validate_a_revision_without_checkout(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", dict(BASE_FILES))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "good"], check=True)
    (repo / "machines.yaml").write_text(BASE_FILES["machines.yaml"].replace("sim", "gone", 1))
    subprocess.run([*git, "commit", "-qam", "bad"], check=True)
    (repo / "machines.yaml").write_text(BASE_FILES["machines.yaml"])  # the checkout is fine again
    assert run("validate", str(repo)).returncode == 0
    bad = run("validate", "--ref", "HEAD", str(repo))
    assert bad.returncode == 1
    assert bad.stdout.startswith("machines.yaml:5:13: unknown Provider 'gone'")
    assert run("validate", "--ref", "HEAD~1", str(repo)).returncode == 0
    missing = run("validate", "--ref", "no-such-ref", str(repo))
    assert missing.returncode == 1
    assert "cannot read revision 'no-such-ref'" in missing.stderr


def test_every_setting_is_documented_in_the_readme() -> None:
    from reconciler.settings import Settings

    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"RECONCILER_{name.upper()}" not in readme]
    assert missing == [], f"settings missing from the README's table: {missing}"
