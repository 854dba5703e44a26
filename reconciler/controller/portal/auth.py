"""Who is calling the HTTP API: named bearer tokens and their scopes.

At the HTTP edge, beside `reconciler.controller.server`. Tokens are given by reference
(`env:NAME`, `file:PATH`) and resolved on each request, so a rotated file takes
effect at once. `api_tokens` names several, each with scopes:

- `read`: the read-only routes (operations, resources, plan, the catalog, requests);
- `request`: portal requests — `POST /api/v1/requests`, and reading the catalog and
  requests (a portal needs both to render its form and follow what it asked for);
- `sync`: `POST /api/v1/sync` and provider events;
- `admin`: everything.

`api_token` (the single token of earlier versions) is the token named `default`
with the `admin` scope. The matching token's name is what the audit records as
the one who asked (`Principal.name`).

A missing or unknown token is 401; a known token without the scope a route needs
is 403, naming the scope. With no token configured at all, every protected route
answers 401 (nothing is open by accident), unless `api_read_open` opens the
read-only ones.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from reconciler.secrets import SecretUnavailable, resolve
from reconciler.settings import Scope, Settings

DEFAULT_TOKEN_NAME = "default"
"""The name `api_token` is known by (in the audit)."""
ANONYMOUS = "anonymous"
"""Who reads when `api_read_open` serves read-only routes without a token."""


@dataclass(frozen=True)
class Principal:
    """The caller a token identifies: its name and what it may do."""

    name: str
    scopes: frozenset[str]

    def may(self, wanted: Iterable[str]) -> bool:
        return "admin" in self.scopes or bool(self.scopes & set(wanted))


@dataclass(frozen=True)
class TokenSpec:
    name: str
    ref: str
    scopes: frozenset[str]


def token_specs(settings: Settings) -> list[TokenSpec]:
    """Every configured token, `api_token` first (as `default`, admin). Pure."""
    specs = []
    if settings.api_token:
        specs.append(TokenSpec(DEFAULT_TOKEN_NAME, settings.api_token, frozenset({"admin"})))
    for name, token in sorted((settings.api_tokens or {}).items()):
        specs.append(TokenSpec(name, token.token, frozenset(token.scopes)))
    return specs


def startup_problems(settings: Settings) -> list[str]:
    """Token references this process cannot resolve, and a name given twice."""
    problems = []
    if settings.api_token and DEFAULT_TOKEN_NAME in (settings.api_tokens or {}):
        problems.append(f"api_tokens: {DEFAULT_TOKEN_NAME!r} is the name of api_token")
    for spec in token_specs(settings):
        try:
            resolve(spec.ref)
        except SecretUnavailable as exc:
            where = "api_token" if spec.name == DEFAULT_TOKEN_NAME else f"api_tokens.{spec.name}"
            problems.append(f"{where}: {exc}")
    return problems


def identify(settings: Settings, authorization: str) -> Principal | None:
    """The principal whose token the `Authorization` header carries, or None.

    Every configured token is compared (in constant time each), so the answer's
    timing does not tell which one was close."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    given = value.strip().encode()
    found: Principal | None = None
    for spec in token_specs(settings):
        try:
            token = resolve(spec.ref)
        except SecretUnavailable:
            continue
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = Principal(spec.name, spec.scopes)
    return found


def requirement(
    settings: Settings, *scopes: Scope, open_read: bool = False
) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the caller, if its token has one of `scopes` (or admin).

    `open_read`: the route is read-only and `api_read_open` serves it without a token."""

    def require(request: Request) -> Principal:
        if open_read and settings.api_read_open:
            return Principal(ANONYMOUS, frozenset({"read"}))
        configured = bool(token_specs(settings))
        principal = identify(settings, request.headers.get("authorization", ""))
        if principal is None:
            detail = (
                "bearer token required"
                if configured
                else "no API token is configured (api_token, api_tokens)"
            )
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
            )
        if not principal.may(scopes):
            wanted = " or ".join(scopes)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"the token {principal.name!r} lacks the {wanted} scope",
            )
        return principal

    return require


__all__ = ["Principal", "identify", "requirement", "startup_problems", "token_specs"]
