"""Canary secret, end to end: a value given by reference appears nowhere it could leak.

One secret (a fresh random canary in an environment variable) is used three ways
by a real `reconciler apply` subprocess: a notify task signs its webhook with it
(`secret: env:X`), an http task sends it as a bearer token to a local server that
checks it (`auth.bearer: env:X`), and a provider task receives it through a secure
pipeline input (`rootPassword: env:X`). One machine's http call fails: the server
answers 500, then a permanent 400 whose body repeats the token.

The server proves the secret really travelled; then every output and record is
searched for it: stdout and stderr (JSON logs) of `apply`, `plan` (text, json,
markdown) and `status` (table, json, one resource), every file under the state
directory (task logs, journal and simulator databases with their WAL), and every
commit message and blob of the declared repository and the controller's mirror
(the status branch: status files, drift report, audit, trailers).

A second canary is made of what encodings change (quote, backslash, ``%``, ``+``,
``/``); an API echoes it back — bearer token, basic-auth token, query and JSON body
— in long error bodies that put the 300-character error snippet's cut and the task
log's 4,096-character cut inside it. Neither it, nor its first or last characters
in any encoding, may appear in any output, file, journal row or commit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.execute.tasks.notify import SIGNATURE_HEADER
from tests.e2e.support import Fleet, git_texts
from tests.execute.conftest import TRICKY, files_under, secret_leaks
from tests.servers.fake_http import ApiServer as ExecuteApi

pytestmark = pytest.mark.slow

CANARY = f"canary-{uuid.uuid4().hex}"
CANARY_ENV = "E2E_CANARY_TOKEN"


@dataclass
class Seen:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, answer
    cmdb_attempts: dict[str, int] = field(default_factory=dict)


class Api(BaseHTTPRequestHandler):
    """A CMDB that checks the bearer token and a webhook receiver that checks signatures."""

    server: ApiServer  # type: ignore[assignment]

    def log_message(self, *args: object) -> None:
        return

    def _answer(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with self.server.seen.lock:
            self.server.seen.requests.append((self.command, self.path, code))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/hooks":
            expected = "sha256=" + hmac.new(CANARY.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), expected)
            self._answer(200 if ok else 403, {"status": "ok" if ok else "bad signature"})
            return
        if self.headers.get("Authorization") != f"Bearer {CANARY}":
            self._answer(401, {"error": "missing or wrong bearer token"})
            return
        name = self.path.rsplit("/", 1)[-1]
        with self.server.seen.lock:
            attempt = self.server.seen.cmdb_attempts[name] = (
                self.server.seen.cmdb_attempts.get(name, 0) + 1
            )
        if name != "m2":
            self._answer(200, {"status": "registered", "name": name})
        elif attempt == 1:
            self._answer(500, {"error": "try again"})
        else:
            self._answer(400, {"error": f"token {CANARY} may not register {name}"})


class ApiServer(ThreadingHTTPServer):
    seen: Seen


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer(("127.0.0.1", 0), Api)
    server.seen = Seen()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def canary_repo(url: str) -> dict[str, str]:
    machines = "---\n".join(
        f"apiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: {name}}}\n"
        f"spec:\n  provider: sim\n  pipeline: node\n"
        f"  params: {{os: ubuntu, rootPassword: 'env:{CANARY_ENV}'}}\n"
        for name in ("m1", "m2")
    )
    return {
        "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec: {type: simulator, settings: {latency: "0.05s"}}
""",
        "stages.yaml": f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: install-os}}
spec:
  converges: [params.os]
  pre-notify:
    - name: announce
      type: notify
      url: {url}/hooks
      secret: env:{CANARY_ENV}
      message: "Installing ${{params.os}} on ${{resource.name}}"
  work:
    - name: install
      type: provider
      action: install-os
      args: {{os: "${{params.os}}", rootPassword: "${{params.rootPassword}}"}}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: register}}
spec:
  work:
    - name: cmdb
      type: http
      method: POST
      url: "{url}/cmdb/${{resource.name}}"
      auth: {{bearer: "env:{CANARY_ENV}"}}
      body: {{name: "${{resource.name}}", os: "${{params.os}}"}}
      retry: {{attempts: 3, initialBackoff: 0.05s}}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: node}
spec:
  inputs:
    - {name: os, required: true}
    - {name: rootPassword, secure: true}
  steps:
    - stage: install-os
    - stage: register
""",
        "machines.yaml": machines,
    }


def test_canary_secret_leaks_nowhere(tmp_path: Path, api: ApiServer) -> None:
    url = f"http://127.0.0.1:{api.server_address[1]}"
    fleet = Fleet.create(tmp_path, canary_repo(url), env={CANARY_ENV: CANARY})
    outputs: dict[str, str] = {}

    def run(*args: str, expect: int) -> str:
        done = fleet.run(*args)
        outputs[" ".join(args) + f" #{len(outputs)}"] = done.stdout + "\n" + done.stderr
        assert done.returncode == expect, (args, done.stdout, done.stderr)
        return done.stdout

    for fmt in ("text", "json", "markdown"):
        run("plan", "--output", fmt, expect=2)
    run("apply", expect=1)
    for fmt in ("text", "json", "markdown"):
        run("plan", "--output", fmt, expect=2)  # m2 still needs its register stage
    run("status", expect=0)
    statuses = json.loads(run("status", "--output", "json", expect=0))
    run("status", "Machine/m2", expect=0)
    run("status", "Machine/m2", "--output", "json", expect=0)

    # The secret was really used, three ways.
    seen = api.seen.requests
    assert ("POST", "/cmdb/m1", 200) in seen, seen  # the bearer token checked out
    assert [code for _, path, code in seen if path == "/cmdb/m2"] == [500, 400], seen
    assert [code for _, path, code in seen if path == "/hooks"] == [200, 200], seen
    installs = [
        e for e in fleet.action_log() if e["action"] == "install-os" and e["event"] == "started"
    ]
    assert {e["key"] for e in installs} == {"Machine/m1", "Machine/m2"}
    for entry in installs:  # resolved (not the reference), and kept only as ***
        assert json.loads(entry["detail"])["rootPassword"] == "***"
    assert statuses["Machine/m1"]["phase"] == "Ready"
    failed = statuses["Machine/m2"]
    assert failed["phase"] == "Failed"
    assert "400" in failed["failure"]["error"] and "token *** may not" in failed["failure"]["error"]
    logs = list((fleet.state / "logs").rglob("*.log"))
    assert logs and any("token *** may not" in p.read_text() for p in logs)

    # ... and appears nowhere.
    leaks = [where for where, text in outputs.items() if CANARY in text]
    for path in sorted(p for p in fleet.state.rglob("*") if p.is_file()):
        if CANARY.encode() in path.read_bytes():
            leaks.append(str(path.relative_to(fleet.state)))
    for repo in (fleet.bare, fleet.state / "mirror.git"):
        leaks += [f"{repo.name} {where}" for where, text in git_texts(repo) if CANARY in text]
    assert leaks == []
    status_files = [w for w, _ in git_texts(fleet.bare) if w.endswith(":status/Machine/m2.yaml")]
    assert status_files, "the status branch was searched"


# --- a secret made of what encodings change, straddling every cut, through apply ---

TRICKY_ENV = "E2E_TRICKY_SECRET"
SNIPPET_CUT, LOGGED_CUT = 300, 4096  # error snippets of a body; the task log's copy


def tricky_repo(url: str) -> dict[str, str]:
    """Machines whose http task gets the secret echoed back with a cut inside it: as a
    bearer token, a basic-auth password, in the URL's query and in the JSON body."""
    machines = []
    for cut in (SNIPPET_CUT, LOGGED_CUT):
        for k in (1, 5, 12, len(TRICKY) - 1):
            for as_json in ("0", "1"):
                for pipeline in ("bearer", "basic"):
                    at = cut - k
                    machines.append(
                        "apiVersion: reconciler/v1\nkind: Machine\n"
                        f"metadata: {{name: {pipeline}-{at}-j{as_json}}}\n"
                        f"spec:\n  provider: sim\n  pipeline: {pipeline}\n"
                        f"  params: {{at: '{at}', json: '{as_json}', pad: '{'p' * (at - 20)}', "
                        f"tricky: 'env:{TRICKY_ENV}'}}\n"
                    )
    query = "at=${params.at}&json=${params.json}&code=400&token=${params.tricky}"
    stage = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: {name}}}
spec:
  work:
    - name: register
      type: http
      url: "{url}/echo?{query}"
      auth: {auth}
      body: {{pad: "${{params.pad}}", tricky: "${{params.tricky}}"}}
"""
    pipeline = """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  inputs:
    - {{name: at}}
    - {{name: json}}
    - {{name: pad}}
    - {{name: tricky, secure: true}}
  steps: [{{stage: {name}}}]
"""
    auths = {
        "bearer": f"{{bearer: 'env:{TRICKY_ENV}'}}",
        "basic": f"{{username: ada, password: 'env:{TRICKY_ENV}'}}",
    }
    return {
        "providers.yaml": "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
        "spec: {type: simulator}\n",
        "stages.yaml": "---\n".join(
            stage.format(name=n, url=url, query=query, auth=a) for n, a in auths.items()
        ),
        "pipelines.yaml": "---\n".join(pipeline.format(name=n) for n in auths),
        "machines.yaml": "---\n".join(machines),
    }


def test_tricky_secret_straddling_every_cut_leaks_nowhere(tmp_path: Path) -> None:
    with ExecuteApi() as api:
        fleet = Fleet.create(tmp_path, tricky_repo(api.url), env={TRICKY_ENV: TRICKY})
        places: dict[str, bytes | str] = {}
        for args, expect in (
            (("apply",), 1),
            (("status",), 0),
            (("status", "--output", "json"), 0),
            (("status", "Machine/bearer-299-j1", "--output", "json"), 0),
            (("plan", "--output", "json"), 2),
            (("audit", "--output", "json"), 0),
        ):
            done = fleet.run(*args)
            assert done.returncode == expect, (args, done.stdout[-2000:], done.stderr[-2000:])
            places[" ".join(args)] = done.stdout + "\n" + done.stderr
        echoes = api.requests("POST", "/echo")
    machines = len(tricky_repo("")["machines.yaml"].split("---\n"))
    assert len(echoes) == machines
    # The secret really travelled, every way: the header, the query, the JSON body.
    assert {json.loads(r.body)["tricky"] for r in echoes} == {TRICKY}
    headers = {r.headers["Authorization"] for r in echoes}
    basic = "Basic " + base64.b64encode(f"ada:{TRICKY}".encode()).decode()
    assert headers == {f"Bearer {TRICKY}", basic}
    statuses = json.loads(places["status --output json"])
    assert {s["phase"] for s in statuses.values()} == {"Failed"}
    errors = [s["failure"]["error"] for s in statuses.values()]
    assert all("answered 400" in e and "***" in e for e in errors), errors[:2]
    assert list((fleet.state / "logs").rglob("*.log"))
    places |= files_under(fleet.state)
    places |= {f"journal row {r['task']}": json.dumps(r) for r in fleet.journal_tasks()}
    for repo in (fleet.bare, fleet.state / "mirror.git"):
        places |= {f"{repo.name} {where}": text for where, text in git_texts(repo)}
    assert any(":status/Machine/bearer-299-j1.yaml" in w for w in places), "status searched"
    assert any(":audit/" in w for w in places), "audit records searched"
    assert secret_leaks(TRICKY, places) == []
