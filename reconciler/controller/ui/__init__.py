"""The web UI of `reconciler run`: server-rendered pages on the API's listener.

An edge beside `reconciler.controller.server`, which calls `install_ui` on its app. Pages
are Jinja2 templates (autoescaping on, and every value printed goes through the
secret redactor before it is escaped) over what the scheduler holds; htmx,
shipped in `static/` (no CDN, no build step), polls the live parts (the running
operation, an operation's progress, a running resource's pipeline) and loads a
resource's audit timeline after the page. Lists are filtered and paginated on
the server (`reconciler.controller.ui.query`), so a page stays small at 10,000 resources.

    /                                 overview: revision in force, phases, providers,
                                      the last cycles, the running operation
    /resources                        the table: search, filters, pages
    /resources/{kind}/{name}          conditions, pipeline, fields, drift, logs, timeline
    /plan  /plan/text  /plan/markdown the current plan; watched branches' plans
    /drift                            what differs, since when, whether self-heal acts
    /operations  /operations/{id}     recent cycles, live; POST /operations/sync
    /requests  /requests/{id}         portal requests: phase, history, plan, pull request,
                                      progress, failure (live until ready or closed)
    /signin  /signout                 the session (see `reconciler.controller.ui.sessions`)
    /api/v1/resources/{kind}/{name}/logs[/{path}]   task logs for API clients

Access follows the API's rule: read pages are open with `api_read_open`, else
they need a session, made by posting the API token to `/signin`. Sync needs a
session and its CSRF token whatever `api_read_open` says. Responses carry a
Content-Security-Policy allowing only this origin's scripts and styles.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from markupsafe import Markup

from reconciler.controller.portal.service import RequestService
from reconciler.controller.scheduler import Scheduler
from reconciler.controller.ui import views
from reconciler.controller.ui.query import PER_PAGE, IndexCache, Query
from reconciler.controller.ui.sessions import COOKIE, Session, Sessions, SessionStore
from reconciler.controller.ui.store import StatusBranch, TaskLogs
from reconciler.plan.plan import Plan
from reconciler.plan.render import render_markdown, render_text, summary_line
from reconciler.report.rollout_progress import (
    ROLLOUTS_JSON,
    RolloutProgress,
    read_rollouts,
    rollout_progress,
    states_live,
)
from reconciler.secrets import REDACTOR
from reconciler.settings import Settings

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FORM_LIMIT = 16 * 1024
"""Bytes of a sign-in or sync form read at most."""
PLAN_PAGE = 100
DRIFT_PAGE = 100
OPERATIONS_SHOWN = 100
REQUESTS_SHOWN = 100
SIGNIN_FAILURES = 10
"""Wrong tokens per minute before sign-in is refused for the rest of that minute."""


def _redacted(value: Any) -> Any:
    """Jinja2's `finalize`: every printed value is redacted before it is escaped."""
    if isinstance(value, Markup):
        return Markup(REDACTOR.text(str(value)))
    if isinstance(value, str):
        return REDACTOR.text(value)
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler.controller.ui", "templates"),
        autoescape=True,
        finalize=_redacted,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=views.duration,
        stamp=views.stamp,
        short=lambda sha, n=12: (sha or "-")[:n],
        show=views.show,
        urlencode_query=lambda params: urlencode({k: v for k, v in params.items() if v}),
    )
    return env


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, ETag) of the files in `static/`."""
    folder = resources.files("reconciler.controller.ui").joinpath("static")
    found = {}
    for entry in folder.iterdir():
        media = STATIC_TYPES.get(Path(entry.name).suffix)
        if media is not None and entry.is_file():
            data = entry.read_bytes()
            found[entry.name] = (data, media, '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
    return found


@dataclass(frozen=True)
class Viewer:
    """Who is looking: a signed-in session, or no one on an open controller."""

    session: Session | None

    @property
    def signed_in(self) -> bool:
        return self.session is not None

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


def _local(target: str | None) -> str:
    """A redirect target on this site only (no `//host`, no scheme): else `/`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _session_store(settings: Settings) -> SessionStore | None:
    """The database's sessions when there is one (every replica knows them), else None:
    this process's own."""
    if not settings.database_url:
        return None
    from reconciler.controller.ui.sessions_pg import PgSessions
    from reconciler.execute.store_pg import open_database

    return PgSessions(open_database(settings, role="ui-sessions"))


def _same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin: it must be this one."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every client; the SameSite=Strict cookie still holds
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


class _Throttle:
    """At most `limit` failed sign-ins per minute from one client address, so a short token
    cannot be guessed fast (and one client cannot lock the others out)."""

    KEPT = 10_000

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def blocked(self, client: str) -> bool:
        start, count = self._windows.get(client, (0.0, 0))
        return self.clock() - start < 60 and count >= self.limit

    def failed(self, client: str) -> None:
        now = self.clock()
        start, count = self._windows.get(client, (now, 0))
        self._windows[client] = (start, count + 1) if now - start < 60 else (now, 1)
        if len(self._windows) > self.KEPT:  # forget windows that have ended
            self._windows = {k: w for k, w in self._windows.items() if now - w[0] < 60}


class _PlanActions:
    """The current plan's actions by resource key, indexed once per plan (the last plan's
    index only: a new plan replaces it)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Plan, dict[str, Any]]] = {}

    def of(self, plan: Plan | None) -> dict[str, Any]:
        if plan is None:
            return {}
        known = self._known.get(id(plan))
        if known is None or known[0] is not plan:
            self._known.clear()
            known = (plan, views.plan_index(plan))
            self._known[id(plan)] = known
        return known[1]


@dataclass(frozen=True)
class UiContext:
    """What the UI's routes share, made once by `install_ui`: the scheduler and its settings,
    the sessions, the templates, the API's read dependency, and the stores the pages read
    (the resource index, the status branch, the task logs, the portal's requests)."""

    settings: Settings
    scheduler: Scheduler
    sessions: Sessions
    env: jinja2.Environment
    reading: Any
    index_cache: IndexCache
    branch: StatusBranch
    logs: TaskLogs
    requests: RequestService | None
    plan_actions: _PlanActions

    def viewer_of(self, request: Request) -> Viewer | None:
        """The viewer, or None when the page needs a session the request lacks."""
        session = self.sessions.find(request.cookies.get(COOKIE))
        if session is None and not self.settings.api_read_open:
            return None
        return Viewer(session)

    def to_signin(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = "/signin?" + urlencode({"next": target})
        if request.headers.get("hx-request"):  # a poll after the session ended
            return Response(status_code=204, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)

    def render(
        self, template: str, viewer: Viewer, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            viewer=viewer,
            now=datetime.now(UTC),
            ago=views.ago,
            revision=self.scheduler.revision,
            read_open=self.settings.api_read_open,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def fleet(self) -> Any:
        return self.index_cache.get(self.scheduler.statuses, self.scheduler.desired)

    def running_now(self) -> views.RunningView | None:
        state, ops = self.scheduler.execution()
        if not self.scheduler.busy:
            return None
        return views.running_view(state, ops, time.monotonic())

    def live_context(self) -> dict[str, Any]:
        running = self.running_now()
        ops = self.scheduler.operations.recent(20)
        _, ids = self.scheduler.execution()
        return {"running": running, "operation": views.current_operation(ops, ids)}


def install_ui(
    app: FastAPI,
    scheduler: Scheduler,
    *,
    token_matches: Callable[[str], bool],
    reading: Any,
    index_cache: IndexCache | None = None,
    requests: RequestService | None = None,
) -> None:
    """The UI's routes on `app`, over one scheduler. `token_matches` checks a posted API token;
    `reading` is the API's read dependency (bearer token unless read access is open);
    `index_cache` is shared with the API's resource list; `requests` are the portal's.
    The groups go on in this order, which is the order of their routes in `app.routes`."""
    settings = scheduler.settings
    ui = UiContext(
        settings=settings,
        scheduler=scheduler,
        env=_environment(),
        sessions=Sessions(store=_session_store(settings)),
        reading=reading,
        index_cache=index_cache or IndexCache(),
        branch=StatusBranch(Path(settings.state_dir) / "mirror.git", settings.status_branch),
        logs=TaskLogs(Path(settings.state_dir)),
        requests=requests,
        plan_actions=_PlanActions(),
    )
    install_static_routes(app)
    install_session_routes(app, ui, token_matches=token_matches)
    install_overview_routes(app, ui)
    install_resource_list(app, ui)
    install_resource_pages(app, ui)
    install_log_api(app, ui)
    install_plan_pages(app, ui)
    install_drift_page(app, ui)
    install_operation_pages(app, ui)
    install_request_pages(app, ui)
    install_sync_form(app, ui)


# Routes go on the app itself (not an included router): `app.routes` stays one flat
# list, and the pages stay out of the OpenAPI document.
def _pages(app: FastAPI) -> functools.partial[Any]:
    return functools.partial(app.get, include_in_schema=False)


def _forms(app: FastAPI) -> functools.partial[Any]:
    return functools.partial(app.post, include_in_schema=False)


def install_static_routes(app: FastAPI) -> None:
    """`/ui/static/{name}` (the files of `static/`, read once) and `/favicon.ico`."""
    page = _pages(app)
    static = _static_files()

    @page("/ui/static/{name}")
    def static_file(name: str, request: Request) -> Response:
        found = static.get(name)
        if found is None:
            raise HTTPException(404, "no such file")
        data, media, etag = found
        headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media, headers=headers)

    @page("/favicon.ico")
    def favicon(request: Request) -> Response:
        """Browsers ask for it on every page without a <link rel=icon> (a task log)."""
        return static_file("icon.svg", request)


def install_session_routes(
    app: FastAPI, ui: UiContext, *, token_matches: Callable[[str], bool]
) -> None:
    """`/signin` (the form, and posting the API token to it) and `/signout`."""
    page, form = _pages(app), _forms(app)
    settings, sessions = ui.settings, ui.sessions
    throttle = _Throttle(SIGNIN_FAILURES)

    @page("/signin", response_class=HTMLResponse)
    def signin_form(request: Request) -> Response:
        viewer = Viewer(sessions.find(request.cookies.get(COOKIE)))
        target = _local(request.query_params.get("next"))
        return ui.render(
            "signin.html",
            viewer,
            next=target,
            error="",
            configured=bool(settings.api_token or settings.api_tokens),
        )

    @form("/signin", response_class=HTMLResponse)
    async def signin(request: Request) -> Response:
        form = await _form(request)
        target = _local(form.get("next"))
        viewer = Viewer(None)
        if not _same_origin(request):
            raise HTTPException(403, "cross-origin form")
        client = request.client.host if request.client is not None else ""
        if throttle.blocked(client):
            return ui.render(
                "signin.html",
                viewer,
                status=429,
                next=target,
                configured=True,
                error="Too many wrong tokens: try again in a minute.",
            )
        if not token_matches(form.get("token", "")):
            throttle.failed(client)
            error = (
                "That is not the API token."
                if settings.api_token or settings.api_tokens
                else "No API token is configured (api_token, api_tokens): no one can sign in."
            )
            # 200, the form again: a browser shows a 4xx page as a failed load.
            return ui.render(
                "signin.html",
                viewer,
                next=target,
                error=error,
                configured=bool(settings.api_token or settings.api_tokens),
            )
        _, cookie = sessions.open()
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=sessions.lifetime,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @form("/signout")
    async def signout(request: Request) -> Response:
        form = await _form(request)
        session = sessions.find(request.cookies.get(COOKIE))
        if session is not None:
            if not session.csrf_ok(form.get("csrf")) or not _same_origin(request):
                raise HTTPException(403, "the form's CSRF token does not match the session")
            sessions.close(session)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response


def install_overview_routes(app: FastAPI, ui: UiContext) -> None:
    """`/`, the overview, and `/ui/live`, its running operation polled by htmx."""
    page = _pages(app)
    scheduler = ui.scheduler

    @page("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        index = ui.fleet()
        plan = scheduler.plan
        return ui.render(
            "overview.html",
            viewer,
            source=views.source_view(scheduler.revision, scheduler.source),
            ready=scheduler.ready,
            phases=index.phases,
            total=len(index.rows),
            providers=views.provider_views(index, scheduler.desired, plan, scheduler.observed_at),
            cycles=list(scheduler.cycles)[:10],
            come_back=scheduler.come_back,
            plan_summary=summary_line(plan) if plan is not None else None,
            **ui.live_context(),
        )

    @page("/ui/live", response_class=HTMLResponse)
    def live(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        return ui.render("_live.html", viewer, **ui.live_context())


def install_resource_list(app: FastAPI, ui: UiContext) -> None:
    """`/resources`: the table, searched, filtered and paginated on the server."""
    page = _pages(app)

    @page("/resources", response_class=HTMLResponse)
    def resources_page(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        params = request.query_params
        query = Query(
            q=params.get("q", "").strip(),
            phase=params.get("phase", ""),
            kind=params.get("kind", ""),
            provider=params.get("provider", ""),
            label=params.get("label", "").strip(),
        )
        per = _int(params.get("per"), PER_PAGE)
        number = max(1, _int(params.get("page"), 1))
        index = ui.fleet()
        page = index.select(query, offset=(number - 1) * max(1, per), limit=per)
        filters = {
            "q": query.q,
            "phase": query.phase,
            "kind": query.kind,
            "provider": query.provider,
            "label": query.label,
            "per": str(per) if per != PER_PAGE else "",
        }
        return ui.render("resources.html", viewer, page=page, index=index, filters=filters)


def _resource_of(ui: UiContext, key: str) -> views.ResourceView | None:
    """One resource's view (status, declaration, planned action, drift, running stage), or
    None when it is neither declared nor has a status."""
    scheduler = ui.scheduler
    status = scheduler.statuses.get(key)
    desired = scheduler.desired
    if status is None and (desired is None or key not in desired.resources):
        return None
    state, _ = scheduler.execution()
    row = state.running.get(key) if scheduler.busy else None
    return views.resource_view(
        key,
        status=status,
        desired=desired,
        action=ui.plan_actions.of(scheduler.plan).get(key),
        drift=ui.branch.drift().get(key),
        running=(row.stage, row.task) if row is not None else None,
    )


def _log_text(ui: UiContext, key: str, rel: str) -> Response:
    text = ui.logs.read(key, rel)
    if text is None:
        raise HTTPException(404, f"no task log {rel!r} of {key}")
    headers = {**SECURITY_HEADERS, "Content-Disposition": "inline"}
    return PlainTextResponse(text, headers=headers)


def install_resource_pages(app: FastAPI, ui: UiContext) -> None:
    """`/resources/{kind}/{name}` and its parts: the pipeline (polled), the audit timeline,
    a task log."""
    page = _pages(app)
    scheduler = ui.scheduler

    @page("/resources/{kind}/{name}", response_class=HTMLResponse)
    def resource_page(kind: str, name: str, request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        key = f"{kind}/{name}"
        view = _resource_of(ui, key)
        if view is None:
            return ui.render("missing.html", viewer, status=404, what=key)
        status = view.status
        failure_log = ui.logs.rel_of(status.failure.log) if status and status.failure else None
        return ui.render(
            "resource.html",
            viewer,
            view=view,
            logs=ui.logs.of(key),
            failure_log=failure_log,
            self_heal=scheduler.desired.policy.self_heal if scheduler.desired else False,
            plan_hash=scheduler.plan.content_hash if scheduler.plan is not None else "",
        )

    @page("/resources/{kind}/{name}/pipeline", response_class=HTMLResponse)
    def pipeline_fragment(kind: str, name: str, request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        view = _resource_of(ui, f"{kind}/{name}")
        if view is None:
            raise HTTPException(404, f"no resource {kind}/{name}")
        return ui.render("_pipeline.html", viewer, view=view)

    @page("/resources/{kind}/{name}/timeline", response_class=HTMLResponse)
    def timeline(kind: str, name: str, request: Request) -> Response:
        """The audit of one resource; a fragment for the resource page, else a page of
        its own (the link an auditor keeps)."""
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        key = f"{kind}/{name}"
        entries = ui.branch.timeline(key)
        action, runs = views.last_run(entries)
        fragment = bool(request.headers.get("hx-request"))
        return ui.render(
            "_timeline.html" if fragment else "timeline.html",
            viewer,
            key=key,
            kind=kind,
            name=name,
            entries=list(reversed(entries)),
            last_action=action,
            runs=runs,
        )

    @page("/resources/{kind}/{name}/logs/{rel:path}")
    def log_page(kind: str, name: str, rel: str, request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        return _log_text(ui, f"{kind}/{name}", rel)


def install_log_api(app: FastAPI, ui: UiContext) -> None:
    """`/api/v1/resources/{kind}/{name}/logs[/{path}]`: task logs for API clients, behind the
    API's read dependency (in the OpenAPI document)."""
    reading = ui.reading

    @app.get("/api/v1/resources/{kind}/{name}/logs", tags=["resources"])
    def api_logs(kind: str, name: str, _: None = reading) -> dict[str, Any]:
        """The resource's task logs, the newest first (paths under `<state-dir>/logs/`)."""
        key = f"{kind}/{name}"
        base = f"/api/v1/resources/{kind}/{name}/logs/"
        return {
            "resource": key,
            "logs": [
                {
                    "path": f.rel,
                    "plan": f.plan,
                    "stage": f.stage,
                    "file": f.name,
                    "bytes": f.size,
                    "modified": f.modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "url": base + f.rel,
                }
                for f in ui.logs.of(key)
            ],
        }

    @app.get("/api/v1/resources/{kind}/{name}/logs/{rel:path}", tags=["resources"])
    def api_log(kind: str, name: str, rel: str, _: None = reading) -> Response:
        """One task log of the resource, redacted, as text."""
        return _log_text(ui, f"{kind}/{name}", rel)


def _rollouts_now(ui: UiContext) -> tuple[RolloutProgress, ...]:
    """While a cycle runs, its plan's rollouts from the live progress; otherwise the
    last status commit's (`reports/rollouts.json`, what `reconciler status` shows)."""
    scheduler = ui.scheduler
    if not scheduler.busy or scheduler.plan is None:
        return read_rollouts(ui.branch.report(ROLLOUTS_JSON))
    state, _ = scheduler.execution()
    states = states_live(state.running, state.ended)
    return rollout_progress(scheduler.plan, states, state.paused)


def install_plan_pages(app: FastAPI, ui: UiContext) -> None:
    """`/plan` (and its rollouts, polled at `/ui/rollouts`), `/plan/text`, `/plan/markdown`."""
    page = _pages(app)
    scheduler = ui.scheduler

    @page("/plan", response_class=HTMLResponse)
    def plan_page(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        plan = scheduler.plan
        number = max(1, _int(request.query_params.get("page"), 1))
        shown: list[views.ActionView] = []
        total = 0
        first: list[views.ActionView] = []
        if plan is not None:
            actions = plan.actions
            total = len(actions)
            start = (number - 1) * PLAN_PAGE
            shown = [views.action_view(a) for a in actions[start : start + PLAN_PAGE]]
            first = [views.action_view(a) for a in views.attention(plan)[:PLAN_PAGE]]
        return ui.render(
            "plan.html",
            viewer,
            plan=plan,
            summary=summary_line(plan) if plan is not None else None,
            first=first,
            attention_total=len(views.attention(plan)) if plan is not None else 0,
            shown=shown,
            total=total,
            number=number,
            pages=max(1, -(-total // PLAN_PAGE)),
            branch_plans=ui.branch.branch_plans(),
            rollouts=_rollouts_now(ui),
        )

    @page("/ui/rollouts", response_class=HTMLResponse)
    def rollouts_fragment(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        return ui.render("_rollouts.html", viewer, rollouts=_rollouts_now(ui))

    @page("/plan/text")
    def plan_text(request: Request) -> Response:
        if ui.viewer_of(request) is None:
            return ui.to_signin(request)
        if scheduler.plan is None:
            raise HTTPException(404, "no plan yet: the first cycle has not planned")
        text = REDACTOR.text(render_text(scheduler.plan))
        return PlainTextResponse(text, headers=SECURITY_HEADERS)

    @page("/plan/markdown")
    def plan_markdown(request: Request) -> Response:
        if ui.viewer_of(request) is None:
            return ui.to_signin(request)
        if scheduler.plan is None:
            raise HTTPException(404, "no plan yet: the first cycle has not planned")
        _, full = render_markdown(scheduler.plan)
        return PlainTextResponse(REDACTOR.text(full), headers=SECURITY_HEADERS)


def install_drift_page(app: FastAPI, ui: UiContext) -> None:
    """`/drift`: what differs, since when, whether self-heal acts."""
    page = _pages(app)

    @page("/drift", response_class=HTMLResponse)
    def drift_page(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        entries = sorted(ui.branch.drift().values(), key=lambda e: e.key)
        number = max(1, _int(request.query_params.get("page"), 1))
        start = (number - 1) * DRIFT_PAGE
        desired = ui.scheduler.desired
        return ui.render(
            "drift.html",
            viewer,
            entries=entries[start : start + DRIFT_PAGE],
            total=len(entries),
            number=number,
            pages=max(1, -(-len(entries) // DRIFT_PAGE)),
            self_heal=desired.policy.self_heal if desired is not None else None,
        )


def install_operation_pages(app: FastAPI, ui: UiContext) -> None:
    """`/operations` (recent cycles, live) and `/operations/{id}` (its progress, live)."""
    page = _pages(app)
    scheduler = ui.scheduler

    @page("/operations", response_class=HTMLResponse)
    def operations_page(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        fragment = bool(request.headers.get("hx-request"))
        return ui.render(
            "_operations.html" if fragment else "operations.html",
            viewer,
            operations=scheduler.operations.recent(OPERATIONS_SHOWN),
            targeted=[c for c in scheduler.cycles if c.kind == "targeted"][:20],
            **ui.live_context(),
        )

    @page("/operations/{op_id}", response_class=HTMLResponse)
    def operation_page(op_id: str, request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        op = scheduler.operations.get(op_id)
        if op is None:
            return ui.render("missing.html", viewer, status=404, what=f"operation {op_id}")
        fragment = bool(request.headers.get("hx-request"))
        _, ids = scheduler.execution()
        running = ui.running_now() if op.id in ids else None
        cycle = next((c for c in scheduler.cycles if op.id in c.operations), None)
        return ui.render(
            "_operation.html" if fragment else "operation.html",
            viewer,
            op=op,
            running=running,
            cycle=cycle,
        )


def install_request_pages(app: FastAPI, ui: UiContext) -> None:
    """`/requests` and `/requests/{id}`: the portal's requests (live until ready or closed)."""
    page = _pages(app)
    requests = ui.requests

    @page("/requests", response_class=HTMLResponse)
    def requests_page(request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        shown = requests.recent(REQUESTS_SHOWN) if requests is not None else None
        return ui.render("requests.html", viewer, requests=shown)

    @page("/requests/{request_id}", response_class=HTMLResponse)
    def request_page(request_id: str, request: Request) -> Response:
        viewer = ui.viewer_of(request)
        if viewer is None:
            return ui.to_signin(request)
        record = requests.get(request_id) if requests is not None else None
        if record is None:
            return ui.render("missing.html", viewer, status=404, what=f"request {request_id}")
        fragment = bool(request.headers.get("hx-request"))
        return ui.render("_request.html" if fragment else "request.html", viewer, r=record)


def install_sync_form(app: FastAPI, ui: UiContext) -> None:
    """`POST /operations/sync`: a session with its CSRF token queues a cycle, whatever
    `api_read_open` says."""
    form = _forms(app)

    @form("/operations/sync")
    async def sync_now(request: Request) -> Response:
        form = await _form(request)
        session = ui.sessions.find(request.cookies.get(COOKIE))
        if session is None:
            return RedirectResponse("/signin?next=/operations", status_code=303)
        if not session.csrf_ok(form.get("csrf")) or not _same_origin(request):
            raise HTTPException(403, "the form's CSRF token does not match the session")
        op = ui.scheduler.request_cycle("sync:ui")
        if op is None:
            raise HTTPException(503, "the controller is stopping")
        return RedirectResponse(f"/operations/{op.id}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form (the last value of each field); anything else is empty."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise HTTPException(413, f"the form is larger than {FORM_LIMIT} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def api_resources(
    cache: IndexCache,
    scheduler: Scheduler,
    query: Query,
    *,
    offset: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """`GET /api/v1/resources`: every status, or a filtered page of them, the same rows
    as `/resources` shows (without the declared resources that have no status yet)."""
    index = cache.get(scheduler.statuses, scheduler.desired)
    answer: dict[str, Any] = {"revision": scheduler.revision}
    if offset is None and limit is None and query.empty:
        rows = index.reported
    else:
        page = index.select(
            query,
            offset=offset or 0,
            limit=limit if limit is not None else PER_PAGE,
            reported=True,
        )
        rows = tuple(page.rows)
        answer.update(total=page.total, offset=page.offset, limit=page.limit)
    answer["resources"] = [
        REDACTOR.data(r.status.model_dump(mode="json", by_alias=True, exclude_none=True))
        for r in rows
        if r.status is not None
    ]
    return answer


__all__ = ["api_resources", "install_ui"]
