"""A real multi-node Ray cluster on this machine, shaped like cluster.yaml, that autoscales.

The head holds no CPU; the trainer and target node types carry the same custom resources as
cluster.yaml's and start at 0 nodes. Ray's autoscaler (v1) launches them on demand through the fake
multi-node provider (each node its own raylet, object store and temp folder) and removes them when
idle. The only shared storage is the session's S3 endpoint (moto server). Jobs reach the cluster
through `ray job submit` against its dashboard, as users do; the test process itself stays
connected to the session's single-node instance, so both can run in one pytest session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

from tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[2]
RAY_BIN = str(Path(sys.executable).parent / "ray")


def cluster_config(gcs: str, temp_root: str) -> dict:
    """cluster.yaml's node types (small: 1 CPU each) on the fake provider."""
    def worker(max_workers: int, **resources):
        return {"min_workers": 0, "max_workers": max_workers, "node_config": {}, "resources": {"CPU": 1, **resources}}

    return {
        "cluster_name": "oss-test", "max_workers": 4, "upscaling_speed": 10.0, "idle_timeout_minutes": 1,
        "provider": {"type": "external", "module": "tests.cluster.fake_provider.SeparateNodesProvider",
                     "gcs_address": gcs, "temp_root": temp_root,
                     # Every fake node has the same IP: the autoscaler must tell them apart by node id.
                     "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "nobody"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "oss_node_head": 1}, "node_config": {}, "max_workers": 0},
            "heavy_trainer": worker(3, trainer_heavy=1, oss_node_heavy_trainer=1),
            "canvas_trainer": worker(2, trainer_canvas=1, oss_node_canvas_trainer=1),
            "target_pico": worker(1, tier_pico=1, oss_node_target_pico=1),
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _processes_under(folder: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(folder in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_processes_under(folder: str) -> int:
    """SIGKILL every process whose command line names `folder` (one fake node, or the whole cluster)."""
    victims = _processes_under(folder)
    for proc in victims:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    return len(victims)


@pytest.fixture(scope="session")
def fake_cluster(s3_endpoint):
    """Start the cluster; yields its addresses and helpers. Torn down by killing its processes only (not
    `ray stop`, which would stop the session's other instance too)."""
    root = tempfile.mkdtemp(prefix="oss", dir="/tmp")  # short: Ray's socket paths live under it
    gcs_port, dashboard, client = _free_port(), _free_port(), _free_port()
    gcs = f"127.0.0.1:{gcs_port}"
    config = Path(root) / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster_config(gcs, root)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    # Token authentication like the session's other instance (conftest sets RAY_AUTH_MODE=token).
    subprocess.run([RAY_BIN, "get-auth-token", "--generate"], check=True, env=env, capture_output=True)
    subprocess.run([RAY_BIN, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--num-cpus=0",
                    '--resources={"oss_node_head": 1}', f"--autoscaling-config={config}", f"--temp-dir={root}/head",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    f"--ray-client-server-port={client}", f"--metrics-export-port={_free_port()}",
                    f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    info = SimpleNamespace(root=root, gcs=gcs, dashboard=f"http://127.0.0.1:{dashboard}", env=env,
                           endpoint=s3_endpoint)
    try:
        yield info
    finally:
        kill_processes_under(root)
        shutil.rmtree(root, ignore_errors=True)


def submit(cluster, *args: str, timeout: float = 600, wait: bool = True):
    """`ray job submit --working-dir <repo>` of `python <args>` to the cluster; CompletedProcess (or Popen)."""
    command = [RAY_BIN, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "oss-runs", "**/__pycache__"]}),
               "--", sys.executable, *args]
    if not wait:
        return subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=timeout)


def alive_worker_nodes(cluster) -> list[dict]:
    """The cluster's alive nodes other than the head, as the GCS lists them."""
    code = ("import json, ray; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))")
    done = subprocess.run([sys.executable, "-c", code], env={**cluster.env, "RAY_ADDRESS": cluster.gcs},
                          capture_output=True, text=True, timeout=120, check=True)
    nodes = json.loads(done.stdout.strip().splitlines()[-1])
    return [n for n in nodes if "oss_node_head" not in n["Resources"]]


def node_folder(cluster, node_id: str) -> str:
    """The temp folder of the fake node with this Ray node id (SeparateNodesProvider: n<last 5 digits>)."""
    return os.path.join(cluster.root, f"n{node_id[-5:]}")


def wait_until(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
