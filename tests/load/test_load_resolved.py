"""What only resolved resources show: composed task names, converged fields a provider
cannot observe. Through `reconciler validate` (the CLI) and the loader it calls."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from reconciler.cli.cli import app
from tests.conftest import BASE_FILES


def validate(tmp_path: Path, files: dict[str, str]) -> tuple[int, list[str]]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines


def test_two_composed_hooks_with_one_name_are_an_error_naming_both(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["pipelines.yaml"] += (
        "  hooks:\n    install-os:\n      pre-process:\n"
        '        - {name: tell-cmdb, type: command, argv: ["true"]}\n'
    )
    files["machines.yaml"] = files["machines.yaml"].replace(
        "  params: {os: ubuntu}\n",
        '  params: {os: ubuntu}\n  hooks:\n    "*":\n      pre-process:\n'
        '        - {name: tell-cmdb, type: command, argv: ["false"]}\n',
        1,
    )
    code, lines = validate(tmp_path, files)
    assert code == 1
    assert lines == [
        "machines.yaml:11:18: task name 'tell-cmdb' appears twice in stage install-os as "
        "composed for Machine/m1; also at pipelines.yaml:24:18"
    ]


def test_a_converged_field_the_provider_does_not_observe_is_an_error(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["providers.yaml"] = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
        "spec:\n  type: aws-ec2\n  region: us-east-1\n"
    )
    files["stages.yaml"] = files["stages.yaml"].replace(
        "  converges: [params.os]\n", "  converges: [power]\n"
    )
    code, lines = validate(tmp_path, files)
    assert code == 1
    assert (
        "machines.yaml:5:13: provider sim (aws-ec2) does not manage Machine resources; "
        "it manages Instance"
    ) in lines

    files["machines.yaml"] = files["machines.yaml"].replace("provider: sim", "provider: bmc")
    files["providers.yaml"] = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: bmc}\n"
        "spec:\n  type: redfish\n  endpoint: https://bmc.example.com\n"
    )
    code, lines = validate(tmp_path, files)
    assert code == 1
    assert lines == [
        "stages.yaml:13:15: converges 'params.app', which provider bmc (redfish) does not "
        "observe for Machine (used by Machine/m1): nothing could tell whether it holds; it "
        "observes bmc, bootDevice, bootOverride, discovered, health, identity, inventory, "
        "power, virtualMedia"
    ]
