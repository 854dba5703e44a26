"""Synthetic declared repositories for benchmarks: N resources across racks, providers, profiles.

`generate(n)` returns {path: bytes} (what `reconciler.load.load.load_files` takes);
`write(root, files)` puts it on disk; `commit(root)` makes it a real Git repository.
Shapes follow the sample repository: bare-metal and cloud pipelines sharing an
application pipeline, extension points, profiles, dependsOn within each rack.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

MACHINES_PER_RACK = 40
INSTANCES_PER_FILE = 50

FIXED = {
    "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim-dc1}
spec: {type: simulator, limits: {concurrency: 50}}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim-dc2}
spec: {type: simulator, limits: {concurrency: 50}}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim-cloud}
spec: {type: simulator, limits: {concurrency: 100}}
""",
    "stages.yaml": "---\n".join(
        f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: {name}}}
spec:
  converges: [{converges}]
  destructive: {str(name == "install-os").lower()}
  work:
    - {{name: run, type: provider, action: {name}}}
  validate:
    - name: check
      type: wait-for
      condition: {check}
"""
        for name, converges, check in (
            ("discover", "bmc", "{field: discovered, equals: [true]}"),
            ("inventory", "inventory", "{field: inventory.disks, exists: true}"),
            ("burn-in", "params.burnIn", "{field: burnIn.result, equals: [passed]}"),
            ("install-os", "params.os", "{field: params.os, exists: true}"),
            ("create", "size, image", "{field: state, equals: [running]}"),
            ("install-app", "params.application", "{field: params.application, exists: true}"),
        )
    ),
    "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: application}
spec:
  inputs:
    - {name: application, allowed: [kubernetes-node, ceph-osd, none], default: none}
    - {name: role, default: general}
  steps: [{stage: install-app}]
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bare-metal}
spec:
  inputs:
    - {name: os, allowed: [ubuntu-24.04, rhel-9, esxi-8], required: true}
    - {name: burnIn, type: boolean, default: true}
  steps: [{stage: discover}, {stage: inventory}, {stage: burn-in}, {stage: install-os},
          {include: application}]
  hooks:
    install-os:
      pre-process:
        - {name: announce, type: provider, action: configure, args: {maintenance: announced}}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: cloud}
spec:
  steps: [{stage: create}, {include: application}]
""",
    "profiles.yaml": "---\n".join(
        f"""\
apiVersion: reconciler/v1
kind: Profile
metadata: {{name: {name}}}
spec:
  params: {params}
"""
        for name, params in (
            ("global", "{role: general}"),
            ("k8s", "{os: ubuntu-24.04, application: kubernetes-node}"),
            ("storage", "{os: rhel-9, application: ceph-osd}"),
            ("hypervisor", "{os: esxi-8}"),
        )
    ),
}


def generate(n: int, *, cloud_share: float = 0.2, revision_salt: str = "") -> dict[str, bytes]:
    files = {path: text.encode() for path, text in FIXED.items()}
    instances = int(n * cloud_share)
    machines = n - instances
    profiles = ("k8s", "storage", "hypervisor")
    for rack in range((machines + MACHINES_PER_RACK - 1) // MACHINES_PER_RACK):
        docs = []
        for i in range(min(MACHINES_PER_RACK, machines - rack * MACHINES_PER_RACK)):
            name = f"r{rack:04d}-n{i:02d}"
            depends = f"\n  dependsOn: [r{rack:04d}-n00]" if i else ""
            docs.append(
                f"""apiVersion: reconciler/v1
kind: Machine
metadata:
  name: {name}
  labels: {{rack: r{rack:04d}}}
spec:
  provider: sim-dc{rack % 2 + 1}
  pipeline: bare-metal
  profiles: [{profiles[rack % 3]}]
  rack: r{rack:04d}
  bmc: {{address: "10.{rack // 250}.{rack % 250}.{i + 10}"}}
  params: {{role: worker{revision_salt}}}{depends}
"""
            )
        files[f"machines/rack-{rack:04d}.yaml"] = "---\n".join(docs).encode()
    for block in range((instances + INSTANCES_PER_FILE - 1) // INSTANCES_PER_FILE):
        docs = []
        for i in range(min(INSTANCES_PER_FILE, instances - block * INSTANCES_PER_FILE)):
            docs.append(
                f"""apiVersion: reconciler/v1
kind: Instance
metadata: {{name: vm-{block:04d}-{i:02d}}}
spec:
  provider: sim-cloud
  pipeline: cloud
  size: m6i.large
  image: ubuntu-24.04
  params: {{application: kubernetes-node}}
"""
            )
        files[f"instances/block-{block:04d}.yaml"] = "---\n".join(docs).encode()
    return files


def write(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def commit(root: Path, message: str = "synthetic repository") -> str:
    """Commit the tree in `root` (initialising it on `main` if needed); returns the SHA."""
    env = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", message], check=True, env=env)
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("-n", type=int, default=10_000, help="resources")
    parser.add_argument("--git", action="store_true", help="commit it into a Git repository")
    args = parser.parse_args()
    write(args.root, generate(args.n))
    if args.git:
        print(commit(args.root))


if __name__ == "__main__":
    main()
