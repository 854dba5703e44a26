"""Pull requests on a forge (GitHub, GitLab) for portal requests: open one, keep its text.

An HTTP edge of the portal (httpx). With `RECONCILER_FORGE=github|gitlab`,
`RECONCILER_FORGE_URL` (the API: `https://api.github.com`,
`https://gitlab.example.com/api/v4`), `RECONCILER_FORGE_PROJECT` (`owner/name`, or a
GitLab project id or path) and `RECONCILER_FORGE_TOKEN` (a reference), each
request's branch gets a pull (merge) request into the tracked branch whose
description is the branch's plan, as the controller wrote it to
`plans/request/<id>.md` (the markdown `reconciler plan --output markdown` prints).

- GitHub: `POST /repos/{project}/pulls` `{title, head, base, body}`; the body is
  updated with `PATCH /repos/{project}/pulls/{number}`. A 422 for a pull request
  that already exists (a crash between opening it and recording it) finds it with
  `GET /repos/{project}/pulls?head={owner}:{branch}&state=open`.
- GitLab: `POST /projects/{id}/merge_requests` `{source_branch, target_branch, title,
  description}`, `PUT /projects/{id}/merge_requests/{iid}`; a 409 finds the open one
  with `GET /projects/{id}/merge_requests?source_branch=…&state=opened`.

Failures are `TemporaryError`s with the forge's answer redacted (the token never
shows): the request's operation keeps the error and the next look tries again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from reconciler.errors import PermanentError, TemporaryError
from reconciler.secrets import REDACTOR, resolve
from reconciler.settings import Settings

BODY_LIMIT = 65_000
"""GitHub refuses a description over 65,536 characters."""
TIMEOUT = 10.0


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str


class Forge(Protocol):
    def open(self, *, branch: str, base: str, title: str, body: str) -> PullRequest: ...

    def update(self, number: int, body: str) -> None: ...


def _cut(body: str) -> str:
    if len(body) <= BODY_LIMIT:
        return body
    return body[: BODY_LIMIT - 80] + "\n\n… (cut: the whole plan is on the status branch)\n"


def _check(response: httpx.Response, doing: str) -> Any:
    if response.status_code >= 400:
        text = REDACTOR.truncate(REDACTOR.text(response.text), 300)
        raise TemporaryError(f"{doing}: {response.status_code} {text}")
    return response.json()


class _Http:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base.rstrip("/")
        self.headers = headers

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with httpx.Client(timeout=TIMEOUT, headers=self.headers) as client:
                return client.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise TemporaryError(REDACTOR.text(f"{method} {self.base}{path}: {exc}")) from None


class GitHub:
    def __init__(self, url: str, project: str, token: str) -> None:
        self.project = project
        self.http = _Http(
            url,
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )

    def open(self, *, branch: str, base: str, title: str, body: str) -> PullRequest:
        answer = self.http.call(
            "POST",
            f"/repos/{self.project}/pulls",
            json={"title": title, "head": branch, "base": base, "body": _cut(body)},
        )
        if answer.status_code == 422 and "already exists" in answer.text:
            owner = self.project.split("/", 1)[0]
            found = _check(
                self.http.call(
                    "GET",
                    f"/repos/{self.project}/pulls",
                    params={"head": f"{owner}:{branch}", "state": "open"},
                ),
                "finding the pull request",
            )
            if found:
                self.update(int(found[0]["number"]), body)
                return PullRequest(int(found[0]["number"]), str(found[0]["html_url"]))
        data = _check(answer, "opening the pull request")
        return PullRequest(int(data["number"]), str(data["html_url"]))

    def update(self, number: int, body: str) -> None:
        _check(
            self.http.call(
                "PATCH", f"/repos/{self.project}/pulls/{number}", json={"body": _cut(body)}
            ),
            "updating the pull request",
        )


class GitLab:
    def __init__(self, url: str, project: str, token: str) -> None:
        self.project = quote(project, safe="")
        self.http = _Http(url, {"PRIVATE-TOKEN": token})

    def open(self, *, branch: str, base: str, title: str, body: str) -> PullRequest:
        answer = self.http.call(
            "POST",
            f"/projects/{self.project}/merge_requests",
            json={
                "source_branch": branch,
                "target_branch": base,
                "title": title,
                "description": _cut(body),
            },
        )
        if answer.status_code == 409:
            found = _check(
                self.http.call(
                    "GET",
                    f"/projects/{self.project}/merge_requests",
                    params={"source_branch": branch, "state": "opened"},
                ),
                "finding the merge request",
            )
            if found:
                self.update(int(found[0]["iid"]), body)
                return PullRequest(int(found[0]["iid"]), str(found[0]["web_url"]))
        data = _check(answer, "opening the merge request")
        return PullRequest(int(data["iid"]), str(data["web_url"]))

    def update(self, number: int, body: str) -> None:
        _check(
            self.http.call(
                "PUT",
                f"/projects/{self.project}/merge_requests/{number}",
                json={"description": _cut(body)},
            ),
            "updating the merge request",
        )


def forge_problems(settings: Settings) -> list[str]:
    """What keeps the configured forge from working (checked when `run` starts)."""
    if settings.forge is None:
        return []
    missing = [
        f"forge_{name}"
        for name in ("url", "project", "token")
        if not getattr(settings, f"forge_{name}")
    ]
    if missing:
        return [f"forge {settings.forge} needs {', '.join(missing)}"]
    return []


def forge_from_settings(settings: Settings) -> Forge | None:
    """The configured forge, its token resolved now (a rotated file is read again)."""
    if settings.forge is None:
        return None
    if forge_problems(settings):
        raise PermanentError("; ".join(forge_problems(settings)))
    assert settings.forge_url and settings.forge_project and settings.forge_token
    token = resolve(settings.forge_token)
    cls = GitHub if settings.forge == "github" else GitLab
    return cls(settings.forge_url, settings.forge_project, token)


__all__ = ["Forge", "GitHub", "GitLab", "PullRequest", "forge_from_settings", "forge_problems"]
