"""The EC2 provider: cloud instances on AWS, or any EC2-compatible API, through boto3.

An edge of the flow (behind `reconciler.providers.base.Provider`), for `Instance`
resources. boto3 calls block: each runs in a thread of the provider's own pool
(`support.Gate`, as many threads as its `limits.concurrency`) within its declared
limits. botocore exceptions become `reconciler.errors` here and nowhere
else (throttling, 5xx, capacity and unreachable endpoints: `TemporaryError`;
refused credentials, invalid parameters: `PermanentError`).

Ownership is by tags, set at RunInstances on the instance and its volumes:
``managed-by=reconciler``, ``reconciler/repository``, ``reconciler/key``
(``Kind/name``), ``reconciler/idempotency-key`` and ``Name``. The resource's
labels become tags too. Everything is looked up by these tags, never by a
remembered instance id, and only instances of this repository are ever touched.

Observed fields (the simulator's shape): ``state`` (pending, running, stopping,
stopped, shutting-down), ``size`` (instance type), ``image`` (the name from
``settings.images`` when the AMI is one of them, else the AMI id), ``region``,
``zone``, ``instanceId``, ``privateIp``, ``publicIp``, ``launchTime``, ``tags``
(ours left out), and ``duplicates`` (other instance ids carrying the same key —
never expected; visible so a person can act).

Calls and their semantics (Pulumi style):

- `observe`: read-only; one DescribeInstances per region and batch (tag filters).
  No non-terminated instance with the key: ``exists=False``.
- `list_owned`: every non-terminated instance of this repository in the
  provider's regions (``region`` plus ``settings.regions``), all pages, or raise.
- `start`: idempotent by idempotency key (records in ``<state_dir>/ec2-<name>.db``).

  ``create``: if an instance with this resource's key (any non-terminated state)
  exists, nothing is launched — this is what holds when the process crashed
  between RunInstances and recording its answer, and it holds against APIs that
  ignore ``ClientToken`` (moto does) — but the declaration must hold for it: a
  type other than the declared ``size`` is changed as a ``resize`` does, and an
  ``image`` or ``zone`` other than declared fails the create (neither can change
  in place: the instance must be replaced). Otherwise RunInstances
  with ``ClientToken`` derived from the idempotency key (real EC2 deduplicates
  on it too). A create that ends failed leaves a terminated instance, nothing
  running. DescribeInstances is eventually consistent on AWS: a look-up within
  seconds of a launch may miss it, which is the window ``ClientToken`` covers.

  ``delete`` / ``decommission`` / ``terminate``: TerminateInstances on every
  instance with the key (none: succeeds, already absent).

  ``resize``: to ``args.size`` or the declared size, as one operation: stop,
  ModifyInstanceAttribute, start again (if it was running). ``power-on`` /
  ``power-off``: StartInstances / StopInstances; ``set-state``: to ``args.state``
  or the declared ``state`` (running or stopped); ``reboot``: RebootInstances
  (EC2 reports no completion: done when accepted).
- `poll`: DescribeInstances against the target state, with a deadline
  (``args.timeout`` or ``settings.operationTimeout``, default 15m). A resize is
  driven by poll: each call takes the next step the observed state allows
  (stop → modify → start); every step is conditional on the observed state, so
  polling again, or from another process, repeats nothing. A type the API refuses
  fails the operation and starts the instance again with its old type. Operation ids are
  self-describing (``ec2:<action>:<region>:<ids>:<target>:<mode>:<started>``), so a
  handle can be polled even without the records file.
- `cancel`: EC2 cannot take back a launch or a termination: False.

Settings: ``regions`` (more regions for `list_owned`), ``images`` (name -> AMI
id), ``runInstances`` (extra RunInstances parameters: ``SubnetId``,
``SecurityGroupIds``, ``KeyName``, ``IamInstanceProfile``…), ``operationTimeout``,
``timeout`` (per request, default 30s). ``endpoint`` is the ``endpoint_url``.
Credentials: ``accessKeyId``, ``secretAccessKey``, ``sessionToken`` (all
optional: without them boto3's own chain applies — instance profile, env, SSO).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.model.kinds import ProviderSpec
from reconciler.providers.base import (
    MANAGED_BY,
    ActionRequest,
    Discovered,
    Observation,
    ObservationResult,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    OwnedResource,
    ProviderContext,
    ResourceRef,
)
from reconciler.providers.support import (
    Gate,
    KeyedLocks,
    OperationRecord,
    OperationStore,
    arg_duration,
    credential,
    duration_setting,
    existing_operation,
    is_tls_failure,
    scrub,
    tls_message,
    tls_verify,
)

log = structlog.get_logger("reconciler.providers.ec2")

TAG_MANAGED_BY = "managed-by"
TAG_REPOSITORY = "reconciler/repository"
TAG_KEY = "reconciler/key"
TAG_IDEMPOTENCY = "reconciler/idempotency-key"
OUR_TAGS = frozenset({TAG_MANAGED_BY, TAG_REPOSITORY, TAG_KEY, TAG_IDEMPOTENCY, "Name"})

LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
DELETES = frozenset({"delete", "decommission", "terminate"})
POWER = {"power-on": "running", "start": "running", "power-off": "stopped", "stop": "stopped"}
ACTIONS = frozenset({"create", "resize", "reboot", "set-state", *DELETES, *POWER})
IN_PLACE = ("size",)
"""Declared fields a `create` of an existing instance brings to their value (a resize)."""
REPLACE_ONLY = {"image": "image", "zone": "zone"}
"""Declared fields an existing instance cannot take in place: it must be replaced."""
TEMPORARY_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InsufficientInstanceCapacity",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "IncorrectInstanceState",
        "RequestExpired",
    }
)
NOT_FOUND = "InvalidInstanceID.NotFound"


def _load_boto3() -> tuple[Any, Any]:
    try:
        import boto3
        import botocore.config
    except ImportError:  # pragma: no cover - depends on the installation
        raise PermanentError(
            "the aws-ec2 provider needs boto3: pip install 'reconciler[aws]'"
        ) from None
    return boto3, botocore.config


@dataclass(frozen=True)
class OperationId:
    """A self-describing EC2 operation: enough to poll it with no other state."""

    action: str
    region: str
    instance_ids: tuple[str, ...]
    target: str = "-"
    mode: str = "-"
    started: int = 0

    def encode(self) -> str:
        ids = ",".join(self.instance_ids) or "-"
        return f"ec2:{self.action}:{self.region}:{ids}:{self.target}:{self.mode}:{self.started}"

    @classmethod
    def decode(cls, text: str) -> OperationId:
        parts = text.split(":")
        if len(parts) != 7 or parts[0] != "ec2":
            raise PermanentError(f"aws-ec2: not an operation of this provider: {text!r}")
        _, action, region, ids, target, mode, started = parts
        return cls(
            action,
            region,
            tuple(i for i in ids.split(",") if i and i != "-"),
            target,
            mode,
            int(started),
        )


def client_token(repository: str, idempotency_key: str) -> str:
    """RunInstances' ClientToken (at most 64 ASCII characters) for an idempotency key."""
    return hashlib.sha256(f"{repository}\0{idempotency_key}".encode()).hexdigest()


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags") or ()}


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Ec2Provider:
    """Instances on EC2 (see the module docstring)."""

    @classmethod
    def observed_fields(cls, spec: ProviderSpec) -> Mapping[str, frozenset[str]]:
        """What `observe` reports, per kind (the loader checks `converges` against it)."""
        return {
            "Instance": frozenset(
                {
                    "state",
                    "size",
                    "image",
                    "region",
                    "zone",
                    "instanceId",
                    "privateIp",
                    "publicIp",
                    "launchTime",
                    "tags",
                    "duplicates",
                }
            )
        }

    def __init__(self, context: ProviderContext) -> None:
        self._boto3, self._botocore_config = _load_boto3()
        import botocore.exceptions

        self._exceptions = botocore.exceptions
        self.name = context.name
        self.context = context
        self.repository = context.repository
        settings = dict(context.spec.settings)
        self._region = context.spec.region or settings.get("region")
        if not self._region:
            raise PermanentError(f"provider {self.name}: spec.region is required for aws-ec2")
        self._regions = [
            self._region,
            *[r for r in settings.get("regions") or () if r != self._region],
        ]
        self._images: dict[str, str] = {
            str(k): str(v) for k, v in (settings.get("images") or {}).items()
        }
        self._ami_names = {v: k for k, v in self._images.items()}
        extra = settings.get("runInstances") or {}
        if not isinstance(extra, Mapping):
            raise PermanentError(f"provider {self.name}: settings.runInstances must be a mapping")
        self._run_extra = dict(extra)
        self._timeout = duration_setting(context, "operationTimeout", 900.0)
        request_timeout = duration_setting(context, "timeout", 30.0)
        self._session = self._boto3.session.Session(
            aws_access_key_id=credential(context, "accessKeyId"),
            aws_secret_access_key=credential(context, "secretAccessKey"),
            aws_session_token=credential(context, "sessionToken"),
        )
        self._config = self._botocore_config.Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=min(request_timeout, 10.0),
            read_timeout=request_timeout,
        )
        self._endpoint = context.spec.endpoint
        self._verify = tls_verify(context)
        self._gate = Gate.from_context(context)
        self._store = OperationStore(context.state_dir / f"ec2-{context.name}.db")
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._key_locks = KeyedLocks()

    # --- clients and errors -----------------------------------------------------------

    def _client(self, region: str) -> Any:
        with self._clients_lock:  # a boto3 session is not thread-safe; its clients are
            return self._client_unlocked(region)

    def _client_unlocked(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            client = self._session.client(
                "ec2",
                region_name=region,
                endpoint_url=self._endpoint,
                verify=self._verify,
                config=self._config,
            )
            self._clients[region] = client
        return client

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        def guarded() -> Any:
            try:
                return fn(*args)
            except ReconcilerError:
                raise
            except Exception as exc:
                raise self._translate(exc) from None

        return await self._gate.thread(guarded)

    def _translate(self, exc: Exception) -> ReconcilerError:
        e = self._exceptions
        text = scrub(exc)
        if isinstance(exc, e.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in TEMPORARY_CODES or status >= 500 or status == 429:
                return TemporaryError(f"aws-ec2: {text}")
            return PermanentError(f"aws-ec2: {text}")
        if isinstance(exc, e.NoCredentialsError | e.PartialCredentialsError):
            return PermanentError(f"aws-ec2: no usable credentials: {text}")
        if isinstance(exc, e.SSLError) or is_tls_failure(exc):
            return PermanentError(tls_message("aws-ec2", exc))
        if isinstance(exc, e.EndpointConnectionError | e.ConnectionError | e.ReadTimeoutError):
            return TemporaryError(f"aws-ec2: endpoint unreachable: {text}")
        if isinstance(exc, e.BotoCoreError | OSError):
            return TemporaryError(f"aws-ec2: {text}")
        return PermanentError(f"aws-ec2: {type(exc).__name__}: {text}")

    def _region_of(self, ref: ResourceRef) -> str:
        return str(ref.declared.get("region") or self._region)

    # --- reading (blocking; run in a thread) -----------------------------------------------

    def _describe(self, region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        paginator = self._client(region).get_paginator("describe_instances")
        found: list[dict[str, Any]] = []
        for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 500}):
            for reservation in page.get("Reservations", ()):
                found.extend(reservation.get("Instances", ()))
        return found

    def _ours(self, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [
            {"Name": f"tag:{TAG_MANAGED_BY}", "Values": [MANAGED_BY]},
            {"Name": f"tag:{TAG_REPOSITORY}", "Values": [self.repository]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            *(extra or []),
        ]

    def _by_keys(self, region: str, keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for chunk in _chunks(list(keys), 190):
            for instance in self._describe(
                region, self._ours([{"Name": f"tag:{TAG_KEY}", "Values": list(chunk)}])
            ):
                found.setdefault(_tags(instance)[TAG_KEY], []).append(instance)
        for instances in found.values():
            instances.sort(key=_preference)
        return found

    def _by_ids(self, region: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Instances by id; an id EC2 no longer knows is simply absent."""
        client = self._client(region)
        try:
            reply = client.describe_instances(InstanceIds=list(ids))
        except self._exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != NOT_FOUND:
                raise
            found: list[dict[str, Any]] = []
            for one in ids:
                try:
                    reply = client.describe_instances(InstanceIds=[one])
                except self._exceptions.ClientError as inner:
                    if inner.response.get("Error", {}).get("Code") != NOT_FOUND:
                        raise
                    continue
                found.extend(i for r in reply["Reservations"] for i in r["Instances"])
            return found
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    def _fields(self, instance: Mapping[str, Any], region: str) -> dict[str, Any]:
        image = instance.get("ImageId")
        launch = instance.get("LaunchTime")
        return {
            "state": instance["State"]["Name"],
            "size": instance.get("InstanceType"),
            "image": self._ami_names.get(image, image) if image else image,
            "region": region,
            "zone": instance.get("Placement", {}).get("AvailabilityZone"),
            "instanceId": instance["InstanceId"],
            "privateIp": instance.get("PrivateIpAddress"),
            "publicIp": instance.get("PublicIpAddress"),
            "launchTime": launch.isoformat() if isinstance(launch, datetime) else launch,
            "tags": {k: v for k, v in sorted(_tags(instance).items()) if k not in OUR_TAGS},
        }

    # --- the protocol -----------------------------------------------------------------

    async def observe(self, resources: Sequence[ResourceRef]) -> Mapping[str, ObservationResult]:
        by_region: dict[str, list[str]] = {}
        for ref in resources:
            by_region.setdefault(self._region_of(ref), []).append(ref.key)
        regions = list(by_region)
        found = await asyncio.gather(*(self._call(self._by_keys, r, by_region[r]) for r in regions))
        out: dict[str, ObservationResult] = {}
        for region, instances_by_key in zip(regions, found, strict=True):
            for key in by_region[region]:
                instances = instances_by_key.get(key)
                if not instances:
                    out[key] = Observation(key, False, {})
                    continue
                fields = self._fields(instances[0], region)
                if len(instances) > 1:
                    fields["duplicates"] = [i["InstanceId"] for i in instances[1:]]
                out[key] = Observation(key, True, fields)
        return {r.key: out[r.key] for r in resources}

    async def list_owned(self) -> Sequence[OwnedResource]:
        owned: list[OwnedResource] = []
        for region in self._regions:
            for instance in await self._call(self._describe, region, self._ours()):
                tags = _tags(instance)
                key = tags.get(TAG_KEY, "")
                kind, _, name = key.partition("/")
                labels = {k: v for k, v in tags.items() if k not in OUR_TAGS}
                owned.append(
                    OwnedResource(
                        key, kind or "Instance", name or key, self.repository, labels,
                        self._fields(instance, region), self.name,
                    )
                )  # fmt: skip
        return sorted(owned, key=lambda o: (o.key, o.fields.get("instanceId", "")))

    async def discover(self, declared: Sequence[ResourceRef]) -> Sequence[Discovered]:
        """Live instances in the provider's regions that carry no owner tag: not ours
        (declared, or orphans) and not another controller's or tool's (any
        ``managed-by`` or ``reconciler/repository`` tag). Every page, or raise."""
        live = [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        found: list[Discovered] = []
        for region in self._regions:
            for instance in await self._call(self._describe, region, live):
                tags = _tags(instance)
                if TAG_MANAGED_BY in tags or TAG_REPOSITORY in tags:
                    continue
                fields = self._fields(instance, region)
                identity = {"instanceId": instance["InstanceId"], "region": region}
                found.append(
                    Discovered("Instance", tags.get("Name", ""), identity, fields, self.name)
                )
        return sorted(found, key=lambda d: (d.identity["region"], d.identity["instanceId"]))

    async def start(self, request: ActionRequest) -> OperationHandle:
        if request.action not in ACTIONS:
            raise PermanentError(
                f"aws-ec2: unknown action {request.action!r}; known: {', '.join(sorted(ACTIONS))}"
            )
        async with self._key_locks.hold(request.idempotency_key):
            record = existing_operation(self._store, request)
            if record is not None:
                return record.handle(self.name)
            record = await self._call(self._start, request)
            self._store.put(record)
            log.info(
                "ec2 action started",
                provider=self.name,
                key=request.key,
                action=request.action,
                operation=record.operation_id,
                message=record.message,
            )
            return record.handle(self.name)

    def _start(self, request: ActionRequest) -> OperationRecord:
        ref, action, args = request.resource, request.action, dict(request.args)
        region = self._region_of(ref)
        client = self._client(region)
        now = int(time.time())
        existing = self._by_keys(region, [ref.key]).get(ref.key, [])

        def record(
            op: OperationId, message: str, phase: OperationPhase = OperationPhase.RUNNING
        ) -> OperationRecord:
            data = {"timeout": arg_duration(args, "timeout", self._timeout)}
            return OperationRecord(
                op.encode(), request.idempotency_key, ref.key, action, phase, message, data, now
            )

        if action == "create":
            if existing:
                return self._create_existing(request, region, existing[0], record, now)
            instance = self._run(client, request, region)
            op = OperationId("create", region, (instance["InstanceId"],), "running", "-", now)
            return record(op, f"launched {instance['InstanceId']}")

        if action in DELETES:
            ids = tuple(i["InstanceId"] for i in existing if i["State"]["Name"] != "shutting-down")
            every = tuple(i["InstanceId"] for i in existing)
            if ids:
                client.terminate_instances(InstanceIds=list(ids))
            op = OperationId("delete", region, every, "terminated", "-", now)
            if not every:
                return record(op, "already absent", OperationPhase.SUCCEEDED)
            return record(op, f"terminating {', '.join(every)}")

        if not existing:
            raise PermanentError(f"aws-ec2: {ref.key} has no instance (create it first)")
        instance = existing[0]
        instance_id, state = instance["InstanceId"], instance["State"]["Name"]

        if action == "resize":
            size = args.get("size") or ref.declared.get("size")
            if not size:
                raise PermanentError(
                    f"aws-ec2: resize of {ref.key} needs args.size or a declared size"
                )
            mode = "run" if state in ("pending", "running") else "keep"
            op = OperationId("resize", region, (instance_id,), str(size), mode, now)
            if instance.get("InstanceType") == size:
                return record(op, f"already {size}", OperationPhase.SUCCEEDED)
            if state in ("pending", "running"):
                client.stop_instances(InstanceIds=[instance_id])
            return record(op, f"stopping {instance_id} to change its type to {size}")

        if action == "reboot":
            client.reboot_instances(InstanceIds=[instance_id])
            op = OperationId("reboot", region, (instance_id,), "running", "-", now)
            return record(op, "reboot accepted", OperationPhase.SUCCEEDED)

        target = _power_target(action, args, ref)
        op = OperationId("power", region, (instance_id,), target, "-", now)
        if state == target:
            return record(op, f"already {target}", OperationPhase.SUCCEEDED)
        if target == "running":
            client.start_instances(InstanceIds=[instance_id])
        else:
            client.stop_instances(InstanceIds=[instance_id])
        return record(op, f"{'starting' if target == 'running' else 'stopping'} {instance_id}")

    def _create_existing(
        self,
        request: ActionRequest,
        region: str,
        instance: Mapping[str, Any],
        record: Callable[..., OperationRecord],
        now: int,
    ) -> OperationRecord:
        """A create of an instance that exists: what the declaration says of it must hold.

        Its type is brought to the declared size (stop, modify, start: a resize); an image
        or zone that differs cannot change in place and fails the create, naming both.
        """
        ref = request.resource
        instance_id, state = instance["InstanceId"], instance["State"]["Name"]
        observed = self._fields(instance, region)
        for name in REPLACE_ONLY:
            want = ref.declared.get(name)
            if want and observed.get(name) != want:
                raise PermanentError(
                    f"aws-ec2: {ref.key} exists ({instance_id}) with {name} "
                    f"{observed.get(name)!r}, declared {want!r}: an instance's {name} cannot "
                    "change in place; decommission it (or delete it) to have it launched anew"
                )
        size = ref.declared.get("size")
        if size and instance.get("InstanceType") != size:
            mode = "run" if state in ("pending", "running") else "keep"
            op = OperationId("resize", region, (instance_id,), str(size), mode, now)
            if state in ("pending", "running"):
                self._client(region).stop_instances(InstanceIds=[instance_id])
            return record(op, f"exists; changing its type {instance.get('InstanceType')} -> {size}")
        ours = _tags(instance).get(TAG_IDEMPOTENCY) == request.idempotency_key
        op = OperationId("create", region, (instance_id,), "running", "-", now)
        return record(
            op, "resumed: launched by this task before" if ours else "exists: taken as created"
        )

    def _run(self, client: Any, request: ActionRequest, region: str) -> dict[str, Any]:
        ref = request.resource
        size, image = ref.declared.get("size"), ref.declared.get("image")
        if not size or not image:
            raise PermanentError(f"aws-ec2: {ref.key} needs a declared size and image")
        ami = self._images.get(str(image), str(image))
        if not ami.startswith("ami-"):
            raise PermanentError(
                f"aws-ec2: image {image!r} is not an AMI id and not in settings.images "
                f"(known: {', '.join(sorted(self._images)) or 'none'})"
            )
        tags = [
            {"Key": "Name", "Value": ref.name},
            {"Key": TAG_MANAGED_BY, "Value": MANAGED_BY},
            {"Key": TAG_REPOSITORY, "Value": self.repository},
            {"Key": TAG_KEY, "Value": ref.key},
            {"Key": TAG_IDEMPOTENCY, "Value": request.idempotency_key},
            *({"Key": k, "Value": v} for k, v in sorted(ref.labels.items()) if k not in OUR_TAGS),
        ]
        params: dict[str, Any] = {
            **self._run_extra,
            "ImageId": ami,
            "InstanceType": str(size),
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(self.repository, request.idempotency_key),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        zone = ref.declared.get("zone")
        if zone:
            params["Placement"] = {**params.get("Placement", {}), "AvailabilityZone": zone}
        reply = client.run_instances(**params)
        return dict(reply["Instances"][0])

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        record = self._store.get(handle.operation_id)
        if record is not None and record.phase.done:
            return record.status()
        op = OperationId.decode(handle.operation_id)
        timeout = float(record.data.get("timeout", self._timeout)) if record else self._timeout
        phase, message, result = await self._call(self._advance, op)
        if phase is OperationPhase.RUNNING and time.time() - op.started > timeout:
            phase, message = OperationPhase.FAILED, f"not done after {timeout:.0f}s: {message}"
        if phase.done:
            if record is None:
                record = OperationRecord(
                    handle.operation_id, handle.idempotency_key, handle.key, handle.action,
                    started_at=op.started,
                )  # fmt: skip
            record = self._store.finish(record, phase, message, result=result)
            return record.status()
        elapsed = time.time() - op.started
        return OperationStatus(
            handle.operation_id, phase, min(0.99, elapsed / timeout if timeout else 0.99), message
        )

    def _advance(self, op: OperationId) -> tuple[OperationPhase, str, dict[str, Any]]:
        """The operation's phase from the observed instances; a resize takes its next step."""
        instances = self._by_ids(op.region, op.instance_ids) if op.instance_ids else []
        running = OperationPhase.RUNNING
        if op.action == "delete":
            left = [i["InstanceId"] for i in instances if i["State"]["Name"] != "terminated"]
            if not left:
                return OperationPhase.SUCCEEDED, "terminated", {}
            return running, f"waiting for {', '.join(left)} to terminate", {}
        if not instances:
            if time.time() - op.started < 60:  # DescribeInstances may lag a launch
                return running, "not visible yet", {}
            return OperationPhase.FAILED, f"{','.join(op.instance_ids)} no longer exists", {}
        instance = instances[0]
        instance_id, state = instance["InstanceId"], instance["State"]["Name"]
        result = {"instanceId": instance_id, "state": state, "size": instance.get("InstanceType")}
        if state in ("shutting-down", "terminated"):
            reason = instance.get("StateReason", {}).get("Message", "")
            return OperationPhase.FAILED, f"{instance_id} is {state} {reason}".strip(), result
        if op.action == "create":
            if state == "running":
                result["privateIp"] = instance.get("PrivateIpAddress")
                return OperationPhase.SUCCEEDED, "running", result
            if state == "pending":
                return running, "pending", result
            return OperationPhase.FAILED, f"{instance_id} is {state}, not running", result
        if op.action == "power":
            if state == op.target:
                return OperationPhase.SUCCEEDED, state, result
            return running, f"{state}, waiting for {op.target}", result
        if op.action == "resize":
            client = self._client(op.region)
            if instance.get("InstanceType") != op.target:
                if state in ("pending", "running"):
                    client.stop_instances(InstanceIds=[instance_id])
                    return running, "stopping", result
                if state == "stopping":
                    return running, "stopping", result
                try:
                    client.modify_instance_attribute(
                        InstanceId=instance_id, InstanceType={"Value": op.target}
                    )
                except self._exceptions.ClientError as exc:
                    error = self._translate(exc)
                    if isinstance(error, TemporaryError):
                        raise error from None
                    message = f"the type cannot become {op.target}: {error}"
                    if op.mode == "run":  # leave it as it was found: running, old type
                        client.start_instances(InstanceIds=[instance_id])
                        message += "; started again with its old type"
                    return OperationPhase.FAILED, message, result
                result["size"] = op.target
                if op.mode != "run":
                    return OperationPhase.SUCCEEDED, f"type is {op.target}", result
                client.start_instances(InstanceIds=[instance_id])
                return running, f"type is {op.target}; starting", result
            if op.mode != "run" or state == "running":
                return OperationPhase.SUCCEEDED, f"type is {op.target}, {state}", result
            if state == "stopped":
                client.start_instances(InstanceIds=[instance_id])
            return running, f"type is {op.target}; {state}", result
        return OperationPhase.SUCCEEDED, state, result

    async def cancel(self, handle: OperationHandle) -> bool:
        """EC2 cannot take back a launch, a stop or a termination."""
        OperationId.decode(handle.operation_id)
        return False

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()
        self._gate.close()
        self._store.close()


def _power_target(action: str, args: Mapping[str, Any], ref: ResourceRef) -> str:
    """The state a power action brings the instance to; `set-state` takes `args.state`,
    else the declared `state` (running or stopped)."""
    if action != "set-state":
        return POWER[action]
    target = str(args.get("state") or ref.declared.get("state") or "running")
    if target not in ("running", "stopped"):
        raise PermanentError(f"aws-ec2: set-state to {target!r}: running or stopped")
    return target


def _preference(instance: Mapping[str, Any]) -> tuple[int, str]:
    """Which of several instances with one key counts: live before stopped, oldest first."""
    state = instance["State"]["Name"]
    rank = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3}.get(state, 4)
    launch = instance.get("LaunchTime")
    return rank, launch.isoformat() if isinstance(launch, datetime) else str(launch or "")
