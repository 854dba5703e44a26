"""The HTTP API of `reconciler run`: health, metrics, sync operations, webhooks, events.

The outermost edge of the long-running controller (see README, "HTTP API and
`reconciler run`"). An ASGI app (FastAPI, OpenAPI at `/openapi.json`) served by
uvicorn on `settings.listen`; it only reads what the `Scheduler` keeps and asks
it for work, so every answer is immediate: `POST /api/v1/sync` is `202 Accepted`
with an operation id before anything has run.

Access: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/docs` (Swagger UI,
its scripts served from the fastapi-offline package: no CDN) are open (probes,
scrapers, people). Mutating routes (sync, events) need `Authorization: Bearer <token>`,
the token given by reference (`api_token`); read-only routes (operations,
resources, plan) need it too unless `api_read_open` is set. Webhooks authenticate
with their signature instead (`reconciler.controller.webhooks`). Without a configured token,
token-protected routes answer 401: nothing is open by accident.

The web UI (`reconciler.controller.ui`: pages, sign-in, task logs) is mounted on the same
app; it shares the token check and the read rule, and `GET /api/v1/resources`
pages through the same table of rows as its resource list.

Abuse is refused cheaply (`BodyLimit`): a body larger than `max_body_bytes` is 413
before it is buffered — at once from its Content-Length, or as soon as a chunked
body streams past the limit — so a 50 MB webhook with a wrong signature is never
read whole. JSON nested deeper than `webhooks.MAX_JSON_DEPTH` is 400, never a
RecursionError.

`run_server` is `reconciler run`: the scheduler's worker, uvicorn, and SIGTERM /
SIGINT handling (stop taking work, let the running cycle stop at a task
boundary, exit 0; the next start resumes from the journal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler import __version__
from reconciler.controller.leader import Election, StandbyForward, install_routes
from reconciler.controller.portal.api import portal_router, portal_service
from reconciler.controller.portal.auth import Principal, identify, requirement, startup_problems
from reconciler.controller.portal.forge import forge_problems
from reconciler.controller.scheduler import Scheduler, UnknownProvider, event_resources
from reconciler.controller.terraform_backend import terraform_backend_router
from reconciler.controller.ui import api_resources, install_ui
from reconciler.controller.ui.query import IndexCache, Query
from reconciler.controller.ui.store import StatusBranch
from reconciler.controller.webhooks import JsonTooDeep, load_json, receive
from reconciler.errors import ReconcilerError
from reconciler.execute.lease import LeaseHeld
from reconciler.execute.store import uses_database
from reconciler.logs import configure_logging
from reconciler.report.discovery import DISCOVERED_JSON
from reconciler.secrets import REDACTOR, SecretUnavailable, resolve
from reconciler.settings import Settings

log = structlog.get_logger("reconciler.controller.server")


class Accepted(BaseModel):
    """A cycle was queued (or joined one already queued): poll the operation."""

    id: str
    phase: str
    location: str


class Progress(BaseModel):
    done: int
    total: int


class OperationOut(BaseModel):
    id: str
    trigger: str
    phase: str
    created: str | None
    started: str | None
    finished: str | None
    revision: str | None
    progress: Progress
    errors: list[str]
    resources: list[str]
    """A provider event's resources (empty for cycles)."""


class EventAccepted(BaseModel):
    """A provider event was queued (or joined the operation of one still waiting): poll
    the operation, which ends once every resource named here is reconciled."""

    id: str
    phase: str
    location: str
    resources: list[str]
    queued: list[str]
    coalesced: list[str]
    shed: list[str]


class _BodyTooLarge(Exception):
    """A streamed body passed the limit: raised from `receive`, answered 413."""


class BodyLimit:
    """ASGI middleware: no request body beyond `max_bytes` is read (413 instead).

    A declared Content-Length over the limit is answered before the app sees the
    request; a chunked body is counted as it streams and the first chunk past the
    limit ends it. Routes that never read their body (sync) never buffer one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        detail = f"the request body is larger than {self.max_bytes} bytes (max_body_bytes)"
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _secret(ref: str | None) -> str | None:
    if not ref:
        return None
    try:
        return resolve(ref)
    except SecretUnavailable:
        return None


def create_app(scheduler: Scheduler) -> FastAPI:
    """The API over one scheduler (which owns the controller)."""
    settings = scheduler.settings
    app: FastAPI = FastAPIOffline(
        title="reconciler",
        version=__version__,
        description="A GitOps controller for infrastructure: the HTTP API of `reconciler run`.",
        redoc_url=None,
    )
    # A standby's POSTs go to the leader (inside BodyLimit: the limit holds for them too).
    app.add_middleware(
        StandbyForward, election=scheduler.election, max_bytes=settings.max_body_bytes
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    # Named tokens and their scopes: reconciler.controller.portal.auth.
    require_token = requirement(settings, "sync")
    require_read = requirement(settings, "read", open_read=True)

    def token_matches(given: str) -> bool:
        # A UI session may queue a sync: only a token with that scope (or admin) signs in.
        principal = identify(settings, f"Bearer {given.strip()}")
        return principal is not None and principal.may(("sync",))

    # Dependencies as defaults: this module's annotations are strings (PEP 563) that
    # FastAPI resolves in module scope, where names local to create_app do not exist.
    mutating = Depends(require_token)
    reading = Depends(require_read)
    install_routes(app, scheduler, reading)  # GET /api/v1/controller: role, leader, epoch
    install_health_routes(app, scheduler)
    install_operation_routes(app, scheduler, mutating=mutating, reading=reading)
    index_cache = IndexCache()
    install_resource_routes(app, scheduler, reading=reading, index_cache=index_cache)
    install_webhook_routes(app, scheduler)
    install_event_routes(app, scheduler, mutating=mutating)

    requests = portal_service(scheduler)
    install_ui(
        app,
        scheduler,
        token_matches=token_matches,
        reading=reading,
        index_cache=index_cache,
        requests=requests,
    )
    app.state.requests = requests
    app.include_router(portal_router(requests))
    app.include_router(terraform_backend_router(settings))
    return app


def _accepted(op_id: str, phase: str) -> JSONResponse:
    location = f"/api/v1/operations/{op_id}"
    body = Accepted(id=op_id, phase=phase, location=location).model_dump()
    return JSONResponse(body, status_code=202, headers={"Location": location})


def install_health_routes(app: FastAPI, scheduler: Scheduler) -> None:
    """`/healthz`, `/readyz`, `/metrics`: open to probes and scrapers."""

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Ready once a declared revision is loaded (and not stopping)."""
        ready = scheduler.ready and not scheduler.stopping
        body = {"ready": ready, "revision": scheduler.revision, "stopping": scheduler.stopping}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "The Prometheus text exposition format (version 0.0.4)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def metrics() -> Response:
        """Prometheus metrics, prefixed `reconciler_`."""
        data, content_type = scheduler.metrics.render()
        return Response(data, media_type=content_type)


def install_operation_routes(
    app: FastAPI, scheduler: Scheduler, *, mutating: Any, reading: Any
) -> None:
    """Asking for work (sync, resuming a rollout) and polling its operation."""

    @app.post(
        "/api/v1/rollouts/{rollout}/resume",
        status_code=202,
        response_model=Accepted,
        tags=["operations"],
        responses={401: {}, 503: {}},
    )
    def resume_rollout(rollout: str, _: None = mutating) -> JSONResponse:
        """Resume a paused rollout: 202 with the operation of the cycle that follows."""
        op = scheduler.request_resume(rollout, "the API (POST /api/v1/rollouts/…/resume)")
        if op is None:
            raise HTTPException(503, "the controller is stopping")
        return _accepted(op.id, op.phase)

    @app.post(
        "/api/v1/sync",
        status_code=202,
        response_model=Accepted,
        tags=["operations"],
        responses={401: {}, 503: {}},
    )
    def sync(who: Principal = mutating) -> JSONResponse:
        """Start a cycle (pull, plan, execute, report): 202 with an operation id, at once."""
        op = scheduler.request_cycle(f"sync:{who.name}")  # the token's name: who asked
        if op is None:
            raise HTTPException(503, "the controller is stopping")
        return _accepted(op.id, op.phase)

    @app.get(
        "/api/v1/operations/{op_id}",
        response_model=OperationOut,
        tags=["operations"],
        responses={401: {}, 404: {}},
    )
    def operation(op_id: str, _: None = reading) -> dict[str, Any]:
        """Phase (pending, running, succeeded, failed), progress (resources), errors."""
        op = scheduler.operations.get(op_id)
        if op is None:
            kept = len(scheduler.operations)
            raise HTTPException(404, f"no operation {op_id} (the last {kept} are kept)")
        return op.to_json()


def install_resource_routes(
    app: FastAPI, scheduler: Scheduler, *, reading: Any, index_cache: IndexCache
) -> None:
    """What the last cycles reported: resources' statuses and the current plan."""

    @app.get("/api/v1/resources", tags=["resources"], responses={401: {}})
    def resources(
        offset: int | None = None,
        limit: int | None = None,
        q: str = "",
        phase: str = "",
        kind: str = "",
        provider: str = "",
        label: str = "",
        _: None = reading,
    ) -> dict[str, Any]:
        """Every resource's status and conditions, as last reconciled; with `offset` or
        `limit` (at most 500) or a filter (`q` in the key, `phase`, `kind`, `provider`,
        `label` as `key=value` or `key`), one page of them and the `total` matching."""
        query = Query(q=q.strip(), phase=phase, kind=kind, provider=provider, label=label.strip())
        return api_resources(index_cache, scheduler, query, offset=offset, limit=limit)

    @app.get("/api/v1/resources/{kind}/{name}", tags=["resources"], responses={401: {}, 404: {}})
    def resource(kind: str, name: str, _: None = reading) -> dict[str, Any]:
        """One resource's status and conditions."""
        found = scheduler.statuses.get(f"{kind}/{name}")
        if found is None:
            raise HTTPException(404, f"no status for {kind}/{name}")
        return REDACTOR.data(found.model_dump(mode="json", by_alias=True, exclude_none=True))

    @app.get("/api/v1/plan", tags=["resources"], responses={401: {}, 404: {}})
    def current_plan(_: None = reading) -> Any:
        """The plan of the last full cycle (schema: schemas/plan.json)."""
        if scheduler.plan is None:
            raise HTTPException(404, "no plan yet: the first cycle has not planned")
        return REDACTOR.data(json.loads(scheduler.plan.to_json()))

    discovered_from = StatusBranch(
        Path(scheduler.settings.state_dir) / "mirror.git", scheduler.settings.status_branch
    )

    @app.get("/api/v1/discovered", tags=["resources"], responses={401: {}, 404: {}})
    def discovered(_: None = reading) -> Any:
        """What providers see that no document declares and no owner marks, as the last
        full cycle committed it (`reports/discovered.json`); never acted on."""
        text = discovered_from.report(DISCOVERED_JSON)
        if text is None:
            raise HTTPException(404, "no discovery report yet: no full cycle has been reported")
        return REDACTOR.data(json.loads(text))


def install_webhook_routes(app: FastAPI, scheduler: Scheduler) -> None:
    """Git push webhooks (signed, no token): fetch and reconcile now."""

    @app.post(
        "/api/v1/webhooks/{source}",
        tags=["webhooks"],
        responses={202: {}, 400: {}, 401: {}, 404: {}, 413: {}},
    )
    async def webhook(source: str, request: Request) -> JSONResponse:
        """A Git push (github, gitlab, generic): fetch and reconcile now. Signature required."""
        if source not in ("github", "gitlab", "generic"):
            raise HTTPException(404, f"unknown webhook source {source!r}")
        body = await request.body()
        outcome = receive(
            source,
            _secret(scheduler.settings.webhook_secret),
            dict(request.headers),
            body,
            branch=scheduler.settings.branch,
            pinned=scheduler.settings.ref is not None,
        )
        if outcome.verdict == "refused":
            scheduler.metrics.webhooks.labels(source=source, result="refused").inc()
            return JSONResponse({"detail": outcome.reason}, status_code=401)
        if outcome.verdict == "invalid":
            scheduler.metrics.webhooks.labels(source=source, result="invalid").inc()
            return JSONResponse({"detail": outcome.reason}, status_code=400)
        if outcome.verdict == "ignored":
            scheduler.metrics.webhooks.labels(source=source, result="ignored").inc()
            return JSONResponse({"ignored": outcome.reason}, status_code=200)
        op = scheduler.request_cycle(f"webhook:{source}")
        if op is None:
            raise HTTPException(503, "the controller is stopping")
        scheduler.metrics.webhooks.labels(source=source, result="accepted").inc()
        return _accepted(op.id, op.phase)


def install_event_routes(app: FastAPI, scheduler: Scheduler, *, mutating: Any) -> None:
    """Provider events (token): reconcile the resources they concern, as operations."""

    @app.post(
        "/api/v1/events/{provider}",
        tags=["events"],
        status_code=202,
        response_model=EventAccepted,
        responses={200: {}, 400: {}, 401: {}, 404: {}, 413: {}, 422: {}, 503: {}},
    )
    async def event(provider: str, request: Request, _: None = mutating) -> JSONResponse:
        """A provider event: reconcile the resource(s) it concerns, alone and soon.

        Payload: `{"resource": "Machine/x"}`, `{"kind": ..., "name": ...}`, or a
        provider-specific id matched against declared and observed fields
        (`{"serial": "SN1"}`). Events are debounced and coalesced per resource. The
        answer names the operation to poll (`Location`), done once they are reconciled.
        """
        try:
            payload = load_json(await request.body() or b"{}")
        except JsonTooDeep as exc:
            raise HTTPException(400, str(exc)) from None
        except ValueError:
            raise HTTPException(422, "the event body is not JSON") from None
        if not isinstance(payload, dict):
            raise HTTPException(422, "the event body is a JSON object")
        try:
            keys = event_resources(scheduler.desired, scheduler.statuses, provider, payload)
        except UnknownProvider:
            raise HTTPException(404, f"no provider {provider!r} is declared") from None
        if not keys:
            scheduler.metrics.events.labels(outcome="unmatched").inc()
            return JSONResponse(
                {"resources": [], "ignored": "no declared resource of this provider matches"},
                status_code=200,
            )
        result = scheduler.request_resources(keys, f"event:{provider}")
        if result.operation is None:
            raise HTTPException(503, "the controller is stopping")
        location = f"/api/v1/operations/{result.operation.id}"
        body = EventAccepted(
            id=result.operation.id,
            phase=result.operation.phase,
            location=location,
            resources=sorted(keys),
            queued=list(result.queued),
            coalesced=list(result.coalesced),
            shed=list(result.shed),
        )
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": location})


# --- reconciler run --------------------------------------------------------------------


def host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` decides what a signal means."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(scheduler: Scheduler, server: uvicorn.Server) -> None:
    """Start the scheduler and serve until SIGTERM/SIGINT; then stop taking work and wait
    for the cycle to end. The signal handlers come first: a signal during the first
    cycle's start is a clean stop too."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("stopping: no new work, the cycle stops at a task boundary", signal=sig.name)
        scheduler.begin_stop(sig.name)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await asyncio.to_thread(scheduler.start)
        if not scheduler.stopping:
            await server.serve()
    finally:
        scheduler.begin_stop("server stopped")
        await asyncio.to_thread(scheduler.wait)


def run_server(settings: Settings) -> int:
    """`reconciler run`: scheduled cycles and the HTTP API until SIGTERM; 0 after a clean stop."""
    configure_logging(json_logs=True, tracebacks=True)
    for name in ("api_token", "webhook_secret"):
        ref = getattr(settings, name)
        if ref:
            try:
                resolve(ref)
            except SecretUnavailable as exc:
                print(f"reconciler: {name}: {exc}", file=sys.stderr)
                return 1
    for problem in startup_problems(settings) + forge_problems(settings):
        print(f"reconciler: {problem}", file=sys.stderr)
        return 1
    try:  # with a shared database: stand by until elected (reconciler.controller.leader)
        election = Election(settings) if uses_database(settings) else None
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1
    scheduler = Scheduler(settings, election=election)
    host, port = host_port(settings.listen)
    config = uvicorn.Config(
        create_app(scheduler),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    if election is not None:

        def lost(why: str) -> None:  # stop at once; a supervisor starts it again as a standby
            scheduler.begin_stop(why)
            server.should_exit = True

        election.lease.when_lost(lost)
    print(f"reconciler: starting the API on http://{settings.listen}", file=sys.stderr, flush=True)
    try:
        asyncio.run(serve(scheduler, server))
    except LeaseHeld as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1
    except SystemExit:  # uvicorn exits when it cannot bind the address
        scheduler.stop("server failed")
        return 1
    finally:
        if election is not None:
            election.lease.release()
    if election is not None and election.lease.lost:
        log.error("stopped: leadership lost", reason=election.lease.lost)
        return 1
    log.info("stopped")
    return 0


__all__ = ["create_app", "host_port", "run_server", "serve"]
