"""The simulator provider: a provider the controller observes and acts on, a believable
fleet kept in SQLite — the embedded default.

An edge of the flow (behind `reconciler.providers.base.Provider`), used by the demo,
the tests and the benchmarks to exercise the engine without hardware. Its state
lives in ``<state_dir>/simulator.db`` (WAL), so runs build on each other and a
restarted process sees operations complete: an operation's completion time is a
wall-clock instant stored with it, and its effect is applied the first time anyone
looks after that instant.

Machines (bare metal) exist physically: the first action on one enrols it, with an
inventory (CPUs, memory, disks, NICs with MACs) derived from its name; `seed`
puts machines in place beforehand, as a BMC reports them before anyone provisions
them. Instances and Resources (other managed objects) exist from `create` (an
Instance pending, then running) until `delete`.

Actions and their effect on observed fields, applied when the operation succeeds:

=============== ============================================================
power-on/off    ``power``: on / off (``reset`` and ``reboot``: on)
set-power       ``power``: ``args.state`` or the declared ``power``
set-state       an Instance's ``state``: ``args.state`` or the declared ``state``
set-boot        ``bootDevice``: ``args.device`` (default pxe); ``pxe-boot`` also powers on
discover        ``discovered``: true (``inventory`` is the same)
classify        ``params.role``: the declared role, or what matching ``args.rules`` set
burn-in         ``burnIn.result``: passed; ``params.burnIn``: the declared param (or true)
install-os      ``params.os``/``osVersion``: ``args.os``/``version`` or the declared params;
                boots from disk
install-app     ``params.application``/``applicationVersion``: likewise
join            ``params.cluster``: ``args.cluster`` or the declared param
configure       every arg ``k`` (but ``set``) becomes ``params.k``
resize          ``size``: ``args.size`` or the declared size
create          an Instance: pending -> running; a Resource: exists; a Machine: discovered
delete          removed (``decommission`` is the same)
=============== ============================================================

Any action may carry ``args.set``: dotted paths to values set on success
(``{"params.role": "web"}``). Settings (the Provider document's ``spec.settings``):
``latency`` or ``latencySeconds`` (seconds or ``"2s"``, or a mapping action ->
latency with ``default``), ``failureRate`` (0..1, decided per idempotency key with
the ``seed``ed RNG: the same keys fail in every run; like any idempotent API, a
failed operation stays failed under its key, so a new attempt needs a new key).

Every action started is written to ``action_log`` with its idempotency key;
starting again with a key already used returns the existing operation and is
logged as ``repeated`` (never ``started`` twice) — the executor's crash test
asserts on this log: nothing started twice, nothing issued again once
acknowledged. ``drift``, ``remove``, ``seed`` and ``action_log`` are the outside
world's side of the same state (a field changed by hand, a machine pulled, a rack put in
place, what the fleet was asked to do): the console (`console.py`) and the tests call
them; the controller never does. This module never imports the console.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from reconciler.errors import PermanentError, TemporaryError
from reconciler.model.common import parse_duration
from reconciler.model.kinds import ProviderSpec
from reconciler.providers.base import (
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
from reconciler.secrets import REDACTOR

DB_NAME = "simulator.db"

ACTIONS = frozenset(
    {
        "power-on",
        "power-off",
        "set-power",
        "set-state",
        "reset",
        "reboot",
        "set-boot",
        "pxe-boot",
        "discover",
        "inventory",
        "classify",
        "burn-in",
        "install-os",
        "install-app",
        "join",
        "configure",
        "resize",
        "create",
        "delete",
        "decommission",
    }
)
DELETES = frozenset({"delete", "decommission"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    repository TEXT NOT NULL,
    labels TEXT NOT NULL,
    fields TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_owner ON resources (provider, repository);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    request TEXT NOT NULL,
    started_at REAL NOT NULL,
    complete_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_running ON operations (state, complete_at);
CREATE TABLE IF NOT EXISTS action_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    provider TEXT NOT NULL,
    event TEXT NOT NULL,
    idempotency_key TEXT,
    operation_id TEXT,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def inventory(name: str) -> dict[str, Any]:
    """A machine's hardware, the same every time for the same name."""
    rng = random.Random(hashlib.sha256(name.encode()).digest())
    sockets = rng.choice((1, 2, 2, 4))
    cores = rng.choice((8, 16, 24, 32))
    disks = [
        {
            "name": f"disk{i}",
            "type": rng.choice(("ssd", "nvme", "hdd")),
            "sizeGB": rng.choice((480, 960, 1920, 3840)),
            "serial": f"S{rng.getrandbits(40):010X}",
        }
        for i in range(rng.choice((1, 2, 2, 4)))
    ]
    nics = [
        {
            "name": f"eno{i + 1}",
            "mac": "02:" + ":".join(f"{rng.getrandbits(8):02x}" for _ in range(5)),
            "speedGbps": rng.choice((10, 25, 25, 100)),
        }
        for i in range(rng.choice((2, 2, 4)))
    ]
    return {
        "vendor": rng.choice(("Lenovo", "Dell", "HPE", "Supermicro")),
        "serial": f"SN{rng.getrandbits(32):08X}",
        "cpus": {"sockets": sockets, "cores": sockets * cores, "model": "x86_64"},
        "memoryGiB": rng.choice((128, 256, 384, 512, 1024)),
        "disks": disks,
        "nics": nics,
    }


def _get(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _latencies(setting: Any) -> dict[str, float]:
    if setting is None:
        return {"default": 0.0}
    if isinstance(setting, Mapping):
        out = {str(k): parse_duration(v) for k, v in setting.items()}
        out.setdefault("default", 0.0)
        return out
    return {"default": parse_duration(setting)}


class SimulatorProvider:
    """A simulated fleet behind the provider protocol (see the module docstring)."""

    OBSERVES: ClassVar[Mapping[str, frozenset[str]]] = {
        "Machine": frozenset(
            {"power", "bootDevice", "discovered", "inventory", "params", "bmc", "rack", "burnIn"}
        ),
        "Instance": frozenset({"state", "size", "image", "region", "zone", "params", "privateIp"}),
        "Resource": frozenset({"type", "params"}),
    }

    @classmethod
    def observed_fields(cls, spec: ProviderSpec) -> Mapping[str, frozenset[str]]:
        """What `observe` reports, per kind (the loader checks `converges` against it)."""
        return cls.OBSERVES

    def __init__(
        self,
        context: ProviderContext,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = context.name
        self.repository = context.repository
        settings = dict(context.spec.settings)
        self._latency = _latencies(settings.get("latency", settings.get("latencySeconds")))
        self._failure_rate = float(settings.get("failureRate", 0.0))
        self._seed = str(settings.get("seed", 0))
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, dict[str, Any]]] = {}
        context.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = context.state_dir / DB_NAME
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise TemporaryError(f"simulator state {self.path}: {exc}") from None

    @classmethod
    def open(
        cls,
        state_dir: Path | str,
        *,
        name: str = "simulator",
        repository: str = "default",
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> SimulatorProvider:
        """A simulator without a Provider document (tests, benchmarks, the console)."""
        spec = ProviderSpec(type="simulator", settings=settings)
        context = ProviderContext(name, spec, Path(state_dir), repository)
        return cls(context, clock=clock)

    # --- storage ------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise TemporaryError(f"simulator state {self.path}: {exc}") from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read, after settling due operations (a write only if any are due)."""
        with self._lock:
            try:
                due = self._db.execute(
                    "SELECT 1 FROM operations WHERE state = 'running' AND complete_at <= ? LIMIT 1",
                    (self._clock(),),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                raise TemporaryError(f"simulator state {self.path}: {exc}") from None
        if due:
            with self._transaction() as db:
                self._settle(db)
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    yield self._db
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise TemporaryError(f"simulator state {self.path}: {exc}") from None

    def _log(
        self,
        db: sqlite3.Connection,
        event: str,
        key: str,
        action: str,
        *,
        idempotency_key: str | None = None,
        operation_id: str | None = None,
        detail: Any = None,
    ) -> None:
        db.execute(
            "INSERT INTO action_log (at, provider, event, idempotency_key, operation_id, key,"
            " action, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._clock(),
                self.name,
                event,
                idempotency_key,
                operation_id,
                key,
                action,
                _dumps(REDACTOR.data(detail or {})),
            ),
        )

    def _fields(self, db: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        row = db.execute("SELECT fields FROM resources WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _settle(self, db: sqlite3.Connection) -> None:
        """Apply the effect of every operation whose completion time has passed."""
        now = self._clock()
        due = db.execute(
            "SELECT id, idempotency_key, key, action, request, outcome, message FROM operations"
            " WHERE state = 'running' AND complete_at <= ? ORDER BY complete_at, id",
            (now,),
        ).fetchall()
        for op_id, idem, key, action, request_json, outcome, message in due:
            request = ActionRequest.from_dict(json.loads(request_json))
            if outcome == "succeeded":
                fields = self._fields(db, key)
                if action in DELETES:
                    db.execute("DELETE FROM resources WHERE key = ?", (key,))
                elif fields is not None:
                    _apply_effect(fields, request)
                    db.execute(
                        "UPDATE resources SET fields = ? WHERE key = ?", (_dumps(fields), key)
                    )
            elif action == "create":
                # A failed create leaves nothing behind.
                db.execute("DELETE FROM resources WHERE key = ?", (key,))
            db.execute("UPDATE operations SET state = ? WHERE id = ?", (outcome, op_id))
            self._log(
                db, outcome, key, action, idempotency_key=idem, operation_id=op_id,
                detail={"message": message} if message else None,
            )  # fmt: skip

    def _parsed(self, key: str, text: str) -> dict[str, Any]:
        """Fields parsed from their stored JSON, reused while the text is unchanged
        (what an informer cache does for a real API): a no-change observe of a large
        fleet costs a string comparison per resource instead of a JSON parse."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == text:
            return cached[1]
        fields: dict[str, Any] = json.loads(text)
        self._cache[key] = (text, fields)
        return fields

    # --- the protocol ---------------------------------------------------------

    async def observe(self, resources: Sequence[ResourceRef]) -> Mapping[str, ObservationResult]:
        """Every requested key: its fields if it exists, `exists=False` otherwise."""
        keys = [r.key for r in resources]
        found: dict[str, dict[str, Any]] = {}
        with self._reading() as db:
            for i in range(0, len(keys), 900):
                chunk = keys[i : i + 900]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, fields FROM resources WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update((k, self._parsed(k, f)) for k, f in rows)
        return {
            key: Observation(key, True, found[key]) if key in found else Observation(key, False, {})
            for key in keys
        }

    async def list_owned(self) -> Sequence[OwnedResource]:
        """Everything this provider enrolled or created for this repository (identity and
        labels; fields come from `observe`)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT key, kind, name, repository, labels FROM resources"
                " WHERE provider = ? AND repository = ? ORDER BY key",
                (self.name, self.repository),
            ).fetchall()
        return [
            OwnedResource(
                key,
                kind,
                name,
                repo,
                {} if labels == "{}" else json.loads(labels),
                provider=self.name,
            )
            for key, kind, name, repo, labels in rows
        ]

    async def discover(self, declared: Sequence[ResourceRef]) -> Sequence[Discovered]:
        """What this provider holds with no owner (`seed(..., owner="")`: machines racked
        and cabled, never enrolled), but the `declared` ones; another repository's
        records and our own (declared, or orphans) are not listed."""
        keys = {r.key for r in declared}
        claims = [_identity(dict(r.declared.get("bmc") or {})) for r in declared]
        with self._reading() as db:
            rows = db.execute(
                "SELECT key, kind, name, fields FROM resources"
                " WHERE provider = ? AND repository = '' ORDER BY key",
                (self.name,),
            ).fetchall()
        found = []
        for key, kind, name, text in rows:
            fields = json.loads(text)
            if key in keys or _claimed(fields, claims):
                continue
            identity: dict[str, Any] = {}
            if kind == "Machine":
                identity = {k: v for k, v in dict(fields.get("bmc") or {}).items() if v}
                if fields.get("rack"):
                    identity["rack"] = fields["rack"]
            elif kind == "Resource":
                identity = {"type": fields.get("type")}
            facts = {k: v for k, v in fields.items() if k not in ("bmc", "rack")}
            found.append(Discovered(kind, name, identity, facts, self.name))
        return found

    async def start(self, request: ActionRequest) -> OperationHandle:
        """Acknowledged at once; idempotent by `request.idempotency_key` (see module doc)."""
        if request.action not in ACTIONS:
            raise PermanentError(
                f"simulator: unknown action {request.action!r}; known: {', '.join(sorted(ACTIONS))}"
            )
        op_id = "op-" + hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:20]
        handle = OperationHandle(
            self.name, op_id, request.idempotency_key, request.key, request.action
        )
        ref = request.resource
        with self._transaction() as db:
            self._settle(db)
            existing = db.execute(
                "SELECT id, key, action FROM operations WHERE idempotency_key = ?",
                (request.idempotency_key,),
            ).fetchone()
            if existing is not None:
                if (existing[1], existing[2]) != (request.key, request.action):
                    raise PermanentError(
                        f"idempotency key {request.idempotency_key!r} was used for "
                        f"{existing[2]} on {existing[1]}"
                    )
                self._log(
                    db, "repeated", ref.key, request.action,
                    idempotency_key=request.idempotency_key, operation_id=existing[0],
                )  # fmt: skip
                return handle
            fields = self._fields(db, ref.key)
            if fields is None:
                if ref.kind in ("Instance", "Resource") and request.action != "create":
                    raise PermanentError(f"{ref.key} does not exist (create it first)")
                if request.action not in DELETES:
                    self._enrol(db, ref)
            else:  # acting on a machine nobody owned (discovered, then declared) enrols it
                db.execute(
                    "UPDATE resources SET repository = ? WHERE key = ? AND repository = ''",
                    (self.repository, ref.key),
                )
            now = self._clock()
            failed = random.Random(f"{self._seed}:{request.idempotency_key}").random()
            outcome = "failed" if failed < self._failure_rate else "succeeded"
            message = "simulated failure" if outcome == "failed" else ""
            if fields is None and request.action in DELETES:
                outcome, message = "succeeded", "already absent"
            latency = self._latency.get(request.action, self._latency["default"])
            db.execute(
                "INSERT INTO operations (id, provider, idempotency_key, key, action, request,"
                " started_at, complete_at, outcome, message, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (
                    op_id,
                    self.name,
                    request.idempotency_key,
                    ref.key,
                    request.action,
                    _dumps(REDACTOR.data(request.to_dict())),  # secrets never stored
                    now,
                    now + latency,
                    outcome,
                    message,
                ),
            )
            self._log(
                db, "started", ref.key, request.action,
                idempotency_key=request.idempotency_key, operation_id=op_id,
                detail=dict(request.args),
            )  # fmt: skip
            if latency <= 0:
                self._settle(db)
        return handle

    def _enrol(self, db: sqlite3.Connection, ref: ResourceRef) -> None:
        declared = dict(ref.declared)
        if ref.kind == "Machine" and self._claim(db, ref):
            return
        if ref.kind == "Machine":
            fields: dict[str, Any] = {
                "power": "off",
                "bootDevice": "disk",
                "discovered": False,
                "inventory": inventory(ref.name),
                "params": {},
                "bmc": declared.get("bmc"),
                "rack": declared.get("rack"),
            }
        elif ref.kind == "Resource":
            fields = {"type": declared.get("type"), "params": {}}
        else:
            fields = {
                "state": "pending",
                "size": declared.get("size"),
                "image": declared.get("image"),
                "region": declared.get("region"),
                "zone": declared.get("zone"),
                "params": {},
            }
        db.execute(
            "INSERT INTO resources (key, provider, kind, name, repository, labels, fields,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ref.key,
                self.name,
                ref.kind,
                ref.name,
                self.repository,
                _dumps(dict(ref.labels)),
                _dumps(fields),
                self._clock(),
            ),
        )

    def _claim(self, db: sqlite3.Connection, ref: ResourceRef) -> bool:
        """A newly declared machine that is a racked one nobody owned (same MAC or serial,
        as `discover` listed it) takes over its record: the same hardware, now ours."""
        claim = _identity(dict(ref.declared.get("bmc") or {}))
        if not claim:
            return False
        rows = db.execute(
            "SELECT key, fields, created_at FROM resources"
            " WHERE provider = ? AND repository = '' AND kind = 'Machine'",
            (self.name,),
        ).fetchall()
        for key, text, created in rows:
            fields = json.loads(text)
            if _claimed(fields, [claim]):
                db.execute("DELETE FROM resources WHERE key = ?", (key,))
                db.execute(
                    "INSERT INTO resources (key, provider, kind, name, repository, labels,"
                    " fields, created_at) VALUES (?, ?, 'Machine', ?, ?, ?, ?, ?)",
                    (ref.key, self.name, ref.name, self.repository,
                     _dumps(dict(ref.labels)), text, created),
                )  # fmt: skip
                return True
        return False

    def _operation(self, operation_id: str) -> tuple[str, float, float, str] | None:
        with self._lock:
            try:
                return self._db.execute(
                    "SELECT state, started_at, complete_at, message FROM operations WHERE id = ?",
                    (operation_id,),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                raise TemporaryError(f"simulator state {self.path}: {exc}") from None

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        """Read-only (one statement); writes only when this operation's time has come,
        to apply it (and any other due operation)."""
        row = self._operation(handle.operation_id)
        if row is not None and row[0] == "running" and row[2] <= self._clock():
            with self._transaction() as db:
                self._settle(db)
            row = self._operation(handle.operation_id)
        if row is None:
            raise PermanentError(f"simulator: no operation {handle.operation_id}")
        state, started, complete, message = row
        if state == "running":
            span = complete - started
            progress = min(0.99, (self._clock() - started) / span) if span > 0 else 0.99
            return OperationStatus(handle.operation_id, OperationPhase.RUNNING, progress)
        phase = OperationPhase(state)
        progress = 1.0 if phase is OperationPhase.SUCCEEDED else 0.0
        return OperationStatus(handle.operation_id, phase, progress, message)

    async def cancel(self, handle: OperationHandle) -> bool:
        with self._transaction() as db:
            self._settle(db)
            row = db.execute(
                "SELECT state, key, action FROM operations WHERE id = ?", (handle.operation_id,)
            ).fetchone()
            if row is None:
                raise PermanentError(f"simulator: no operation {handle.operation_id}")
            state, key, action = row
            if state == "cancelled":
                return True
            if state != "running":
                return False
            if action == "create":
                db.execute("DELETE FROM resources WHERE key = ?", (key,))
            db.execute(
                "UPDATE operations SET state = 'cancelled', message = 'cancelled' WHERE id = ?",
                (handle.operation_id,),
            )
            self._log(
                db, "cancelled", key, action,
                idempotency_key=handle.idempotency_key, operation_id=handle.operation_id,
            )  # fmt: skip
        return True

    async def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- for tests, demos and people --------------------------------------------

    def drift(self, key: str, field: str, value: Any) -> None:
        """Change one observed field by hand (dotted path), as someone at a console would."""
        with self._transaction() as db:
            self._settle(db)
            fields = self._fields(db, key)
            if fields is None:
                raise PermanentError(f"simulator: {key} does not exist")
            _set(fields, field, value)
            db.execute("UPDATE resources SET fields = ? WHERE key = ?", (_dumps(fields), key))
            self._log(db, "drift", key, "drift", detail={"field": field, "value": value})

    def seed(
        self,
        resources: Sequence[tuple[ResourceRef, Mapping[str, Any]]],
        *,
        owner: str | None = None,
    ) -> None:
        """Put resources in place with the given fields at once, as an import of an
        existing fleet would (benchmarks, tests); not logged as actions. `owner` is the
        repository recorded on them (default ours; `""`: nobody's, what a rack of new
        machines is until someone declares them — `discover` lists those)."""
        now = self._clock()
        rows = [
            (
                ref.key,
                self.name,
                ref.kind,
                ref.name,
                self.repository if owner is None else owner,
                _dumps(dict(ref.labels)),
                _dumps(dict(fields)),
                now,
            )
            for ref, fields in resources
        ]
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def remove(self, key: str) -> None:
        """Delete a resource behind the controller's back."""
        with self._transaction() as db:
            db.execute("DELETE FROM resources WHERE key = ?", (key,))
            self._log(db, "drift", key, "remove")

    def action_log(self) -> list[dict[str, Any]]:
        """Every event in order: started, repeated, succeeded, failed, cancelled, drift."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, at, provider, event, idempotency_key, operation_id, key, action,"
                " detail FROM action_log ORDER BY seq"
            ).fetchall()
        names = ("seq", "at", "provider", "event", "idempotency_key", "operation_id")
        return [
            {
                **dict(zip(names, row[:6], strict=True)),
                "key": row[6],
                "action": row[7],
                "detail": json.loads(row[8]),
            }
            for row in rows
        ]


def _identity(bmc: Mapping[str, Any]) -> dict[str, str]:
    """The hardware identity of a machine's `bmc` (MAC, serial) for matching, lower case."""
    return {k: str(bmc[k]).lower() for k in ("mac", "serial") if bmc.get(k)}


def _claimed(fields: Mapping[str, Any], claims: Sequence[Mapping[str, str]]) -> bool:
    """Whether a record's hardware is one a declared machine names (same MAC or serial)."""
    have = _identity(dict(fields.get("bmc") or {}))
    serial = _get(fields, "inventory.serial")
    if serial and "serial" not in have:
        have["serial"] = str(serial).lower()
    return any(have.get(k) == v for claim in claims for k, v in claim.items())


def _apply_effect(fields: dict[str, Any], request: ActionRequest) -> None:
    """What a succeeded action changes in a resource's observed fields."""
    action, args, ref = request.action, dict(request.args), request.resource

    def arg_or_param(name: str) -> Any:
        return args[name] if name in args else ref.params.get(name)

    match action:
        case "power-on" | "reset" | "reboot":
            fields["power"] = "on"
        case "power-off":
            fields["power"] = "off"
        case "set-power":
            fields["power"] = args.get("state", ref.declared.get("power", "on"))
        case "set-state":
            fields["state"] = args.get("state", ref.declared.get("state", "running"))
        case "set-boot":
            fields["bootDevice"] = args.get("device", "pxe")
        case "pxe-boot":
            fields["bootDevice"] = "pxe"
            fields["power"] = "on"
        case "discover" | "inventory":
            fields["discovered"] = True
        case "classify":
            if "role" in ref.params:
                _set(fields, "params.role", ref.params["role"])
            for rule in args.get("rules") or ():
                if _rule_holds(fields, str(rule.get("when", ""))):
                    for name, value in dict(rule.get("set") or {}).items():
                        _set(fields, f"params.{name}", value)
        case "burn-in":
            fields["burnIn"] = {"result": "passed", "duration": args.get("duration")}
            _set(fields, "params.burnIn", ref.params.get("burnIn", True))
        case "install-os":
            _set(fields, "params.os", arg_or_param("os"))
            _set(fields, "params.osVersion", args.get("version", ref.params.get("osVersion")))
            fields["bootDevice"] = "disk"
        case "install-app":
            _set(fields, "params.application", arg_or_param("application"))
            version = args.get("version", ref.params.get("applicationVersion"))
            _set(fields, "params.applicationVersion", version)
        case "join":
            _set(fields, "params.cluster", arg_or_param("cluster"))
        case "configure":
            for name, value in args.items():
                if name != "set":
                    _set(fields, f"params.{name}", value)
        case "resize":
            fields["size"] = args.get("size", ref.declared.get("size"))
        case "create":
            if ref.kind == "Resource":
                fields["params"] = dict(ref.params)
            elif ref.kind == "Instance":
                fields["state"] = "running"
                digest = hashlib.sha256(ref.key.encode()).digest()
                fields["privateIp"] = f"10.{digest[0]}.{digest[1]}.{digest[2] or 1}"
            else:
                fields["discovered"] = True
    for path, value in dict(args.get("set") or {}).items():
        _set(fields, path, value)


_RULE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


def _rule_holds(fields: Mapping[str, Any], when: str) -> bool:
    """``inventory.disks >= 8``: a dotted field (a list counts its length), an operator,
    a JSON literal. Anything else does not hold."""
    match = _RULE.match(when)
    if not match:
        return False
    path, op, literal = match.groups()
    value = _get(fields, path)
    if isinstance(value, list):
        value = len(value)
    try:
        other = json.loads(literal)
    except json.JSONDecodeError:
        other = literal
    try:
        return bool(
            {
                ">=": lambda: value >= other,
                "<=": lambda: value <= other,
                ">": lambda: value > other,
                "<": lambda: value < other,
                "==": lambda: value == other,
                "!=": lambda: value != other,
            }[op]()
        )
    except TypeError:
        return False
