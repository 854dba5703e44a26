"""The document kinds of `reconciler/v1`: what a declared repository may contain.

Part of the model. Each kind is `apiVersion`, `kind`, `metadata`, `spec`. These
classes check one document at a time; checks that need several documents
(references, cycles, params against pipeline inputs) live in `reconciler.load.load`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    HttpUrl,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from reconciler.model.common import (
    Duration,
    Metadata,
    Name,
    SecretRef,
    Selector,
    Strict,
)
from reconciler.model.tasks import Task

API_VERSION = "reconciler/v1"


def _unique_task_names(tasks: list[Any], where: str) -> None:
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            raise ValueError(f"task name {task.name!r} appears twice in {where}")
        seen.add(task.name)


class Hooks(Strict):
    """Extension points a team fills without forking a shared stage.

    Lists compose across levels instead of overriding: the global profile's, then
    the pipeline's, then the stage's own, then the resource's profiles' (in order),
    then the resource's.
    """

    pre_notify: list[Task] = Field(default_factory=list, alias="pre-notify")
    pre_process: list[Task] = Field(default_factory=list, alias="pre-process")
    post_process: list[Task] = Field(default_factory=list, alias="post-process")
    post_notify: list[Task] = Field(default_factory=list, alias="post-notify")

    POINTS: ClassVar[tuple[str, ...]] = ("pre_notify", "pre_process", "post_process", "post_notify")


StageHooks = dict[str, Hooks]
"""Hooks by stage name; the key `"*"` applies to every stage."""


# --- Provider ---------------------------------------------------------------


class Limits(Strict):
    concurrency: int = Field(default=10, ge=1, le=10_000)
    rate_per_second: float | None = Field(default=None, gt=0)


class Tls(Strict):
    verify: bool = True
    ca_bundle: SecretRef | None = None


class ProviderSpec(Strict):
    type: str = Field(
        pattern=r"^[a-z][a-z0-9-]*$",
        description="simulator, redfish, aws-ec2, http, or a third-party provider's name",
    )
    endpoint: str | None = None
    region: str | None = None
    credentials: dict[str, SecretRef] = Field(
        default_factory=dict, description="Each value a reference: env:NAME or file:PATH"
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="Provider-specific options")
    limits: Limits = Field(default_factory=Limits)
    tls: Tls = Field(default_factory=Tls)
    site: Name | None = Field(
        default=None,
        description="Where this provider's tasks run when RECONCILER_EXECUTE=workers: only on "
        "workers started with --site of this name (none: any worker)",
    )


class Provider(Strict):
    api_version: Literal["reconciler/v1"]
    kind: Literal["Provider"]
    metadata: Metadata
    spec: ProviderSpec


# --- Resources --------------------------------------------------------------


ADOPT_DESCRIPTION = (
    "Take over an already-provisioned resource without running its pipeline, once the "
    "observed value of every converged field equals the declared one"
)


MANAGEMENT_DESCRIPTION = (
    "manage (default): the controller acts on it; observe: it is only observed, diffed and "
    "reported (drift, status, audit), never created, changed, healed, adopted or "
    "decommissioned, whatever selfHeal and prune say"
)
Management = Literal["manage", "observe"]


class ResourceSpec(Strict):
    provider: Name
    pipeline: Name
    profiles: list[Name] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(
        default_factory=list,
        description="Kind/name, or a bare name of a Machine, Instance or Resource",
    )
    hooks: StageHooks = Field(default_factory=dict)
    adopt: bool | None = Field(default=None, description=ADOPT_DESCRIPTION)
    management: Management | None = Field(
        default=None,
        description=MANAGEMENT_DESCRIPTION + " (unset: its profiles', else the global one's)",
    )


def _on_off(value: Any) -> Any:
    # YAML 1.1 reads an unquoted on/off as a boolean: `power: on` means "on".
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


PowerState = Annotated[
    Literal["on", "off"],
    BeforeValidator(_on_off),
    WithJsonSchema(
        {"enum": ["on", "off", True, False], "description": "Declared power state: on or off"}
    ),
]


class Bmc(Strict):
    """How the provider finds the machine: a BMC address and/or a system identity."""

    address: str | None = None
    system_id: str | None = None
    serial: str | None = None
    mac: str | None = Field(default=None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


class MachineSpec(ResourceSpec):
    bmc: Bmc = Field(default_factory=Bmc)
    rack: str | None = None
    power: PowerState | None = Field(
        default=None,
        description="on or off: observed (Redfish PowerState, the simulator); out-of-band "
        "changes are drift, corrected with selfHeal by the stage converging `power`",
    )


class Machine(Strict):
    api_version: Literal["reconciler/v1"]
    kind: Literal["Machine"]
    metadata: Metadata
    spec: MachineSpec


class InstanceSpec(ResourceSpec):
    size: str
    image: str
    region: str | None = None
    zone: str | None = None
    state: Literal["running", "stopped"] | None = Field(
        default=None,
        description="running or stopped: observed (EC2 instance state); out-of-band changes "
        "are drift, corrected with selfHeal by the stage converging `state`",
    )


class Instance(Strict):
    api_version: Literal["reconciler/v1"]
    kind: Literal["Instance"]
    metadata: Metadata
    spec: InstanceSpec


class ManagedObjectSpec(ResourceSpec):
    type: str = Field(
        pattern=r"^[a-z][a-z0-9-]*$",
        description="What kind of object the provider manages: vlan, dns-record, ip-allocation, …",
    )


class ManagedObject(Strict):
    """Any other managed object of a provider (a VLAN, a DNS record, an IP allocation):
    the "Allocate" and "Register" steps of provisioning, with the same pipelines, diff,
    drift and prune as machines and instances. Its kind in YAML is `Resource`."""

    api_version: Literal["reconciler/v1"]
    kind: Literal["Resource"]
    metadata: Metadata
    spec: ManagedObjectSpec


# --- Pipelines and stages -----------------------------------------------------


class Input(Strict):
    """One input a pipeline accepts: the service catalog's form field."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["string", "integer", "number", "boolean", "list", "map"] = "string"
    allowed: list[Any] | None = None
    default: Any = None
    required: bool = False
    secure: bool = Field(default=False, description="Value is a reference, redacted everywhere")
    description: str = ""


class PipelineStep(Strict):
    """One entry of a pipeline: a stage, or another pipeline whose stages are spliced in."""

    stage: Name | None = None
    include: Name | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PipelineStep:
        if (self.stage is None) == (self.include is None):
            raise ValueError("each step names exactly one of stage or include")
        return self


class Rollout(Strict):
    """How a change reaches a fleet: in batches per failure domain, canary first, paused
    when failures pile up (see `reconciler.plan.rollouts`).

    Applies to updates of already-provisioned resources (destructive re-runs included)
    by default; creates of new resources are held back only when `appliesTo` says so.
    """

    max_unavailable: int | Annotated[str, Field(pattern=r"^\d{1,3}%$")] = Field(
        default=1,
        description="Resources of one failure domain being changed at once: a count, or a "
        "percentage of the domain's resources in the rollout (at least one)",
    )
    domain: str | None = Field(
        default=None,
        description="The failure domain: `rack` (a Machine's spec.rack) or a label key "
        "(zone, site…); none: the whole rollout is one domain",
    )
    canary: int | Selector | None = Field(
        default=None,
        description="The first N resources (in key order), or those a selector picks: all "
        "must become Ready before the rest start",
    )
    pause_on_failure: int | Annotated[str, Field(pattern=r"^\d{1,3}%$")] | None = Field(
        default=None,
        description="Failed resources (a count, or a percentage of the rollout) that pause "
        "it: nothing new starts, running ones finish; resumed by changing `resume` or "
        "POST /api/v1/rollouts/{id}/resume",
    )
    applies_to: list[Literal["update", "create"]] = Field(
        default_factory=lambda: ["update"],  # type: ignore[arg-type]  # mypy: list[str]
        description="Which actions the rollout holds back: `update` (of provisioned "
        "resources), and `create` only when listed",
    )
    resume: str | None = Field(
        default=None, description="Change this value in a commit to resume a paused rollout"
    )


class Catalog(Strict):
    """Offers a pipeline to requesters: `GET /api/v1/catalog` lists it, its inputs as a
    JSON Schema, and `POST /api/v1/requests` accepts requests for it."""

    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    kinds: list[Literal["Machine", "Instance", "Resource"]] = Field(
        min_length=1, description="The kinds of resource a request for this pipeline may declare"
    )
    tags: list[str] = Field(default_factory=list, description="For portals to group offerings")


class PipelineSpec(Strict):
    description: str = ""
    catalog: Catalog | None = Field(
        default=None, description="Offer this pipeline in the service catalog of the HTTP API"
    )
    inputs: list[Input] = Field(default_factory=list)
    steps: list[PipelineStep] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    hooks: StageHooks = Field(default_factory=dict)
    rollout: Rollout | None = Field(
        default=None, description="How changes reach its resources (wins over the Policy's)"
    )

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[Input]) -> list[Input]:
        names = [i.name for i in inputs]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"input {name!r} is declared twice")
        return inputs


class Pipeline(Strict):
    api_version: Literal["reconciler/v1"]
    kind: Literal["Pipeline"]
    metadata: Metadata
    spec: PipelineSpec


class StageSpec(Strict):
    """A reusable unit of work.

    Run order: pre-notify, pre-process, classify, work, post-process, validate,
    post-notify; then the stages named in `chain` follow (when the pipeline does
    not already run them). The stage counts as done only when `validate` passes.
    """

    description: str = ""
    converges: list[str] = Field(
        default_factory=list,
        description="Dotted fields this stage brings to their declared value, e.g. params.os",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    pre_notify: list[Task] = Field(default_factory=list, alias="pre-notify")
    pre_process: list[Task] = Field(default_factory=list, alias="pre-process")
    classify: list[Task] = Field(default_factory=list)
    work: list[Task] = Field(default_factory=list)
    post_process: list[Task] = Field(default_factory=list, alias="post-process")
    validate_: list[Task] = Field(default_factory=list, alias="validate")
    post_notify: list[Task] = Field(default_factory=list, alias="post-notify")
    chain: list[Name] = Field(default_factory=list)
    destructive: bool = Field(
        default=False, description="Re-runs destroy data (re-image, re-provision)"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> StageSpec:
        _unique_task_names(
            [
                *self.pre_notify,
                *self.pre_process,
                *self.classify,
                *self.work,
                *self.post_process,
                *self.validate_,
                *self.post_notify,
            ],
            "this stage",
        )
        return self


class Stage(Strict):
    api_version: Literal["reconciler/v1"]
    kind: Literal["Stage"]
    metadata: Metadata
    spec: StageSpec


# --- Approvals (part of the policy) ---------------------------------------------


SIGNER_REF_PATTERN = r"^(repo:[^/].*|file:.+|env:[A-Za-z_][A-Za-z0-9_]*)$"


class Reviewer(Strict):
    """Who may approve gated changes to which resources: a CODEOWNERS-like entry.

    An entry covers a resource when one of `paths` (globs on the path of the file
    declaring it, `*` within a folder, `**` across folders) matches, or `paths`
    is empty, and every `labels` pair matches. An entry with neither is a catch-all.
    """

    paths: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    names: list[str] = Field(
        min_length=1,
        description="Reviewers as `Name <email>`; an `Approved-by` trailer matches by email",
    )

    @field_validator("names")
    @classmethod
    def _identities(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[^<>]*<[^<>@\s]+@[^<>\s]+>", name.strip()):
                raise ValueError(f"reviewer {name!r} is not `Name <email>`")
        return names


class Approvals(Strict):
    """Approval gates: changes to protected resources, and destructive ones, wait for a reviewer.

    Approvals are read from the commits between a resource's last applied
    revision and the head of the tracked branch (merge commits included): an
    `Approved-by: Name <email>` trailer from a reviewer listed for the resource,
    or a commit signed by a trusted key whose principal is such a reviewer. The
    rules in force are those of the last revision whose changes to these rules (and
    to `protected`) were approved under the rules before them, so a change cannot
    approve itself by editing them.
    """

    required: bool = Field(
        default=False,
        description="Gate changes to protected resources and every destructive action",
    )
    reviewers: list[Reviewer] = Field(default_factory=list)
    trusted_signers: list[Annotated[str, Field(pattern=SIGNER_REF_PATTERN)]] = Field(
        default_factory=list,
        description="SSH allowed_signers files by reference: repo:PATH (in this repository, "
        "as of the last reconciled revision), file:PATH (on the controller) or env:NAME",
    )
    require_signature: bool = Field(
        default=False,
        description="Count only approvals from commits signed by a trusted key",
    )
    pin_plan: bool = Field(
        default=False,
        description="Hold destructive actions that no reviewed pull request plan "
        "(plans/<branch>.md of a merged branch) showed",
    )


# --- Profiles and policy ------------------------------------------------------


class ProfileSpec(Strict):
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    hooks: StageHooks = Field(default_factory=dict)
    adopt: bool | None = Field(
        default=None,
        description=ADOPT_DESCRIPTION + " (for every resource using this profile, unless the "
        "resource says otherwise)",
    )
    management: Management | None = Field(
        default=None,
        description=MANAGEMENT_DESCRIPTION + " (for every resource using this profile, unless "
        "the resource says otherwise)",
    )


class Profile(Strict):
    """A named set of params; the profile named `global` applies to every resource."""

    api_version: Literal["reconciler/v1"]
    kind: Literal["Profile"]
    metadata: Metadata
    spec: ProfileSpec


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ChangeWindow(Strict):
    """When destructive actions may run; outside every window they wait."""

    days: list[Weekday] = Field(min_length=1)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")
    timezone: str = "UTC"


NotificationEvent = Literal["Failed", "Ready", "DriftDetected", "DriftCleared"]
ALL_NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "Failed",
    "Ready",
    "DriftDetected",
    "DriftCleared",
)


class NotificationTarget(Strict):
    """A webhook told when a resource's conditions change (see `reconciler.controller.notify`).

    Sent on transitions only: became Failed, became Ready, drift detected, drift
    cleared; the same alert again before it was resolved only increments a count.
    """

    url: HttpUrl
    secret: SecretRef | None = Field(
        default=None, description="HMAC-SHA256 key: X-Reconciler-Signature-256 on each POST"
    )
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(ALL_NOTIFICATION_EVENTS),
        min_length=1,
    )


class FailureBackoff(Strict):
    """How long scheduled cycles leave a failed resource alone before trying it again.

    `initial` after its first failure, doubled after each further one, at most
    `maximum`. A change to the resource in Git, `POST /sync`, a push, a provider
    event about it and `reconciler apply` try it again at once.
    """

    initial: Duration = 60.0
    maximum: Duration = 3600.0


class PolicySpec(Strict):
    prune: bool = Field(default=False, description="Decommission resources removed from Git")
    self_heal: bool = Field(default=False, description="Correct drift; otherwise only report it")
    protected: list[Selector] = Field(default_factory=list)
    approvals: Approvals = Field(default_factory=Approvals)
    max_destructive_actions: int = Field(default=10, ge=0)
    change_windows: list[ChangeWindow] = Field(default_factory=list)
    ignore_differences: list[IgnoreRule] = Field(default_factory=list)
    sync_timeout: Duration = 3600.0
    failure_backoff: FailureBackoff = Field(default_factory=FailureBackoff)
    notifications: list[NotificationTarget] = Field(
        default_factory=list, description="Webhooks told of condition transitions"
    )
    rollout: Rollout | None = Field(
        default=None, description="How changes reach the fleet (a Pipeline's rollout wins)"
    )
    observe_only: list[Selector] = Field(
        default_factory=list,
        description="Resources only observed and reported, never acted on (like "
        "`management: observe`; a resource cannot opt out of it)",
    )


class IgnoreRule(Strict):
    """Observed differences not to count as drift (like Argo CD's ignoreDifferences).

    `paths` are dotted, `*` matches any one key or list element: `observed.nics.*.ip`.
    """

    selector: Selector = Field(default_factory=Selector)
    paths: list[str] = Field(min_length=1)


class Policy(Strict):
    api_version: Literal["reconciler/v1"]
    kind: Literal["Policy"]
    metadata: Metadata
    spec: PolicySpec


PolicySpec.model_rebuild()

Document = Annotated[
    Provider | Machine | Instance | ManagedObject | Pipeline | Stage | Profile | Policy,
    Field(discriminator="kind"),
]
Resource = Machine | Instance | ManagedObject
"""A declared resource document: what a pipeline provisions."""
RESOURCE_KINDS = ("Machine", "Instance", "Resource")
