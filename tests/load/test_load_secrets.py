"""Secret-looking keys hold references: inline values are refused, and never repeated.

A key is secret-looking when a secret word appears anywhere in it, in any case
and across camelCase, snake_case and kebab-case (`secretAccessKey`,
`db_password`, `apiToken`, `privateKeyPem`, `X-Api-Key`). Under such a key,
`params`, provider `settings`, provider task `args`, and http task `body` and
`headers` take a reference (`env:NAME`, `file:PATH`) or a `${params.NAME}`
template, whose param is checked where it is set. The error points at the key
and never shows the value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.load.load import load_files, parse_file
from tests.conftest import BASE_FILES, ROOT, as_bytes

CANARY = "CANARY-51f0-do-not-show"
EXAMPLES = ROOT / "examples" / "providers"
REFUSED = "inline secret not allowed; give a reference, env:NAME or file:PATH"

PROFILE = "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: p}\nspec:\n  params:\n"
STAGE = "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: s9}\nspec:\n  work:\n    - "


def errors(path: str, text: str) -> list[str]:
    result = load_files(as_bytes({**BASE_FILES, path: text}))
    messages = [str(d) for d in result.diagnostics]
    assert not any(CANARY in m for m in messages), messages
    return messages


SECRET_LOOKING = [
    "secretAccessKey",
    "db_password",
    "apiToken",
    "privateKeyPem",
    "private_key",
    "API_KEY",
    "x-api-key",
    "clientSecret",
    "githubTokens",
    "credentials",
    "sshPassphrase",
    "adminPass",
    "DB_PASS",
    "db-pwd",
]


@pytest.mark.parametrize("key", SECRET_LOOKING)
def test_a_secret_looking_key_anywhere_in_the_name_refuses_an_inline_value(key: str) -> None:
    assert errors("p.yaml", PROFILE + f"    {key}: {CANARY}\n") == [
        f"p.yaml:6:5: spec.params.{key}: {REFUSED}"
    ]


@pytest.mark.parametrize("key", ["passthrough", "bypass", "compass", "passive", "keyName", "user"])
def test_words_that_only_contain_pass_are_not_secret_looking(key: str) -> None:
    assert errors("p.yaml", PROFILE + f"    {key}: plain\n") == []


@pytest.mark.parametrize(
    "value", ["env:DB_PASSWORD", "file:/run/secrets/db", "true", "false", "null", "'${params.pw}'"]
)
def test_a_reference_or_a_flag_under_a_secret_looking_key_is_fine(value: str) -> None:
    assert errors("p.yaml", PROFILE + f"    db_password: {value}\n") == []


def test_values_nested_under_a_secret_looking_key_are_all_refused() -> None:
    text = PROFILE + f"    tokens: [env:T1, {CANARY}]\n    db: {{rootPassword: {CANARY}}}\n"
    assert errors("p.yaml", text) == [
        f"p.yaml:6:22: spec.params.tokens[1]: {REFUSED}",
        f"p.yaml:7:10: spec.params.db.rootPassword: {REFUSED}",
    ]


PROVIDER = (
    "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: aws}\nspec:\n  type: aws-ec2\n"
)


def test_provider_settings_refuse_an_inline_secret_access_key() -> None:
    text = PROVIDER + f"  settings:\n    secretAccessKey: {CANARY}\n"
    assert errors("aws.yaml", text) == [f"aws.yaml:7:5: spec.settings.secretAccessKey: {REFUSED}"]


def test_provider_credentials_take_references_under_secret_looking_keys() -> None:
    text = PROVIDER + (
        "  credentials:\n    accessKeyId: env:AWS_ACCESS_KEY_ID\n"
        "    secretAccessKey: env:AWS_SECRET_ACCESS_KEY\n    sessionToken: file:/run/token\n"
    )
    assert errors("aws.yaml", text) == []


def test_provider_task_args_refuse_an_inline_secret_at_the_key() -> None:
    text = STAGE + f"{{name: t, type: provider, action: set-bmc, args: {{dbPassword: {CANARY}}}}}\n"
    assert errors("s.yaml", text) == [f"s.yaml:6:57: spec.work[0].args.dbPassword: {REFUSED}"]


def test_provider_task_args_take_a_param_template() -> None:
    text = STAGE + "{name: t, type: provider, action: set-bmc, args: {password: '${params.pw}'}}\n"
    assert errors("s.yaml", text) == []


def test_http_task_body_refuses_an_inline_secret_however_deep() -> None:
    text = STAGE + (
        "name: t\n      type: http\n      url: http://cmdb.local/x\n"
        f"      body:\n        auth:\n          apiToken: {CANARY}\n"
    )
    assert errors("s.yaml", text) == [f"s.yaml:11:11: spec.work[0].body.auth.apiToken: {REFUSED}"]


@pytest.mark.parametrize("header", ["X-Api-Key", "Authorization", "X-Auth-Token"])
def test_http_task_headers_refuse_an_inline_secret(header: str) -> None:
    text = (
        STAGE
        + f"{{name: t, type: http, url: 'http://x/', headers: {{{header}: Bearer {CANARY}}}}}\n"
    )
    assert errors("s.yaml", text) == [
        f"s.yaml:6:57: spec.work[0].headers.{header}: {REFUSED}, or use auth.bearer"
    ]


@pytest.mark.parametrize("value", ["env:CMDB_TOKEN", "'Bearer ${params.token}'"])
def test_http_task_headers_take_references_and_templates(value: str) -> None:
    text = (
        STAGE + f"{{name: t, type: http, url: 'http://x/', headers: {{Authorization: {value}}}}}\n"
    )
    assert errors("s.yaml", text) == []


def test_a_hook_task_of_a_machine_is_checked_too() -> None:
    text = BASE_FILES["machines.yaml"].replace(
        "  dependsOn: [m1]\n",
        "  dependsOn: [m1]\n  hooks:\n    install-os:\n      pre-process:\n"
        f"        - {{name: t, type: provider, action: a, args: {{apiKey: {CANARY}}}}}\n",
    )
    assert errors("machines.yaml", text) == [
        f"machines.yaml:20:55: spec.hooks.install-os.pre-process[0].args.apiKey: {REFUSED}"
    ]


def test_validate_json_output_never_shows_the_value(tmp_path: Path) -> None:
    files = {**BASE_FILES, "aws.yaml": PROVIDER + f"  settings: {{privateKeyPem: {CANARY}}}\n"}
    for path, text in files.items():
        (tmp_path / path).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--output", "json", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert [e["message"] for e in json.loads(result.stdout)["errors"]] == [
        f"spec.settings.privateKeyPem: {REFUSED}"
    ]
    assert CANARY not in result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_example_providers_still_validate(path: Path) -> None:
    assert parse_file(path.name, path.read_bytes()).diagnostics == ()


DIGITS = "73914562"


@pytest.mark.parametrize(
    "credentials",
    [
        f"{{password: {DIGITS}}}",  # an integer where a reference is expected: no "quote it ('…')"
        f"{{password: 0{DIGITS[:3]}}}",  # read as octal
        f"{{password: 2024-02-{DIGITS[:2]}}}",  # an impossible date
        f"{{password: !!int x{DIGITS}}}",  # a tag that cannot construct
        f"{{password: [{DIGITS}]}}",
    ],
)
def test_a_badly_typed_secret_is_never_repeated(credentials: str) -> None:
    text = PROVIDER + f"  credentials: {credentials}\n"
    messages = errors("aws.yaml", text)
    assert len(messages) == 1
    assert messages[0].startswith("aws.yaml:6:")
    assert DIGITS[:2] not in messages[0].split(": ", 1)[1].replace("2024", "")
