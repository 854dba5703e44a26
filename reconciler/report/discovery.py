"""The discovery inbox: what providers see that nothing declares, as a report and as documents.

Pure, beside report: `reconciler.observe.observe.discover` asks the providers (the edge) and
hands back `Discovered` values; this module turns them into

- `DiscoveryReport`: the files `reports/discovered.md` and `reports/discovered.json`
  of each full cycle's status commit (and what `GET /api/v1/discovered` serves);
- `documents`: ready-to-commit documents (`reconciler discover`) — a Machine with its
  BMC identity, an Instance, a Resource — each with its observed facts as YAML
  comments above it, so enrolling a machine is a pull request.

Nothing here is ever acted on: a discovered resource is only listed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.load.desired import Desired, ResolvedResource
from reconciler.observe.values import Discovered
from reconciler.secrets import REDACTOR

DISCOVERED_MD = "reports/discovered.md"
DISCOVERED_JSON = "reports/discovered.json"
API_VERSION = "reconciler/v1"
_NOT_NAME = re.compile(r"[^a-z0-9.-]+")
_MAC = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")


@dataclass(frozen=True)
class DiscoveryReport:
    """One cycle's inbox: what each provider listed, and the providers that could not."""

    revision: str | None
    found: tuple[Discovered, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)
    """Provider name -> why its listing could not be had (nothing of it is shown)."""

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = REDACTOR.data(
            {
                "revision": self.revision,
                "discovered": [d.to_dict() for d in self.found],
                "errors": dict(sorted(self.errors.items())),
            }
        )
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> DiscoveryReport:
        data = json.loads(text)
        return cls(
            revision=data.get("revision"),
            found=tuple(Discovered.from_dict(d) for d in data.get("discovered", ())),
            errors=dict(data.get("errors", {})),
        )

    def to_markdown(self) -> str:
        lines = ["# Discovered", ""]
        lines.append(f"Declared revision: `{self.revision or 'unknown'}`")
        lines.append("")
        lines.append(
            "What providers see that no document declares and no owner marks. Never acted "
            "on: `reconciler discover --output yaml` prints documents to enroll them."
        )
        lines.append("")
        for provider, why in sorted(self.errors.items()):
            lines.append(f"- provider `{provider}` could not list what it sees: {why}")
        if self.errors:
            lines.append("")
        if not self.found:
            lines.append("Nothing undeclared was seen.")
            return REDACTOR.text("\n".join(lines) + "\n")
        lines.append(f"{len(self.found)} undeclared:")
        lines.append("")
        lines.append("| provider | kind | name | identity | facts |")
        lines.append("|---|---|---|---|---|")
        for d in self.found:
            identity = ", ".join(f"{k}={v}" for k, v in sorted(d.identity.items()))
            lines.append(
                f"| `{d.provider}` | {d.kind} | `{_cell(d.name or '-')}` | {_cell(identity)} "
                f"| {_cell(_summary(d.facts))} |"
            )
        return REDACTOR.text("\n".join(lines) + "\n")

    def files(self) -> dict[str, bytes]:
        return {
            DISCOVERED_MD: self.to_markdown().encode(),
            DISCOVERED_JSON: self.to_json().encode(),
        }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _summary(facts: Mapping[str, Any]) -> str:
    """A few facts people decide by, in one cell."""
    shown = []
    for key in ("power", "state", "size", "image", "health", "type"):
        if facts.get(key) is not None:
            shown.append(f"{key}={facts[key]}")
    inventory = facts.get("inventory")
    if isinstance(inventory, Mapping):
        for key in ("vendor", "model", "serial", "memoryGiB"):
            if inventory.get(key) is not None:
                shown.append(f"{key}={inventory[key]}")
    return ", ".join(shown) or "-"


# --- documents ------------------------------------------------------------------------


def _name(candidate: str, taken: set[str]) -> str:
    """A valid, unused document name from what the provider calls it."""
    base = _NOT_NAME.sub("-", candidate.lower()).strip("-.")[:60] or "discovered"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _pipeline(desired: Desired, kind: str, provider: str) -> str:
    """The pipeline most used by declared resources of this kind and provider, else of
    this kind, else the first one no other kind uses, else the first one declared."""
    alike: tuple[Callable[[ResolvedResource], bool], ...] = (
        lambda r: r.kind == kind and r.provider == provider,
        lambda r: r.kind == kind,
    )
    for same in alike:
        used = Counter(r.pipeline for r in desired.resources.values() if same(r))
        if used:
            return sorted(used.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    others = {r.pipeline for r in desired.resources.values()}
    free = sorted(set(desired.pipelines) - others) or sorted(desired.pipelines)
    return free[0] if free else "CHANGE-ME"


def _type(desired: Desired, provider: str, found: Discovered) -> str:
    given = found.identity.get("type") or found.facts.get("type")
    if isinstance(given, str) and re.fullmatch(r"[a-z][a-z0-9-]*", given):
        return given
    used = Counter(
        getattr(r.document.spec, "type", None)
        for r in desired.resources.values()
        if r.kind == "Resource" and r.provider == provider
    )
    used.pop(None, None)
    return str(sorted(used.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]) if used else "object"


def _spec(desired: Desired, found: Discovered) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": found.provider,
        "pipeline": _pipeline(desired, found.kind, found.provider),
    }
    identity = found.identity
    if found.kind == "Machine":
        bmc = {k: str(identity[k]) for k in ("address", "systemId", "serial") if identity.get(k)}
        if isinstance(identity.get("mac"), str) and _MAC.fullmatch(identity["mac"]):
            bmc["mac"] = identity["mac"]
        if bmc:
            spec["bmc"] = bmc
        if identity.get("rack"):
            spec["rack"] = identity["rack"]
    elif found.kind == "Instance":
        spec["size"] = found.facts.get("size") or "CHANGE-ME"
        spec["image"] = found.facts.get("image") or "CHANGE-ME"
        if identity.get("region"):
            spec["region"] = identity["region"]
        if found.facts.get("zone"):
            spec["zone"] = found.facts["zone"]
    else:
        spec["type"] = _type(desired, found.provider, found)
    return spec


def documents(found: Sequence[Discovered], desired: Desired) -> list[dict[str, Any]]:
    """One document per discovered resource, named so that none collides with a
    declared one of its kind or with another of these."""
    taken: dict[str, set[str]] = {}
    for resource in desired.resources.values():
        taken.setdefault(resource.kind, set()).add(resource.name)
    out = []
    for d in found:
        fallback = d.identity.get("systemId") or d.identity.get("instanceId") or d.kind
        name = _name(d.name or str(fallback), taken.setdefault(d.kind, set()))
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": d.kind,
                "metadata": {"name": name},
                "spec": _spec(desired, d),
            }
        )
    return out


def documents_yaml(found: Sequence[Discovered], desired: Desired) -> str:
    """The documents as one YAML stream; each one's identity and observed facts as
    comments above it (every line of them commented, whatever the provider said)."""
    parts = []
    for d, document in zip(found, documents(found, desired), strict=True):
        facts = yaml.safe_dump(
            REDACTOR.data({"identity": dict(d.identity), "observed": dict(d.facts)}),
            sort_keys=True,
            default_flow_style=False,
            allow_unicode=False,  # escaped: no character of theirs can end a comment line
        )
        comment = "\n".join(f"# {line}".rstrip() for line in facts.splitlines())
        header = f"# discovered by provider {d.provider}: review, then commit to enroll it"
        body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
        parts.append(f"---\n{header}\n{comment}\n{body}")
    return "".join(parts)
