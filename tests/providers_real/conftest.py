"""Real servers on 127.0.0.1 for the real providers: sushy-emulator, moto, a REST service.

Each server is started here with a fresh state directory, bound to loopback, and
stopped by its own PID. A missing package skips its tests with the reason; CI
installs the ``test`` extra, so there they run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .servers import (
    AWS_SECRET,
    BMC_PASSWORD,
    BMC_USER,
    DRIVES,
    STORAGE,
    SYSTEMS,
    Certificates,
    free_port,
    make_certificates,
    stop,
    wait_http,
)


def _htpasswd(path: Path) -> None:
    bcrypt = pytest.importorskip("bcrypt", reason="bcrypt writes the emulator's htpasswd file")
    digest = bcrypt.hashpw(BMC_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{BMC_USER}:{digest}\n")


def _start_sushy(root: Path, tls: Certificates | None = None) -> Iterator[str]:
    pytest.importorskip("sushy", reason="pip install sushy (the test extra)")
    pytest.importorskip("sushy_tools", reason="pip install sushy-tools (the test extra)")
    exe = shutil.which("sushy-emulator") or str(Path(sys.executable).parent / "sushy-emulator")
    if not Path(exe).exists():
        pytest.skip("sushy-emulator is not on PATH (pip install sushy-tools)")
    _htpasswd(root / "htpasswd")
    port = free_port()
    config = root / "emulator.conf"
    settings = (
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(root / 'state')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(root / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {SYSTEMS!r}\n"
        f"SUSHY_EMULATOR_STORAGE = {STORAGE!r}\n"
        f"SUSHY_EMULATOR_DRIVES = {DRIVES!r}\n"
    )
    if tls is not None:
        settings += (
            f"SUSHY_EMULATOR_SSL_CERT = {str(tls.cert)!r}\n"
            f"SUSHY_EMULATOR_SSL_KEY = {str(tls.key)!r}\n"
        )
    config.write_text(settings)
    log = root / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "--config", str(config), "-i", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        wait_http(f"{url}/redfish/v1/", proc, log, verify=str(tls.ca) if tls else True)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def sushy_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """sushy-emulator with its fake driver, three systems, storage on node-a, basic auth."""
    yield from _start_sushy(tmp_path_factory.mktemp("sushy"))


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    pytest.importorskip("cryptography", reason="pip install cryptography (moto brings it)")
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def sushy_emulator_tls(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[str]:
    """The same emulator over HTTPS, its certificate signed by `certificates`' CA."""
    yield from _start_sushy(tmp_path_factory.mktemp("sushy-tls"), certificates)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's EC2 API (and the rest of AWS) in server mode on 127.0.0.1, one per session."""
    pytest.importorskip("boto3", reason="pip install boto3 (the test extra)")
    server_module = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def ec2_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto server emptied for this test, and dummy AWS credentials in the environment."""
    httpx.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("TEST_AWS_KEY", "AKIATESTTESTTEST")
    monkeypatch.setenv("TEST_AWS_SECRET", AWS_SECRET)
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server
