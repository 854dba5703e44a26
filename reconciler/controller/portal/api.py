"""The portal's routes on the API of `reconciler run`: the catalog and requests.

Mounted by `reconciler.controller.server.create_app` (one `include_router`); the work is
`RequestService`'s. Routes (scopes in `reconciler.controller.portal.auth`):

- `GET /api/v1/catalog` (read or request): the pipelines offered, their inputs as
  JSON Schema, the profiles and providers a request may name;
- `POST /api/v1/requests` (request): check a request; `202` with its operation
  (`id`, `phase`, `location`), or `422` with every error by field, nothing created;
- `GET /api/v1/requests` (read or request): the latest requests, newest first;
- `GET /api/v1/requests/{id}` (read or request): one request's operation — its
  phase, history, plan, pull request, progress or failure.

`Follower` advances the requests after each cycle of the controller (and every
`FOLLOW_EVERY` seconds at most), so phases and pull requests move even when no
one polls; it stops with the scheduler. With `RECONCILER_DATABASE_URL` the records are
the database's (`reconciler.controller.portal.store_pg`): a standby answers from them and only the
leader advances them.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from reconciler.controller.portal.auth import Principal, requirement
from reconciler.controller.portal.service import BranchInvalid, NotReady, Rejected, RequestService
from reconciler.controller.portal.store import RequestStore, SqliteRequestStore
from reconciler.controller.webhooks import JsonTooDeep, load_json
from reconciler.errors import ReconcilerError
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from reconciler.controller.leader import Election
    from reconciler.controller.scheduler import Scheduler
    from reconciler.settings import Settings

log = structlog.get_logger("reconciler.controller.portal")

FOLLOW_EVERY = 30.0
"""Seconds between looks at open requests when no cycle ran."""
POLL = 0.5


class Follower:
    """A daemon thread: `service.refresh()` after each cycle the scheduler ran."""

    def __init__(self, service: RequestService, scheduler: Scheduler) -> None:
        self.service = service
        self.scheduler = scheduler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler-portal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        seen, waited = 0, 0.0
        while not self._stop.wait(POLL):
            cycles = self.scheduler.cycles_run
            waited += POLL
            if cycles == seen and waited < FOLLOW_EVERY:
                if self.scheduler.stopping and not self.scheduler.busy:
                    break
                continue
            seen, waited = cycles, 0.0
            try:
                self.service.refresh()
            except Exception:  # the follower must outlive one bad look
                log.exception("following requests failed")


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, REDACTOR.text(str(exc)))


def _invalid_branch(exc: BranchInvalid) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "errors": exc.errors}, status_code=409)


def request_store(settings: Settings, election: Election | None) -> RequestStore:
    """Where the records live: the shared database when there is one (a standby answers
    from it, a new leader follows on; the leader's writes fenced by its epoch), else
    `<state-dir>/requests.sqlite`."""
    if not settings.database_url:
        return SqliteRequestStore.in_state_dir(Path(settings.state_dir))
    from reconciler.controller.portal.store_pg import PgRequestStore
    from reconciler.execute.store_pg import open_database

    def epoch() -> int | None:
        return election.lease.epoch if election is not None else None

    return PgRequestStore(open_database(settings, role="portal-requests"), epoch=epoch)


def portal_service(scheduler: Scheduler, *, follow: bool = True) -> RequestService:
    """The requests of the scheduler's store; followed after each cycle. Only a leader
    (or the one controller) advances them: a standby answers from the store."""
    settings = scheduler.settings
    election = scheduler.election
    service = RequestService(
        settings,
        request_store(settings, election),
        request_cycle=scheduler.request_cycle,
        leading=lambda: election is None or election.role == "leader",
    )
    if follow:
        Follower(service, scheduler).start()
    return service


def portal_router(service: RequestService) -> APIRouter:
    """The catalog and request routes over `service`."""
    settings = service.settings
    router = APIRouter(tags=["requests"])
    # Dependencies as defaults (this module's annotations are strings, see server.py).
    reading = Depends(requirement(settings, "read", "request", open_read=True))
    requesting = Depends(requirement(settings, "request"))

    @router.get("/api/v1/catalog", responses={401: {}, 403: {}, 409: {}, 503: {}})
    def catalog(_: Principal = reading) -> Any:
        """The pipelines offered to requesters, with their inputs as JSON Schema."""
        try:
            return REDACTOR.data(service.catalog())
        except NotReady as exc:
            raise _unavailable(exc) from None
        except BranchInvalid as exc:
            return _invalid_branch(exc)

    @router.post(
        "/api/v1/requests",
        status_code=202,
        responses={400: {}, 401: {}, 403: {}, 409: {}, 413: {}, 422: {}, 502: {}, 503: {}},
    )
    async def submit(request: Request, who: Principal = requesting) -> JSONResponse:
        """A request for a resource from the catalog: it becomes a branch `request/<id>`."""
        try:
            body = load_json(await request.body() or b"null")
        except JsonTooDeep as exc:
            raise HTTPException(400, str(exc)) from None
        except ValueError:
            raise HTTPException(422, "the request body is not JSON") from None
        try:
            outcome = await asyncio.to_thread(service.submit, body, who.name)
        except NotReady as exc:
            raise _unavailable(exc) from None
        except BranchInvalid as exc:
            return _invalid_branch(exc)
        except ReconcilerError as exc:  # the push failed: nothing was recorded
            raise HTTPException(502, REDACTOR.text(f"the request was not pushed: {exc}")) from None
        if isinstance(outcome, Rejected):
            return JSONResponse(
                {
                    "detail": "the request is invalid: nothing was created",
                    "errors": [e.to_json() for e in outcome.errors],
                },
                status_code=422,
            )
        location = f"/api/v1/requests/{outcome.id}"
        body_out = {
            "id": outcome.id,
            "phase": outcome.phase,
            "location": location,
            "branch": outcome.branch,
            "commit": outcome.commit,
        }
        return JSONResponse(body_out, status_code=202, headers={"Location": location})

    @router.get("/api/v1/requests", responses={401: {}, 403: {}})
    def requests(_: Principal = reading) -> dict[str, Any]:
        """The latest requests, newest first."""
        records = service.recent()
        return {"requests": [REDACTOR.data(r.answer()) for r in records]}

    @router.get("/api/v1/requests/{request_id}", responses={401: {}, 403: {}, 404: {}})
    def one(request_id: str, _: Principal = reading) -> dict[str, Any]:
        """One request's operation: phase, history, plan, pull request, progress, failure."""
        record = service.get(request_id)
        if record is None:
            raise HTTPException(404, f"no request {request_id}")
        return REDACTOR.data(record.answer())

    return router


__all__ = ["Follower", "portal_router", "portal_service", "request_store"]
