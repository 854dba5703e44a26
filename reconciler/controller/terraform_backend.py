"""Terraform's `http` state backend, served by `reconciler run` for its terraform tasks.

Mounted by `reconciler.controller.server.create_app`, beside the API; the runner
(`reconciler.execute.tasks.terraform`) points Terraform at it when this process
serves one for its state directory, else uses the same state file through
Terraform's `local` backend (`reconciler apply`). Routes, under
`/api/v1/terraform/state/{kind}/{name}/{state}` (the resource and the state's name):

- `GET` the state (`204` when there is none), `POST` a new one (`?ID=` must be the
  lock holder's), `DELETE` it — Terraform's http backend protocol;
- `LOCK` / `UNLOCK` with Terraform's lock info as the body: `423` with the holder's
  info when another run holds it, `409` for an unlock by someone else;
- `GET …/lock` — who holds the lock now (`404` when free): for people, with the
  API's `read` scope. The others authenticate with the basic-auth credentials this
  process made for its runner (never a person's token: a state holds secrets).

The state is the file `<state-dir>/terraform/<Kind>/<name>/<state>/terraform.tfstate`,
written atomically (a temporary file renamed); locks live in memory, held by the
Terraform runs of this process (a restart ends them all). A body nested deeper than
`webhooks.MAX_JSON_DEPTH` (a lock info, a state) is 400 before anything parses or
stores it, as on every route of the API.
"""

from __future__ import annotations

import base64
import hmac
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from reconciler.controller.portal.auth import Principal, requirement
from reconciler.controller.webhooks import MAX_JSON_DEPTH, JsonTooDeep, json_depth, load_json
from reconciler.errors import PermanentError
from reconciler.execute.tasks.terraform import STATE_FILE, HttpBackend, serve_backend, state_home
from reconciler.settings import Settings

PREFIX = "/api/v1/terraform/state"


def connect_address(listen: str) -> str:
    """The address a local client reaches `listen` at (a wildcard means loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _authorized(backend: HttpBackend, request: Request) -> None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    expected = base64.b64encode(f"{backend.username}:{backend.password}".encode()).decode()
    if scheme.lower() != "basic" or not hmac.compare_digest(value.strip(), expected):
        raise HTTPException(401, "terraform state: credentials required",
                            headers={"WWW-Authenticate": 'Basic realm="terraform"'})  # fmt: skip


def terraform_backend_router(settings: Settings) -> APIRouter:
    """The state backend of this process for `settings.state_dir`."""
    state_dir = Path(settings.state_dir)
    backend = serve_backend(state_dir, f"http://{connect_address(settings.listen)}{PREFIX}")
    router = APIRouter(tags=["terraform"])
    reading = Depends(requirement(settings, "read", open_read=True))
    path = PREFIX + "/{kind}/{name}/{state}"

    def home_of(kind: str, name: str, state: str) -> Path:
        try:
            return state_home(state_dir, f"{kind}/{name}", state)
        except PermanentError:
            raise HTTPException(404, "no such terraform state") from None

    @router.get(path + "/lock", responses={401: {}, 404: {}})
    def holder(kind: str, name: str, state: str, _: Principal = reading) -> dict[str, Any]:
        """Who holds a terraform state's lock (Terraform's lock info), 404 when it is free."""
        found = backend.locks.holder(home_of(kind, name, state))
        if found is None:
            raise HTTPException(404, "the state is not locked")
        return found

    @router.api_route(path, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    async def state_file(kind: str, name: str, state: str, request: Request) -> Response:
        _authorized(backend, request)
        home = home_of(kind, name, state)
        target = home / STATE_FILE
        if request.method == "GET":
            if not target.is_file():
                return Response(status_code=204)
            return Response(target.read_bytes(), media_type="application/json")
        holder = backend.locks.holder(home)
        lock_id = request.query_params.get("ID")
        if holder is not None and holder.get("ID") != lock_id:
            return JSONResponse(holder, status_code=423)
        if request.method == "DELETE":
            target.unlink(missing_ok=True)
            return Response(status_code=200)
        body = await request.body()
        if json_depth(body) > MAX_JSON_DEPTH:  # kept as bytes, but served back as JSON
            raise HTTPException(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
        home.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{STATE_FILE}.{os.getpid()}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        staging.replace(target)
        return Response(status_code=200)

    @router.api_route(path, methods=["LOCK", "UNLOCK"], include_in_schema=False)
    async def lock(kind: str, name: str, state: str, request: Request) -> Response:
        _authorized(backend, request)
        home = home_of(kind, name, state)
        try:
            info = load_json(await request.body() or b"{}")
        except JsonTooDeep as error:
            raise HTTPException(400, str(error)) from None
        except ValueError:
            raise HTTPException(400, "the lock info is not JSON") from None
        if not isinstance(info, dict):
            raise HTTPException(400, "the lock info is a JSON object")
        if request.method == "LOCK":
            held = backend.locks.lock(home, info)
            return JSONResponse(held, status_code=423) if held else Response(status_code=200)
        held = backend.locks.unlock(home, info.get("ID"))
        return JSONResponse(held, status_code=409) if held else Response(status_code=200)

    return router


__all__ = ["PREFIX", "connect_address", "terraform_backend_router"]
