"""Report: one set of files per cycle, deterministic, redacted, audit added never rewritten."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from reconciler.model.status import ResourceStatus, set_condition
from reconciler.report.report import AuditRecord, ControllerStatus, DriftEntry, build_report
from reconciler.secrets import REDACTOR

NOW = datetime(2026, 11, 29, 21, 0, tzinfo=UTC)
SHA = "0123456789abcdef0123456789abcdef01234567"


def _report(audit=(), canary: str = "", drift=()):
    status = ResourceStatus(
        kind="Machine",
        name="m1",
        phase="Ready",
        conditions=set_condition((), "Ready", "True", "Reconciled", f"ok {canary}", NOW),
        observed={"power": "on", "note": canary},
    )
    controller = ControllerStatus(repository="file:///srv/infra.git", branch="main", revision=SHA)
    return build_report(
        controller=controller,
        statuses={status.key: status},
        drift=list(drift),
        audit=list(audit),
        plan_hash="f" * 64,
        plan_summary="Plan: 0 to create, 0 to update, 0 to destroy.",
        author="Ada <ada@example.com>",
        now=NOW,
    )


def test_files_message_and_trailers() -> None:
    report = _report()
    assert sorted(report.files) == [
        "reports/drift.json",
        "reports/drift.md",
        "status/Machine/m1.yaml",
        "status/controller.yaml",
    ]
    assert report.message.startswith("reconcile 0123456789ab: 1 ready")
    assert report.trailers["Reconciled-Revision"] == SHA
    assert report.trailers["Declared-By"] == "Ada <ada@example.com>"
    assert report.trailers["Reconciled-Health"] == "Ready"


def test_same_state_gives_identical_bytes() -> None:
    assert _report().files == _report().files


def test_audit_is_a_new_file_per_execution() -> None:
    record = AuditRecord(
        revision=SHA,
        author="Ada",
        plan_hash="f" * 64,
        resource="Machine/m1",
        operation="create",
        stage="install-os",
        task="install",
        result="succeeded",
        started="2026-11-29T21:00:00Z",
        finished="2026-11-29T21:01:00Z",
        approvers=("bob",),
        execution="e" * 64,
    )
    report = _report(audit=[record])
    # One line per record, every field, keys sorted: the format `reconciler audit` reads.
    content = (
        '{"approvals":[],"approvers":["bob"],"author":"Ada","change":null,"committer":null,'
        '"execution":"' + "e" * 64 + '","finished":"2026-11-29T21:01:00Z","merge":null,'
        '"message":"","operation":"create","operation_id":null,"plan_hash":"' + "f" * 64 + '",'
        '"resource":"Machine/m1","result":"succeeded","revision":"' + SHA + '",'
        '"stage":"install-os","started":"2026-11-29T21:00:00Z","task":"install"}\n'
    ).encode()
    digest = hashlib.sha256(content).hexdigest()[:8]
    path = f"audit/2026/11/29/20261129T210000Z-{'e' * 12}-{digest}.jsonl"
    assert report.files[path] == content
    assert path not in report.managed_prefixes
    assert report.trailers["Executions"] == "e" * 64


def test_drift_report_names_fields_and_since() -> None:
    entry = DriftEntry(
        key="Machine/m1",
        since=NOW,
        corrected=False,
        fields=({"path": "power", "declared": "on", "observed": "off"},),
    )
    report = _report(drift=[entry])
    text = report.files["reports/drift.md"].decode()
    assert (
        '| `Machine/m1` | 2026-11-29T21:00:00Z | `power` | `"on"` | `"off"` | reported only |'
        in text
    )
    assert json.loads(report.files["reports/drift.json"])["drifted"][0]["resource"] == "Machine/m1"


def test_canary_secret_never_written() -> None:
    canary = "CANARY-report-5b1e-secret"
    REDACTOR.add(canary)
    report = _report(canary=canary)
    for data in report.files.values():
        assert canary.encode() not in data
    assert canary not in report.message


def test_status_files_are_dumped_again_only_when_a_status_changed() -> None:
    from reconciler.report.report import StatusFiles, status_file

    def status(phase: str, note: str = "") -> ResourceStatus:
        return ResourceStatus(kind="Machine", name="m7", phase=phase, observed={"note": note})

    files = StatusFiles()
    first = files([status("Ready"), status("Ready").model_copy(update={"name": "m8"})])
    assert first["status/Machine/m7.yaml"] == status_file(status("Ready"))
    again = files([status("Ready")])  # equal, not the same object: the text is reused
    assert again["status/Machine/m7.yaml"] is first["status/Machine/m7.yaml"]
    assert list(again) == ["status/Machine/m7.yaml"]  # what is gone is gone
    changed = files([status("Failed")])
    assert b"phase: Failed" in changed["status/Machine/m7.yaml"]

    # A secret learned after a text was rendered: that text is not reused.
    canary = "canary-status-files-5d1e"
    assert canary.encode() in files([status("Ready", canary)])["status/Machine/m7.yaml"]
    REDACTOR.add(canary)
    assert canary.encode() not in files([status("Ready", canary)])["status/Machine/m7.yaml"]
