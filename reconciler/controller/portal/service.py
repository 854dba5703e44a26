"""The portal's work: the catalog, accepting a request, and following requests through Git.

Between the HTTP routes (`reconciler.controller.portal.api`) and the edges (`gitops`, `store`,
`forge`); the decisions are the pure modules' (`catalog`, `requests`, `phases`).

`submit` — checked as `reconciler validate` would check the tracked branch with the
request's document added; on any error nothing is written anywhere (the answer
lists every error by field). A valid request is committed and pushed to
`request/<id>`, its record stored (`branch-pushed`), and a cycle asked for, so
the controller fetches the branch and plans it.

`refresh` — each open request's record advanced from what Git says now; with a
forge, its pull request opened once the branch's plan is on the status branch
(at once when the controller does not plan `request/*` branches), and its
description updated when the plan changes. It runs after each cycle of the
controller (`Follower`), and before a request is shown, so an answer is never
older than the mirror.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from reconciler.controller.branch_plans import patterns_of
from reconciler.controller.portal.catalog import build_catalog
from reconciler.controller.portal.forge import Forge, forge_from_settings
from reconciler.controller.portal.gitops import BRANCH_PREFIX, RequestGit
from reconciler.controller.portal.phases import (
    AFTER_MERGE,
    ForgeLink,
    RequestRecord,
    advance,
    stamp,
)
from reconciler.controller.portal.requests import (
    FieldError,
    RequestIn,
    catalog_errors,
    commit_message,
    document,
    document_path,
    field_errors,
    parse_request,
    render_document,
)
from reconciler.controller.portal.store import RequestStore
from reconciler.errors import ReconcilerError
from reconciler.secrets import REDACTOR
from reconciler.settings import Settings

log = structlog.get_logger("reconciler.controller.portal")


class NotReady(ReconcilerError):
    """No revision of the tracked branch is known yet (before the first fetch)."""


class BranchInvalid(ReconcilerError):
    """The tracked branch's head does not validate: no request can be checked against it."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("the tracked branch does not validate")
        self.errors = errors


@dataclass(frozen=True)
class Rejected:
    """A request that was not accepted: every error, by field."""

    errors: tuple[FieldError, ...]


class RequestService:
    """The catalog and the requests of one controller (thread-safe: one lock)."""

    def __init__(
        self,
        settings: Settings,
        store: RequestStore,
        *,
        request_cycle: Callable[[str], object] | None = None,
        forge: Callable[[], Forge | None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.leading = leading
        self.store = store
        self.git = RequestGit(settings)
        self.request_cycle = request_cycle
        self._forge = forge or (lambda: forge_from_settings(settings))
        self.clock = clock
        self._lock = threading.RLock()

    @property
    def plans_requests(self) -> bool:
        """Whether the controller plans `request/*` branches (RECONCILER_PLAN_BRANCHES)."""
        probe = f"{BRANCH_PREFIX}probe"
        return any(fnmatch.fnmatchcase(probe, p) for p in patterns_of(self.settings.plan_branches))

    # --- the catalog ------------------------------------------------------------------

    def _head_desired(self) -> tuple[str, Any]:
        head = self.git.tracked_head()
        if head is None:
            raise NotReady(
                f"no revision of branch {self.settings.branch!r} is known yet (the first fetch "
                "has not happened)"
            )
        loaded = self.git.load(head)
        if loaded.desired is None:
            raise BranchInvalid([str(d) for d in loaded.diagnostics[:20]])
        return head, dataclasses.replace(loaded.desired, revision=head)

    def catalog(self) -> dict[str, Any]:
        with self._lock:
            _head, desired = self._head_desired()
            return build_catalog(desired)

    # --- a new request -----------------------------------------------------------------

    def submit(self, body: Any, token: str) -> RequestRecord | Rejected:
        """Check a request; if valid, its branch pushed and its record stored."""
        parsed = parse_request(body)
        if not isinstance(parsed, RequestIn):
            return Rejected(tuple(parsed))
        with self._lock:
            head, desired = self._head_desired()
            request_id = uuid.uuid4().hex[:16]
            errors = catalog_errors(parsed, desired)
            path = document_path(parsed)
            if not self.git.is_declared(head, path):
                errors.append(FieldError("", f"{path} is excluded by .reconcilerignore"))
            elif self.git.exists_at(head, path):
                errors.append(FieldError("name", f"{path} exists on the tracked branch"))
            text = render_document(parsed, request_id)
            loaded = self.git.load(head, {path: text.encode()})
            found = field_errors(loaded.diagnostics, path, text, parsed.kind)
            if errors:  # the loader's errors elsewhere follow from these (a duplicate)
                found = [e for e in found if e.at is None or e.at.startswith(f"{path}:")]
            errors.extend(e for e in found if e not in errors)
            if errors:
                return Rejected(tuple(errors))
            commit = self.git.push_request(
                request_id,
                head,
                path,
                text.encode(),
                author=(parsed.requester.name.strip(), parsed.requester.email),
                message=commit_message(parsed, request_id, token),
            )
            now = self.clock()
            record = RequestRecord(
                id=request_id,
                created=stamp(now),
                key=parsed.key,
                pipeline=parsed.pipeline,
                requester=parsed.requester.identity,
                token=token,
                reason=parsed.reason,
                branch=f"{BRANCH_PREFIX}{request_id}",
                path=path,
                commit=commit,
                base=head,
                document=document(parsed, request_id),
                history=({"phase": "branch-pushed", "at": stamp(now)},),
                head=commit,
                note=None
                if self.plans_requests
                else "RECONCILER_PLAN_BRANCHES does not watch request/*: no plan is computed",
            )
            self.store.put(record)
            log.info(
                "request accepted",
                request=request_id,
                resource=parsed.key,
                pipeline=parsed.pipeline,
                requester=parsed.requester.identity,
                token=token,
                commit=commit,
            )
        if self.request_cycle is not None:
            self.request_cycle(f"request:{request_id}")
        if not self.plans_requests:
            self.refresh()  # the pull request needs no plan to wait for
        return record

    # --- following requests -----------------------------------------------------------

    def get(self, request_id: str) -> RequestRecord | None:
        self.refresh()
        return self.store.get(request_id)

    def recent(self, limit: int = 100) -> list[RequestRecord]:
        self.refresh()
        return self.store.recent(limit)

    def refresh(self) -> None:
        """Every open request advanced from what Git says now (and its pull request kept).
        Not on a standby: its mirror may lag the leader's, and a pull request is opened once."""
        with self._lock:
            if not self.leading() or not self.git.exists:
                return
            for record in self.store.open():
                try:
                    updated = advance(record, self.git.facts(record), self.clock())
                    updated = self._pull_request(updated)
                except Exception as exc:  # one request's trouble must not stop the others
                    log.warning("request not refreshed", request=record.id,
                                error=REDACTOR.text(f"{type(exc).__name__}: {exc}"))  # fmt: skip
                    continue
                if updated != record:
                    if updated.phase != record.phase:
                        log.info("request phase", request=record.id, phase=updated.phase)
                    self.store.put(updated)

    def _pull_request(self, record: RequestRecord) -> RequestRecord:
        """Open the request's pull request, or bring its description up to date."""
        if self.settings.forge is None or record.phase in ("closed", *AFTER_MERGE):
            return record
        if record.plan is None and self.plans_requests:
            return record  # it opens with the plan as its description
        shown = record.plan.plan_hash if record.plan else "none"
        link = record.forge or ForgeLink()
        if link.number is not None and link.shown == shown:
            return record
        body = self._description(record)
        try:
            forge = self._forge()
            assert forge is not None
            if link.number is None:
                opened = forge.open(
                    branch=record.branch,
                    base=self.settings.branch,
                    title=f"Request {record.key} (pipeline {record.pipeline})",
                    body=body,
                )
                link = ForgeLink(opened.number, opened.url, shown)
            else:
                forge.update(link.number, body)
                link = dataclasses.replace(link, shown=shown, error=None)
        except ReconcilerError as exc:
            link = dataclasses.replace(link, error=REDACTOR.text(str(exc)))
        return dataclasses.replace(record, forge=link)

    def _description(self, record: RequestRecord) -> str:
        lines = [
            f"Requested by {record.requester} through the reconciler API "
            f"(request `{record.id}`, token `{record.token}`).",
            "",
        ]
        if record.reason:
            lines += ["> " + line for line in record.reason.splitlines()] + [""]
        plan = self.git.plan_file(record.branch) if record.plan else None
        if plan is not None:
            lines.append(plan)
        else:
            lines.append("_No plan: the controller does not plan `request/*` branches._")
        return REDACTOR.text("\n".join(lines))


__all__ = ["BranchInvalid", "NotReady", "Rejected", "RequestService"]
