"""The Redfish provider: bare-metal machines behind their BMCs, through sushy.

An edge of the flow (behind `reconciler.providers.base.Provider`), for `Machine`
resources. It speaks Redfish with sushy (OpenStack Ironic's own client), whose
calls block: each runs in a thread of the provider's own pool (`support.Gate`,
as many threads as its `limits.concurrency`) within its declared limits. sushy
exceptions become `reconciler.errors` here and nowhere else; every message passes
through the secret redactor.

Where a machine is: its ``bmc.address`` (a BMC per machine, the usual case:
iDRAC, iLO, XClarity), else the provider's ``endpoint`` (one service for many
systems: an enclosure manager, a Redfish gateway, sushy-emulator). On that
service the system is the one whose Id, UUID or Name equals ``bmc.systemId``,
else whose serial number equals ``bmc.serial``, else that has a NIC with
``bmc.mac``, else whose Name is the machine's name, else — on a per-machine BMC
with no identity declared — its only system.

Observed fields (the simulator's shape, so stages and drift rules carry over;
every enumerated value in lower case): ``power`` (on, off, powering-on,
powering-off), ``bootDevice`` (pxe, disk, cd, usb, http, bios, none) and
``bootOverride`` (target, enabled, mode: Redfish's values lower-cased, e.g.
target ``pxe``, ``hdd``, ``uefihttp``; enabled ``once``, ``continuous``),
``discovered``, ``bmc`` (each declared identity as verified), ``identity`` (id,
uuid, serial, model, manufacturer), ``health``, ``virtualMedia``, and
``inventory``: ``cpus``, ``memoryGiB``, ``disks``, ``nics`` (with MACs). A
section the BMC does not offer (no link, 404, 405, 501) is named in
``inventory.notOffered`` with the reason; one that failed otherwise is named in
``inventory.errors``. Neither makes the observation unknown: real BMCs differ.

Calls and their semantics (Pulumi style):

- `observe`: read-only. A machine whose BMC answers but holds no matching system
  is ``exists=False``; a BMC that cannot be reached makes its machines unknown
  (all unreachable: `TemporaryError`).
- `list_owned`: BMCs carry no ownership tags, so nothing is ever an orphan here:
  always empty (machines are not created or destroyed by a controller).
- `start`: idempotent by idempotency key (operation records in
  ``<state_dir>/redfish-<name>.db``): a key already used returns the recorded
  operation and sends nothing. Power actions whose target already holds finish at
  once without a reset. Actions:

  ================== ==========================================================
  power-on           Reset On (ForceOn if On is not offered); target on
  set-power          power-on or power-off, to ``args.state`` or the declared
                     ``power`` (what a stage converging ``power`` runs)
  power-off          Reset ForceOff; target off
  graceful-shutdown  Reset GracefulShutdown; target off (``shutdown`` is the same)
  reset, reboot      ForceRestart / GracefulRestart (``args.type`` overrides),
                     On when off; target on
  set-boot           ``args.device`` pxe|disk|cd|usb|http|bios (default pxe),
                     ``args.once`` (default true), ``args.mode`` uefi|legacy
  pxe-boot           set-boot pxe once, then power on (or restart); target on
  insert-media       ``args.image`` (URL), ``args.device`` cd|usb|floppy (default
                     cd), ``args.writeProtected`` (default true), ``args.boot``
                     (also set-boot cd once)
  eject-media        ``args.device`` (default: every inserted medium)
  discover,          read-only: succeed with the observed fields as the result,
  inventory          fail when no system matches
  ================== ==========================================================

  If `start` raises, the action was not sent (a `TemporaryError` may be retried;
  ``pxe-boot`` may have set the boot override, which is idempotent). Redfish has
  no idempotency key: a crash between a reset and its record makes the retry send
  it again — harmless for power-on/off (the target holds, or is pending), a
  second restart for ``reset``/``reboot``.
- `poll`: power operations compare the observed power state with the target;
  past the deadline (``args.timeout`` or ``settings.powerTimeout``, default 5m)
  they fail. Redfish reports no completion of a reset, so a reset is done when
  the BMC reports power on again. Other actions complete within `start`.
- `cancel`: a BMC cannot take back a reset: False.

Inventory and virtual media are read again only after ``inventoryTtl`` (default
10m, at most a minute when a section failed; 0 reads every time) or after an
action of this provider on the system; power and boot override are read on every
observe.

Settings: ``powerTimeout`` (duration), ``timeout`` (per request, default 30s),
``auth`` (``session``, ``basic`` or ``auto``: session with basic as fallback),
``rootPrefix`` (default ``/redfish/v1/``), ``ignoreMachineAddress`` (always use
the endpoint: a gateway). Credentials: ``username``, ``password``. TLS: verified
by default, ``tls.caBundle`` by reference, ``tls.verify: false`` is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.model.kinds import ProviderSpec
from reconciler.providers.base import (
    ActionRequest,
    Discovered,
    Observation,
    ObservationResult,
    ObservationUnknown,
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

log = structlog.get_logger("reconciler.providers.redfish")

POWER_ACTIONS = {
    "power-on": ("on", ("On", "ForceOn")),
    "power-off": ("off", ("ForceOff",)),
    "graceful-shutdown": ("off", ("GracefulShutdown",)),
    "shutdown": ("off", ("GracefulShutdown",)),
    "reset": ("on", ("ForceRestart", "GracefulRestart", "PowerCycle")),
    "reboot": ("on", ("GracefulRestart", "ForceRestart", "PowerCycle")),
}
IMMEDIATE_ACTIONS = frozenset({"set-boot", "insert-media", "eject-media", "discover", "inventory"})
ACTIONS = frozenset({*POWER_ACTIONS, *IMMEDIATE_ACTIONS, "pxe-boot", "set-power"})

BOOT_DEVICES = {
    "pxe": "Pxe",
    "disk": "Hdd",
    "hdd": "Hdd",
    "cd": "Cd",
    "usb": "Usb",
    "http": "UefiHttp",
    "bios": "BiosSetup",
    "none": "None",
}
_BOOT_NAMES = {v.lower(): k for k, v in BOOT_DEVICES.items() if k != "hdd"}
MEDIA_TYPES = {
    "cd": ("CD", "DVD"),
    "dvd": ("DVD", "CD"),
    "usb": ("USBStick",),
    "floppy": ("Floppy",),
}
NOT_OFFERED_STATUS = frozenset({404, 405, 501})


def _load_sushy() -> Any:
    try:
        import sushy
    except ImportError:  # pragma: no cover - depends on the installation
        raise PermanentError(
            "the redfish provider needs sushy: pip install 'reconciler[redfish]'"
        ) from None
    return sushy


def _value(enum_or_str: Any) -> str | None:
    if enum_or_str is None:
        return None
    return str(getattr(enum_or_str, "value", enum_or_str))


def _power(state: Any) -> str | None:
    value = _value(state)
    return (
        None
        if value is None
        else value.lower()
        .replace("poweringon", "powering-on")
        .replace("poweringoff", "powering-off")
    )


def _mac(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


@dataclass(frozen=True)
class _Target:
    """One machine to find: its declared resource, the BMC address, its declared ``bmc``."""

    ref: ResourceRef
    address: str
    bmc: Mapping[str, Any]


@dataclass
class _BmcView:
    """One BMC's systems, loaded lazily during one blocking call."""

    client: Any
    paths: list[str]
    systems: dict[str, Any] = field(default_factory=dict)
    macs: dict[str, list[str]] = field(default_factory=dict)

    def system(self, path: str) -> Any:
        if path not in self.systems:
            self.systems[path] = self.client.get_system(path)
        return self.systems[path]

    def nic_macs(self, path: str) -> list[str]:
        if path not in self.macs:
            system = self.system(path)
            try:
                members = system.ethernet_interfaces.get_members()
            except Exception:  # a system without NICs offered matches no MAC
                members = []
            self.macs[path] = [
                m
                for nic in members
                for m in (_mac(nic.mac_address), _mac(nic.permanent_mac_address))
                if m
            ]
        return self.macs[path]


class RedfishProvider:
    """Machines behind Redfish BMCs (see the module docstring)."""

    @classmethod
    def observed_fields(cls, spec: ProviderSpec) -> Mapping[str, frozenset[str]]:
        """What `observe` reports, per kind (the loader checks `converges` against it)."""
        return {
            "Machine": frozenset(
                {
                    "power",
                    "bootDevice",
                    "bootOverride",
                    "discovered",
                    "bmc",
                    "identity",
                    "health",
                    "virtualMedia",
                    "inventory",
                }
            )
        }

    def __init__(self, context: ProviderContext) -> None:
        self._sushy = _load_sushy()
        self.name = context.name
        self.context = context
        settings = dict(context.spec.settings)
        self._endpoint = _normalize(context.spec.endpoint) if context.spec.endpoint else None
        self._ignore_machine_address = bool(settings.get("ignoreMachineAddress", False))
        self._power_timeout = duration_setting(context, "powerTimeout", 300.0)
        self._timeout = duration_setting(context, "timeout", 30.0)
        self._inventory_ttl = duration_setting(context, "inventoryTtl", 600.0)
        self._inventory: dict[tuple[str, str], tuple[float, dict[str, Any], Any]] = {}
        self._auth_mode = str(settings.get("auth", "auto"))
        if self._auth_mode not in ("auto", "session", "basic"):
            raise PermanentError(
                f"provider {self.name}: settings.auth must be auto, session or basic"
            )
        self._root_prefix = str(settings.get("rootPrefix", "/redfish/v1/"))
        self._username = credential(context, "username")
        self._password = credential(context, "password")
        self._verify = tls_verify(context)
        self._gate = Gate.from_context(context)
        self._store = OperationStore(context.state_dir / f"redfish-{context.name}.db")
        self._clients: dict[str, Any] = {}
        self._address_locks = KeyedLocks()
        self._key_locks = KeyedLocks()

    # --- connections and errors ---------------------------------------------------

    def _address(self, ref: ResourceRef) -> str:
        bmc = dict(ref.declared.get("bmc") or {})
        address = bmc.get("address")
        if address and not self._ignore_machine_address:
            return _normalize(str(address))
        if self._endpoint:
            return self._endpoint
        raise PermanentError(
            f"{ref.key}: no BMC address (set spec.bmc.address or the provider's endpoint)"
        )

    def _connect(self, address: str) -> Any:
        sushy = self._sushy
        auth_cls = {
            "auto": sushy.auth.SessionOrBasicAuth,
            "session": sushy.auth.SessionAuth,
            "basic": sushy.auth.BasicAuth,
        }[self._auth_mode]
        auth = auth_cls(username=self._username, password=self._password)
        return sushy.Sushy(
            address,
            auth=auth,
            root_prefix=self._root_prefix,
            verify=self._verify,
            # No in-call retries of 5xx (the executor retries, with its own backoff);
            # sushy still tries a refused or reset connection 3 times, this far apart:
            server_side_retries=0,
            server_side_retries_delay=0.5,
            read_timeout=self._timeout,
            connect_timeout=min(self._timeout, 10.0),
        )

    async def _client(self, address: str) -> Any:
        client = self._clients.get(address)
        if client is not None:
            return client
        async with self._address_locks.hold(address):  # one login per BMC, BMCs in parallel
            client = self._clients.get(address)
            if client is None:
                client = await self._gate.thread(self._guard(self._connect), address)
                self._clients[address] = client
            return client

    def _guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with sushy's exceptions translated into ours (runs in the thread)."""

        def call(*args: Any) -> Any:
            try:
                return fn(*args)
            except ReconcilerError:
                raise
            except Exception as exc:
                raise self._translate(exc) from None

        return call

    def _translate(self, exc: Exception) -> ReconcilerError:
        exceptions = self._sushy.exceptions
        text = scrub(exc)
        if isinstance(exc, exceptions.AccessError):
            return PermanentError(f"redfish: the BMC refused the credentials: {text}")
        if isinstance(exc, exceptions.ConnectionError):
            if is_tls_failure(exc):
                return PermanentError(tls_message("redfish", exc))
            return TemporaryError(f"redfish: BMC unreachable: {text}")
        if isinstance(exc, exceptions.HTTPError):
            status = getattr(exc, "status_code", None) or 0
            if status == 429 or status >= 500:
                return TemporaryError(f"redfish: BMC answered {status}: {text}")
            return PermanentError(f"redfish: BMC answered {status}: {text}")
        if isinstance(exc, exceptions.SushyError):
            return PermanentError(f"redfish: {text}")
        if isinstance(exc, OSError):
            return TemporaryError(f"redfish: {text}")
        return PermanentError(f"redfish: {type(exc).__name__}: {text}")

    # --- finding and reading systems (blocking; run in a thread) -------------------

    def _view(self, client: Any) -> _BmcView:
        return _BmcView(client, list(client.get_system_collection().members_identities))

    def _resolve(self, view: _BmcView, target: _Target) -> tuple[Any, dict[str, Any]] | None:
        """The system of one machine and the verified ``bmc`` fields, or None."""
        bmc = target.bmc
        verified: dict[str, Any] = {}
        if bmc.get("address"):
            verified["address"] = bmc["address"]
        wanted_id = bmc.get("systemId")
        chosen: str | None = None
        if wanted_id:
            for path in view.paths:
                if path.rstrip("/").rsplit("/", 1)[-1] == wanted_id:
                    chosen = path
                    break
            else:
                for path in view.paths:
                    system = view.system(path)
                    if wanted_id in (system.identity, system.uuid, system.name):
                        chosen = path
                        break
            if chosen is None:
                return None
            verified["systemId"] = wanted_id
        if chosen is None and bmc.get("serial"):
            for path in view.paths:
                serial = view.system(path).serial_number
                if serial and serial.lower() == str(bmc["serial"]).lower():
                    chosen = path
                    break
            if chosen is None:
                return None
        if chosen is None and bmc.get("mac"):
            for path in view.paths:
                if _mac(bmc["mac"]) in view.nic_macs(path):
                    chosen = path
                    break
            if chosen is None:
                return None
        if chosen is None:
            for path in view.paths:
                if view.system(path).name == target.ref.name:
                    chosen = path
                    break
        if chosen is None and bmc.get("address") and len(view.paths) == 1:
            chosen = view.paths[0]
        if chosen is None:
            return None
        system = view.system(chosen)
        if bmc.get("serial"):
            verified["serial"] = (
                bmc["serial"]
                if (system.serial_number or "").lower() == str(bmc["serial"]).lower()
                else system.serial_number
            )
        if bmc.get("mac"):
            macs = view.nic_macs(chosen)
            verified["mac"] = (
                bmc["mac"] if _mac(bmc["mac"]) in macs else (macs[0] if macs else None)
            )
        return system, verified

    def _sections(self, system: Any, fresh: bool) -> tuple[dict[str, Any], Any]:
        """Inventory and virtual media of one system, from the cache while it is young.

        Hardware rarely changes and a BMC answers slowly (a GET can take a second), so
        these are read again only after ``inventoryTtl`` (a minute at most when a
        section failed), or after an action of this provider on the system.
        """
        cache_key = (system._conn._url, system.path)
        now = time.monotonic()
        cached = self._inventory.get(cache_key)
        if not fresh and cached is not None and now < cached[0]:
            return cached[1], cached[2]
        exceptions = self._sushy.exceptions
        not_offered: dict[str, str] = {}
        errors: dict[str, str] = {}

        def section(name: str, read: Callable[[], Any]) -> Any:
            try:
                return read()
            except exceptions.MissingAttributeError:
                not_offered[name] = "the BMC does not link this section"
            except exceptions.HTTPError as exc:
                status = getattr(exc, "status_code", None)
                if status in NOT_OFFERED_STATUS:
                    not_offered[name] = f"the BMC answered {status}"
                elif status in (401, 403):
                    raise
                else:
                    errors[name] = scrub(f"the BMC answered {status}: {exc}")
            except exceptions.ConnectionError:
                raise
            except Exception as exc:  # one malformed section does not hide the others
                errors[name] = scrub(f"{type(exc).__name__}: {exc}")
            return None

        inventory: dict[str, Any] = {
            "vendor": system.manufacturer,
            "model": system.model,
            "serial": system.serial_number,
            "uuid": system.uuid,
        }
        cpus = section("cpus", lambda: _processors(system))
        if cpus is not None:
            inventory["cpus"] = cpus
        memory = section("memoryGiB", lambda: _memory(system))
        if memory is not None:
            inventory["memoryGiB"] = memory
        disks = _disks(system, section)
        if disks is not None:
            inventory["disks"] = disks
        nics = section("nics", lambda: _nics(system))
        if nics is not None:
            inventory["nics"] = nics
        media = section("virtualMedia", lambda: _virtual_media(system))
        inventory["notOffered"] = dict(sorted(not_offered.items()))
        inventory["errors"] = dict(sorted(errors.items()))
        # a section that failed is tried again sooner (a minute at most)
        ttl = min(self._inventory_ttl, 60.0) if errors else self._inventory_ttl
        self._inventory[cache_key] = (now + ttl, inventory, media)
        return inventory, media

    def _forget(self, system: Any) -> None:
        self._inventory.pop((system._conn._url, system.path), None)

    def _read(
        self, system: Any, verified: Mapping[str, Any], *, fresh: bool = False
    ) -> dict[str, Any]:
        """The observed fields of one system (see the module docstring)."""
        inventory, media = self._sections(system, fresh)
        boot = system.boot
        boot_target = _lower(_value(getattr(boot, "target", None)))
        health = _value(getattr(system.status, "health", None)) if system.status else None
        return {
            "power": _power(system.power_state),
            "bootDevice": _BOOT_NAMES.get(boot_target or "", boot_target) or None,
            "bootOverride": {
                "target": boot_target,
                "enabled": _lower(_value(getattr(boot, "enabled", None))),
                "mode": _lower(_value(getattr(boot, "mode", None))),
            },
            "discovered": True,
            "bmc": dict(verified),
            "identity": {
                "id": system.identity,
                "uuid": system.uuid,
                "name": system.name,
                "serial": system.serial_number,
                "model": system.model,
                "manufacturer": system.manufacturer,
                "path": system.path,
            },
            "health": _lower(health),
            "virtualMedia": media,
            "inventory": inventory,
        }

    def _observe_bmc(self, client: Any, targets: list[_Target]) -> dict[str, ObservationResult]:
        view = self._view(client)
        out: dict[str, ObservationResult] = {}
        for target in targets:
            found = self._resolve(view, target)
            key = target.ref.key
            if found is None:
                out[key] = Observation(key, False, {})
            else:
                out[key] = Observation(key, True, self._read(*found))
        return out

    # --- the protocol ---------------------------------------------------------------

    def _targets(self, resources: Sequence[ResourceRef]) -> tuple[dict[str, list[_Target]], dict]:
        groups: dict[str, list[_Target]] = {}
        invalid: dict[str, ObservationResult] = {}
        for ref in resources:
            try:
                address = self._address(ref)
            except PermanentError as exc:
                invalid[ref.key] = ObservationUnknown(ref.key, str(exc))
                continue
            bmc = dict(ref.declared.get("bmc") or {})
            groups.setdefault(address, []).append(_Target(ref, address, bmc))
        return groups, invalid

    async def observe(self, resources: Sequence[ResourceRef]) -> Mapping[str, ObservationResult]:
        groups, out = self._targets(resources)

        async def one(address: str, targets: list[_Target]) -> dict[str, ObservationResult]:
            client = await self._client(address)
            return await self._gate.thread(self._guard(self._observe_bmc), client, targets)

        results = await asyncio.gather(
            *(one(a, t) for a, t in groups.items()), return_exceptions=True
        )
        failures: list[BaseException] = []
        for (address, targets), result in zip(groups.items(), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, ReconcilerError):
                    raise result
                failures.append(result)
                for target in targets:
                    out[target.ref.key] = ObservationUnknown(
                        target.ref.key, f"BMC {address}: {scrub(result)}"
                    )
            else:
                out.update(result)
        if groups and len(failures) == len(groups):
            first = failures[0]
            if isinstance(first, TemporaryError):
                raise first
        return {r.key: out[r.key] for r in resources}

    def _discover_bmc(self, client: Any, address: str, targets: list[_Target]) -> list[Discovered]:
        """The systems of one BMC that no declared machine resolves to."""
        view = self._view(client)
        claimed = set()
        for target in targets:
            found = self._resolve(view, target)
            if found is not None:
                claimed.add(found[0].path)
        out = []
        for path in view.paths:
            system = view.system(path)
            if system.path in claimed:
                continue
            fields = self._read(system, {})
            macs = view.nic_macs(path)
            identity = {
                "address": None if address == self._endpoint else address,
                "systemId": system.identity,
                "serial": system.serial_number,
                "mac": macs[0] if macs else None,
            }
            facts = {k: fields[k] for k in ("power", "health", "identity", "inventory")}
            out.append(
                Discovered(
                    "Machine",
                    system.name or "",
                    {k: v for k, v in identity.items() if v},
                    facts,
                    self.name,
                )
            )
        return out

    async def discover(self, declared: Sequence[ResourceRef]) -> Sequence[Discovered]:
        """Systems on the provider's endpoint and on the declared machines' BMCs that no
        declared machine resolves to (the same rules as `observe`). BMCs carry no owner
        marks: every system not declared is listed. A BMC that cannot be read raises."""
        groups, _invalid = self._targets(declared)
        if self._endpoint:
            groups.setdefault(self._endpoint, [])
        found: list[Discovered] = []
        for address, targets in sorted(groups.items()):
            client = await self._client(address)
            found += await self._gate.thread(
                self._guard(self._discover_bmc), client, address, targets
            )
        return found

    async def list_owned(self) -> Sequence[OwnedResource]:
        """BMCs carry no ownership tags and machines are never created: nothing to prune."""
        return []

    async def start(self, request: ActionRequest) -> OperationHandle:
        if request.action not in ACTIONS:
            raise PermanentError(
                f"redfish: unknown action {request.action!r}; known: {', '.join(sorted(ACTIONS))}"
            )
        async with self._key_locks.hold(request.idempotency_key):
            record = existing_operation(self._store, request)
            if record is not None:
                return record.handle(self.name)
            address = self._address(request.resource)
            client = await self._client(address)
            started: OperationRecord = await self._gate.thread(
                self._guard(self._start), client, address, request
            )
            self._store.put(started)
            record = started
            log.info(
                "redfish action started",
                provider=self.name,
                key=request.key,
                action=request.action,
                operation=record.operation_id,
                phase=record.phase.value,
            )
            return record.handle(self.name)

    def _start(self, client: Any, address: str, request: ActionRequest) -> OperationRecord:
        """Find the system and send the action (blocking)."""
        ref, args, action = request.resource, dict(request.args), request.action
        op_id = (
            "redfish-"
            + hashlib.sha256(f"{self.name}\0{request.idempotency_key}".encode()).hexdigest()[:24]
        )
        now = time.time()
        base = OperationRecord(
            op_id, request.idempotency_key, ref.key, action, OperationPhase.RUNNING, "", {}, now
        )
        view = self._view(client)
        found = self._resolve(view, _Target(ref, address, dict(ref.declared.get("bmc") or {})))
        if found is None:
            if action in ("discover", "inventory"):
                return _done(base, OperationPhase.FAILED, "no system on the BMC matches bmc")
            raise PermanentError(f"redfish: {ref.key}: no system on {address} matches its bmc")
        system, verified = found
        data: dict[str, Any] = {"address": address, "system": system.path}

        if action in ("discover", "inventory"):
            fields = self._read(system, verified, fresh=True)
            return _done(base, OperationPhase.SUCCEEDED, "", data, fields)
        self._forget(system)
        if action == "set-boot":
            self._set_boot(system, str(args.get("device", "pxe")), args)
            return _done(
                base, OperationPhase.SUCCEEDED, "", data, {"bootDevice": args.get("device", "pxe")}
            )
        if action == "insert-media":
            result = self._insert_media(system, args)
            return _done(base, OperationPhase.SUCCEEDED, "", data, result)
        if action == "eject-media":
            result = self._eject_media(system, args)
            return _done(base, OperationPhase.SUCCEEDED, "", data, result)

        timeout = arg_duration(args, "timeout", self._power_timeout)
        power = _power(system.power_state)
        if action == "set-power":
            action = _power_action(args, ref)
        if action == "pxe-boot":
            self._set_boot(system, "pxe", {"once": True})
            reset: tuple[str, ...]
            target, reset = "on", ("On", "ForceOn") if power == "off" else ("ForceRestart",)
        else:
            target, reset = POWER_ACTIONS[action]
            if action in ("reset", "reboot") and power == "off":
                reset = ("On", "ForceOn")
            elif action not in ("reset", "reboot") and power == target:
                return _done(base, OperationPhase.SUCCEEDED, f"already {target}", data)
        if args.get("type"):
            reset = (str(args["type"]),)
        allowed = {_value(v) for v in system.get_allowed_reset_system_values()}
        chosen = next((r for r in reset if r in allowed), None)
        if chosen is None:
            raise PermanentError(
                f"redfish: {ref.key}: the BMC offers none of {', '.join(reset)} "
                f"(offers {', '.join(sorted(a for a in allowed if a))})"
            )
        system.reset_system(self._sushy.ResetType(chosen))
        data.update(target=target, resetType=chosen, deadline=now + timeout, timeout=timeout)
        return OperationRecord(
            op_id, request.idempotency_key, ref.key, action, OperationPhase.RUNNING,
            f"{chosen} sent; waiting for power {target}", data, now,
        )  # fmt: skip

    def _set_boot(self, system: Any, device: str, args: Mapping[str, Any]) -> None:
        sushy = self._sushy
        target = BOOT_DEVICES.get(device.lower())
        if target is None:
            raise PermanentError(
                f"redfish: unknown boot device {device!r}; known: {', '.join(sorted(BOOT_DEVICES))}"
            )
        enabled = "Once" if args.get("once", True) else "Continuous"
        mode = args.get("mode")
        modes = {"uefi": "UEFI", "legacy": "Legacy"}
        if mode is not None and str(mode).lower() not in modes:
            raise PermanentError("redfish: args.mode must be uefi or legacy")
        system.set_system_boot_options(
            target=sushy.BootSource(target),
            enabled=sushy.BootSourceOverrideEnabled(enabled),
            mode=sushy.BootSourceOverrideMode(modes[str(mode).lower()]) if mode else None,
        )

    def _media(self, system: Any, device: str | None) -> list[Any]:
        members = system.virtual_media.get_members()
        if device is None:
            return members
        wanted = MEDIA_TYPES.get(device.lower())
        if wanted is None:
            raise PermanentError(
                f"redfish: unknown media device {device!r}; known: {', '.join(MEDIA_TYPES)}"
            )
        return [m for m in members if {_value(t) for t in m.media_types or ()} & set(wanted)]

    def _insert_media(self, system: Any, args: Mapping[str, Any]) -> dict[str, Any]:
        image = args.get("image")
        if not image:
            raise PermanentError("redfish: insert-media needs args.image (a URL)")
        device = str(args.get("device", "cd"))
        candidates = self._media(system, device)
        if not candidates:
            raise PermanentError(f"redfish: the BMC offers no {device} virtual media")
        medium = next((m for m in candidates if m.image == image and m.inserted), None)
        if medium is None:
            medium = candidates[0]
            if medium.inserted:
                medium.eject_media()
                medium.refresh()
            medium.insert_media(
                str(image), inserted=True, write_protected=bool(args.get("writeProtected", True))
            )
        if args.get("boot"):
            self._set_boot(system, "usb" if device.lower() == "usb" else "cd", {"once": True})
        return {"device": medium.identity, "image": image}

    def _eject_media(self, system: Any, args: Mapping[str, Any]) -> dict[str, Any]:
        device = args.get("device")
        ejected = []
        for medium in self._media(system, str(device) if device else None):
            if medium.inserted:
                medium.eject_media()
                ejected.append(medium.identity)
        return {"ejected": ejected}

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        record = self._store.get(handle.operation_id)
        if record is None:
            raise PermanentError(f"redfish: no operation {handle.operation_id}")
        if record.phase.done:
            return record.status()
        data = record.data
        client = await self._client(str(data["address"]))

        def read_power() -> str | None:
            return _power(client.get_system(str(data["system"])).power_state)

        power = await self._gate.thread(self._guard(read_power))
        now = time.time()
        if power == data["target"]:
            record = self._store.finish(
                record, OperationPhase.SUCCEEDED, f"power {power}", result={"power": power}
            )
            return record.status()
        if now >= float(data["deadline"]):
            record = self._store.finish(
                record,
                OperationPhase.FAILED,
                f"power is {power}, not {data['target']}, {data['timeout']:.0f}s after "
                f"{data['resetType']}",
                result={"power": power},
            )
            return record.status()
        elapsed = now - record.started_at
        progress = min(0.99, elapsed / float(data["timeout"])) if data["timeout"] else 0.99
        return OperationStatus(
            record.operation_id,
            OperationPhase.RUNNING,
            progress,
            f"power {power}, waiting for {data['target']}",
        )

    async def cancel(self, handle: OperationHandle) -> bool:
        """A reset cannot be taken back."""
        if self._store.get(handle.operation_id) is None:
            raise PermanentError(f"redfish: no operation {handle.operation_id}")
        return False

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await self._gate.unlimited(_logout, client)
            except Exception as exc:  # a session the BMC already dropped
                log.debug("redfish session close failed", error=scrub(exc))
        self._gate.close()
        self._store.close()


def _done(
    base: OperationRecord,
    phase: OperationPhase,
    message: str,
    data: Mapping[str, Any] | None = None,
    result: Mapping[str, Any] | None = None,
) -> OperationRecord:
    return OperationRecord(
        base.operation_id,
        base.idempotency_key,
        base.key,
        base.action,
        phase,
        message,
        {**(data or {}), "result": dict(result or {})},
        base.started_at,
    )


def _lower(value: str | None) -> str | None:
    """Every enumerated value observed is lower-case (`Pxe` -> `pxe`, `OK` -> `ok`)."""
    return value.lower() if value else None


def _power_action(args: Mapping[str, Any], ref: ResourceRef) -> str:
    """`set-power`: power-on or power-off, to `args.state` or the declared `power`."""
    state = str(args.get("state") or ref.declared.get("power") or "")
    if state not in ("on", "off"):
        raise PermanentError(
            f"redfish: set-power of {ref.key} needs args.state or a declared power (on or off)"
        )
    return "power-on" if state == "on" else "power-off"


def _logout(client: Any) -> None:
    """End the BMC session (if one was opened) and the HTTP connections."""
    auth = getattr(client, "_auth", None)
    if auth is not None:
        auth.close()
    client._conn.close()


def _normalize(address: str) -> str:
    address = address.strip().rstrip("/")
    return address if "://" in address else f"https://{address}"


def _processors(system: Any) -> dict[str, Any]:
    members = system.processors.get_members()
    cpus = [p for p in members if (_value(p.processor_type) or "CPU").upper() == "CPU"]
    models = sorted({p.model for p in cpus if p.model})
    return {
        "sockets": len(cpus),
        "cores": sum(p.total_cores or 0 for p in cpus),
        "threads": sum(p.total_threads or 0 for p in cpus),
        "model": models[0] if len(models) == 1 else (models or None),
    }


def _memory(system: Any) -> float | None:
    """Total memory in GiB: the summary when given, else the sum of the DIMMs."""
    summary = getattr(system.memory_summary, "size_gib", None) if system.memory_summary else None
    if summary:
        return float(summary)
    link = (system.json.get("Memory") or {}).get("@odata.id")
    if not link:
        raise _missing(system, "Memory")
    collection = system._conn.get(link).json()
    total_mib = 0
    for member in collection.get("Members", []):
        dimm = system._conn.get(member["@odata.id"]).json()
        total_mib += int(dimm.get("CapacityMiB") or 0)
    return round(total_mib / 1024, 1)


def _missing(system: Any, attribute: str) -> Exception:
    from sushy import exceptions

    return exceptions.MissingAttributeError(attribute=attribute, resource=system.path)


def _disks(system: Any, section: Callable[[str, Callable[[], Any]], Any]) -> list[dict] | None:
    """Drives from Storage, else devices from SimpleStorage; None if neither is offered."""
    storage = section("storage", lambda: _storage_drives(system))
    simple = None
    if storage is None:
        simple = section("simpleStorage", lambda: _simple_storage_devices(system))
    return storage if storage is not None else simple


def _storage_drives(system: Any) -> list[dict[str, Any]]:
    disks = []
    for storage in system.storage.get_members():
        for drive in storage.drives if storage.drives_identities else ():
            disks.append(
                {
                    "name": drive.name or drive.identity,
                    "id": drive.identity,
                    "type": (_value(drive.media_type) or "").lower() or None,
                    "protocol": _value(drive.protocol),
                    "sizeGB": round(drive.capacity_bytes / 1e9) if drive.capacity_bytes else None,
                    "serial": drive.serial_number,
                    "model": drive.model,
                    "storage": storage.identity,
                }
            )
    return disks


def _simple_storage_devices(system: Any) -> list[dict[str, Any]]:
    disks = []
    for controller in system.simple_storage.get_members():
        for device in controller.devices or ():
            disks.append(
                {
                    "name": device.name,
                    "sizeGB": round(device.capacity_bytes / 1e9) if device.capacity_bytes else None,
                    "storage": controller.identity,
                }
            )
    return disks


def _nics(system: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": nic.identity,
            "mac": _mac(nic.mac_address) or _mac(nic.permanent_mac_address),
            "speedGbps": nic.speed_mbps / 1000 if nic.speed_mbps else None,
            "state": _value(getattr(nic.status, "state", None)) if nic.status else None,
        }
        for nic in system.ethernet_interfaces.get_members()
    ]


def _virtual_media(system: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": medium.identity,
            "mediaTypes": [_value(t) for t in medium.media_types or ()],
            "inserted": bool(medium.inserted),
            "image": medium.image or None,
        }
        for medium in system.virtual_media.get_members()
    ]
