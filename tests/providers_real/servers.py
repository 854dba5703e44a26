"""Constants and helpers shared by the real-provider tests and their fixtures."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BMC_USER = "admin"
BMC_PASSWORD = "canary-Bmc-Pass-7f3a9"
"""A canary: it must never appear in an observation, a status, an error or a log line."""
AWS_SECRET = "canary-Aws-Secret-2c81d"
"""Another canary, for the EC2 provider."""

SYSTEMS = [
    {
        "uuid": "27946b59-9e44-4fa7-8e91-f3527a1ef094",
        "name": "node-a",
        "power_state": "Off",
        "nics": [{"mac": "00:5c:52:31:3a:9c", "ip": "172.22.0.100"}],
    },
    {
        "uuid": "48295861-2522-3561-6729-621118518810",
        "name": "node-b",
        "power_state": "On",
        "nics": [
            {"mac": "00:5c:52:31:3b:01", "ip": "172.22.0.101"},
            {"mac": "00:5c:52:31:3b:02", "ip": "172.22.0.102"},
        ],
    },
    {
        "uuid": "7a3c9e1f-0b2d-4e5f-8a6b-1c2d3e4f5a6b",
        "name": "node-c",
        "power_state": "Off",
        "nics": [{"mac": "00:5c:52:31:3c:01", "ip": "172.22.0.103"}],
    },
]
STORAGE = {
    SYSTEMS[0]["uuid"]: [
        {
            "Id": "1",
            "Name": "Local Storage Controller",
            "StorageControllers": [{"MemberId": "0", "Name": "RAID", "SpeedGbps": 12}],
            "Drives": ["d1", "d2"],
        }
    ]
}
DRIVES = {
    (SYSTEMS[0]["uuid"], "1"): [
        {
            "Id": "d1",
            "Name": "Drive 1",
            "CapacityBytes": 960000000000,
            "Protocol": "SATA",
            "MediaType": "SSD",
            "SerialNumber": "S1A2B3",
        },
        {"Id": "d2", "Name": "Drive 2", "CapacityBytes": 1920000000000, "Protocol": "SAS"},
    ]
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 20.0,
    verify: str | bool = True,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(
                url,
                timeout=1.0,
                verify=ssl.create_default_context(cafile=verify)
                if isinstance(verify, str)
                else verify,
            )
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} in {timeout}s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(root: Path) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 (IP SAN) signed by it, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(root / "ca.pem", root / "server.pem", root / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths
