"""Secret references checked before work starts: which ones cannot be resolved here.

Sits between load and execute. `declared_uses` and `resource_uses` are pure: from
the resolved Desired set they list every reference (task `auth`, secret headers,
`secretEnv`, notify `secret`, secure inputs used by a task, provider `credentials`
and `tls.caBundle`, Policy notification secrets) with who needs it and where.
`unresolvable` groups the uses by reference and asks one edge, a `Resolvable`,
about each reference once. `environment` is that edge for this process: it reads
the variable or file the way `reconciler.secrets.resolve` does, keeps nothing and
registers nothing.

Who calls it: `reconciler validate --check-secrets` and `reconciler plan` (every
reference the revision declares), and the executor before a resource's first task
(what that resource's planned stages need): a reference that cannot be resolved
fails the resource before anything ran, naming the reference, instead of at the
stage that needs it after the work before it was done.

Which task fields resolve secrets mirrors the runners (`reconciler.execute.tasks`):
provider `args`; http `url`, `body`, headers (a secret header's reference, other
headers' templates) and `auth`; command `env` and `secretEnv`; ansible every
secure param plus `extraVars`; notify `secret`; terraform `variables` (a reference,
or a secure param's) and `secretEnv`. Templates reach a secure param's
reference through ``${params.NAME}``; fields rendered with secrets refused (argv, a
notify message) cannot use one at all, so they need nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.execute.template import referenced_params
from reconciler.load.desired import TASK_POINTS, Desired, ResolvedResource
from reconciler.model.common import is_secret_ref
from reconciler.model.tasks import Task
from reconciler.secrets import SecretUnavailable, is_secret_header, read_ref

Resolvable = Callable[[str], str | None]
"""``ref -> None`` when the reference resolves here, else why it does not."""

USES_NAMED = 5
"""Uses of one reference named in its message; the rest are counted."""


@dataclass(frozen=True, order=True)
class SecretUse:
    """One place that needs a reference: its owner (``Machine/m1``, ``Provider/sim``,
    ``Policy``), where in it, and the declaring document's position when known."""

    ref: str
    owner: str
    where: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.owner} ({self.where})"


@dataclass(frozen=True)
class Unresolvable:
    """A reference this environment cannot resolve, and everything that needs it."""

    ref: str
    reason: str
    uses: tuple[SecretUse, ...]

    @property
    def message(self) -> str:
        named = ", ".join(str(u) for u in self.uses[:USES_NAMED])
        more = len(self.uses) - USES_NAMED
        return (
            f"secret reference {self.ref} cannot be resolved ({self.reason}); needed by "
            + named
            + (f" and {more} more" if more > 0 else "")
        )

    def __str__(self) -> str:
        """``path:line:col: message`` at the first declaring document, when known."""
        located = next((u for u in self.uses if u.path is not None), None)
        if located is None:
            return f"{self.uses[0].owner}: {self.message}"
        return f"{located.path}:{located.line or 1}:1: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.ref,
            "reason": self.reason,
            "neededBy": [{"owner": u.owner, "where": u.where} for u in self.uses],
        }


# --- pure: who needs which reference ---------------------------------------------------


def task_refs(
    task: Task, params: Mapping[str, Any], secure: Collection[str]
) -> Iterator[tuple[str, str]]:
    """(reference, field) for each reference running `task` resolves."""

    def through_params(value: Any, field: str) -> Iterator[tuple[str, str]]:
        for name in sorted(referenced_params(value)):
            ref = params.get(name)
            if name in secure and is_secret_ref(ref):
                yield str(ref), f"{field} uses params.{name}"

    if task.type == "provider":
        yield from through_params(task.args, "args")
    elif task.type == "http":
        yield from through_params(task.url, "url")
        yield from through_params(task.body, "body")
        for name, value in task.headers.items():
            if is_secret_header(name) and is_secret_ref(value):
                yield value, f"headers.{name}"
            else:
                yield from through_params(value, f"headers.{name}")
        if task.auth is not None:
            for field in ("bearer", "password"):
                if getattr(task.auth, field):
                    yield getattr(task.auth, field), f"auth.{field}"
    elif task.type == "command":
        for name, value in task.env.items():
            yield from through_params(value, f"env.{name}")
        for name, ref in task.secret_env.items():
            yield ref, f"secretEnv.{name}"
    elif task.type == "ansible":
        for name in sorted(secure):  # every param goes to the playbook, secure ones resolved
            if is_secret_ref(params.get(name)):
                yield str(params[name]), f"params.{name} (ansible gets every param)"
        yield from through_params(task.extra_vars, "extraVars")
    elif task.type == "notify" and task.secret:
        yield task.secret, "secret"
    elif task.type == "terraform":
        for name, value in task.variables.items():
            if is_secret_ref(value):
                yield value, f"variables.{name}"
            else:
                yield from through_params(value, f"variables.{name}")
        for name, ref in task.secret_env.items():
            yield ref, f"secretEnv.{name}"


def resource_uses(
    resource: ResolvedResource, stages: Collection[str] | None = None
) -> list[SecretUse]:
    """What running `resource`'s `stages` (default: all of its pipeline) needs, in run
    order. Tasks see the resource's params, as the executor gives them."""
    uses: list[SecretUse] = []
    for stage in resource.stages:
        if stages is not None and stage.name not in stages:
            continue
        for point in TASK_POINTS:
            for task in stage.tasks.get(point, ()):
                for ref, field in task_refs(task, resource.params, resource.secure_params):
                    where = f"stage {stage.name}, {point} task {task.name}: {field}"
                    uses.append(SecretUse(ref, resource.key, where, resource.path, resource.line))
    return uses


def declared_uses(desired: Desired) -> list[SecretUse]:
    """Every reference a revision declares that some work would resolve."""
    uses: list[SecretUse] = []
    for name, provider in desired.providers.items():
        owner = f"Provider/{name}"
        for key, ref in sorted(provider.spec.credentials.items()):
            uses.append(SecretUse(ref, owner, f"credentials.{key}"))
        if provider.spec.tls.ca_bundle:
            uses.append(SecretUse(provider.spec.tls.ca_bundle, owner, "tls.caBundle"))
    for index, target in enumerate(desired.policy.notifications):
        if target.secret:
            uses.append(SecretUse(target.secret, "Policy", f"notifications[{index}].secret"))
    for _key, resource in sorted(desired.resources.items()):
        uses += resource_uses(resource)
    return uses


def unresolvable(uses: Iterable[SecretUse], resolvable: Resolvable) -> tuple[Unresolvable, ...]:
    """The references among `uses` that do not resolve, each asked about once, sorted."""
    by_ref: dict[str, list[SecretUse]] = {}
    for use in uses:
        by_ref.setdefault(use.ref, []).append(use)
    found = []
    for ref in sorted(by_ref):
        reason = resolvable(ref)
        if reason is not None:
            found.append(Unresolvable(ref, reason, tuple(by_ref[ref])))
    return tuple(found)


def precheck(
    resource: ResolvedResource, stages: Collection[str], resolvable: Resolvable
) -> str | None:
    """Why `resource` must not start (a reference its planned stages need does not
    resolve), or None. The executor's check before a resource's first task."""
    missing = unresolvable(resource_uses(resource, stages), resolvable)
    if not missing:
        return None
    return "not started: " + "; ".join(m.message for m in missing)


# --- the edge --------------------------------------------------------------------------


def environment(base_dir: Path | None = None) -> Resolvable:
    """Whether a reference resolves in this process (the variable is set, the file is
    readable UTF-8). Nothing is kept or registered: the value is only read."""

    def check(ref: str) -> str | None:
        try:
            read_ref(ref, base_dir=base_dir)
        except SecretUnavailable as exc:
            return str(exc).removeprefix(f"secret reference {ref}: ")
        return None

    return check
