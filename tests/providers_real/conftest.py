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

import pytest

from providers_real.servers import (
    BMC_PASSWORD,
    BMC_USER,
    DRIVES,
    STORAGE,
    SYSTEMS,
    free_port,
    stop,
    wait_http,
)


def _htpasswd(path: Path) -> None:
    bcrypt = pytest.importorskip("bcrypt", reason="bcrypt writes the emulator's htpasswd file")
    digest = bcrypt.hashpw(BMC_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{BMC_USER}:{digest}\n")


@pytest.fixture(scope="session")
def sushy_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """sushy-emulator with its fake driver, three systems, storage on node-a, basic auth."""
    pytest.importorskip("sushy", reason="pip install sushy (the test extra)")
    pytest.importorskip("sushy_tools", reason="pip install sushy-tools (the test extra)")
    exe = shutil.which("sushy-emulator") or str(Path(sys.executable).parent / "sushy-emulator")
    if not Path(exe).exists():
        pytest.skip("sushy-emulator is not on PATH (pip install sushy-tools)")
    root = tmp_path_factory.mktemp("sushy")
    _htpasswd(root / "htpasswd")
    port = free_port()
    config = root / "emulator.conf"
    config.write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(root / 'state')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(root / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {SYSTEMS!r}\n"
        f"SUSHY_EMULATOR_STORAGE = {STORAGE!r}\n"
        f"SUSHY_EMULATOR_DRIVES = {DRIVES!r}\n"
    )
    log = root / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "--config", str(config), "-i", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/redfish/v1/", proc, log)
        yield url
    finally:
        stop(proc)
