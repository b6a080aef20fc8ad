"""What the Ray cluster is, for every job that runs on it: resource requests, node types and spend.

The training jobs, the Tune sweep, Serve and the latency job share this module:

- **Requests, not a census.** A job asks for what its config says (`train.use_gpu`,
  `train.worker_resources`, a tier's `tier_<tier>`); Ray and the autoscaler provide it. Nothing here
  decides GPU use or concurrency from the nodes that happen to be alive at start. `check_request`
  only refuses a request that no node of the cluster can ever satisfy: neither an alive node nor a
  node type the autoscaler may launch has the resource (fails at once), or, where the autoscaler's
  node types cannot be read, nothing provided it within `timeout_s`.
- **Node types from where the work runs.** cluster.yaml's node types each carry `oss_node_<type>: 1`;
  `this_node_type()` reads it on the node a worker runs on, `count_node_types` counts the distinct
  nodes a run's workers occupy, and `hourly_spend_rate` prices exactly those.
- **Storage every node shares.** On a multi-node cluster a local storage root would split a run
  across disks (and a relative one lands in Ray's temporary job folder): `check_shared_storage` refuses it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import yaml

from .config import ConfigError

NODE_RESOURCE_PREFIX = "oss_node_"  # cluster.yaml: every node type carries oss_node_<type>: 1
HEAD_NODE_TYPE = "head"
LOCAL_NODE_TYPE = "local"  # a node outside cluster.yaml (a laptop, a test instance); priced at 0
# Ray's own resources that every node has in some amount and that say nothing about its type.
_GENERIC = ("memory", "object_store_memory")


class ResourceRequestError(ConfigError):
    """A resource request that no node of the cluster can ever satisfy."""


# ---------------------------------------------------------------------------------------------- node types


def node_type_of(resources: dict) -> str | None:
    """cluster.yaml node type of a node with these Ray resources (its oss_node_<type> resource), or None."""
    for name in resources:
        if name.startswith(NODE_RESOURCE_PREFIX):
            return name[len(NODE_RESOURCE_PREFIX):]
    return None


def this_node_type() -> tuple[str, str]:
    """(node id, node type) of the node this Ray process runs on: its oss_node_<type> resource, else
    $OSS_NODE_TYPE, else 'local'."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            found = node_type_of(node.get("Resources", {}))
            if found:
                return node_id, found
    return node_id, os.environ.get("OSS_NODE_TYPE", LOCAL_NODE_TYPE)


def count_node_types(placements: list[tuple[str, str]]) -> dict[str, int]:
    """{node type: distinct nodes} from (node id, node type) pairs, one per worker (several workers
    on one node count it once)."""
    counts: dict[str, int] = {}
    for _, node_type in sorted(set(placements)):
        counts[node_type] = counts.get(node_type, 0) + 1
    return counts


def hourly_spend_rate(node_types: dict[str, int]) -> tuple[float, list[str]]:
    """USD per hour of the node types (cost/aws_vms.csv prices of cluster.yaml's instance types), and
    the node types without a price (with the reason)."""
    from .cost.catalog import CostError, hourly_price, load_catalog, load_node_types

    try:
        return hourly_price(node_types, load_catalog(), load_node_types())
    except (CostError, OSError) as err:  # no catalog next to the code: spend stays 0, and says why
        return 0.0, [f"{name} ({err})" for name in node_types]


# ---------------------------------------------------------------------------------------------- the autoscaler


def autoscaling_config_path() -> Path | None:
    """The autoscaler's cluster config: $OSS_AUTOSCALING_CONFIG, else the --autoscaling-config of this
    Ray cluster's autoscaler (Ray's monitor, when it runs on this machine: the head), else the one
    `ray up` leaves on the head."""
    import ray

    named = os.environ.get("OSS_AUTOSCALING_CONFIG")
    if named:
        return Path(named)
    gcs = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except (psutil.Error, OSError):
            continue
        if any(part.endswith("autoscaler/_private/monitor.py") for part in cmdline[:3]) and \
                (gcs is None or f"--gcs-address={gcs}" in cmdline):
            for part in cmdline:
                if part.startswith("--autoscaling-config="):
                    return Path(part.split("=", 1)[1])
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()
    return bootstrap if bootstrap.is_file() else None


def autoscaler_node_types() -> dict[str, dict] | None:
    """{node type: resources} the autoscaler may launch (max_workers > 0, the head excluded), or None
    where no autoscaling config can be read (then only alive nodes and a timeout decide)."""
    path = autoscaling_config_path()
    if path is None or not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    head = config.get("head_node_type")
    types = {}
    for name, node in (config.get("available_node_types") or {}).items():
        if name != head and node.get("max_workers", 0) > 0:
            types[name] = dict(node.get("resources") or {})
    return types


def _fits(request: dict, resources: dict) -> bool:
    return all(resources.get(key, 0) >= amount for key, amount in request.items() if amount > 0)


def _satisfiable(request: dict, alive: list[dict], types: dict[str, dict] | None) -> bool:
    """Whether an alive node or a node type the autoscaler can launch has every resource of `request`."""
    return any(_fits(request, node.get("Resources", {})) for node in alive) or \
        any(_fits(request, resources) for resources in (types or {}).values())


def _alive_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_request(request: dict, what: str, setting: str, timeout_s: float = 900.0, poll_s: float = 2.0) -> None:
    """Raise ResourceRequestError unless some node of the cluster can ever satisfy `request` (one
    worker's or replica's resources, e.g. {"CPU": 1, "GPU": 1, "trainer_heavy": 0.125}).

    An alive node or an autoscaler node type that has every resource in the amount asked passes at
    once (whether it is free now does not matter: the job waits for it). Where neither can, and the
    autoscaler's node types are known, it fails at once; where they are unknown it waits up to
    `timeout_s` for a node that could. `what` names the job and `setting` the config key to change.
    """
    request = {key: value for key, value in request.items() if key not in _GENERIC and value}
    types = autoscaler_node_types()
    deadline = time.monotonic() + timeout_s
    while True:
        alive = _alive_nodes()
        if _satisfiable(request, alive, types):
            return
        if types is not None or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    missing = sorted(key for key in request
                     if not any(node.get("Resources", {}).get(key, 0) >= request[key] for node in alive)
                     and not any(resources.get(key, 0) >= request[key] for resources in (types or {}).values()))
    offered = sorted({key for node in alive for key in node.get("Resources", {})} |
                     {key for resources in (types or {}).values() for key in resources})
    source = ("no alive node and no node type the autoscaler can launch has it" if types is not None else
              f"no node of this Ray cluster had it within {timeout_s:.0f} s (the autoscaler's node types are unknown)")
    raise ResourceRequestError(
        f"{what} asks each worker for {request}: {', '.join(missing) or 'that combination'} cannot be satisfied "
        f"({source}; the cluster offers {', '.join(offered) or 'nothing'}). Change {setting}.")


# ---------------------------------------------------------------------------------------------- storage


def is_multi_node() -> bool:
    """True when work may run on more than one node: several alive nodes, an autoscaler that can launch
    worker nodes, or a driver's node that holds no CPU (cluster.yaml's head: work runs elsewhere)."""
    import ray

    alive = _alive_nodes()
    if len(alive) > 1 or autoscaler_node_types():
        return True
    here = ray.get_runtime_context().get_node_id()
    return any(node.get("NodeID") == here and not node.get("Resources", {}).get("CPU") for node in alive)


def check_shared_storage(root: str, shared: bool, setting: str = "storage.root") -> None:
    """Refuse a storage root that not every node (and not the run record after the job) can see:
    a relative path in a Ray job (it resolves inside Ray's temporary working folder), and any
    local path on a multi-node cluster unless it is declared shared (`storage.shared`: NFS, EFS...)."""
    if "://" in root:
        return
    # `ray job submit --working-dir` runs the driver in Ray's unpacked copy of the folder.
    in_job_copy = "runtime_resources" in os.getcwd()
    if not Path(root).expanduser().is_absolute() and in_job_copy:
        raise ConfigError(
            f"{setting}={root!r} is relative: inside a Ray job it resolves under Ray's temporary working folder "
            f"({os.getcwd()}), which is deleted with the job. Use s3://bucket/prefix, or an absolute path every "
            "node shares (with storage.shared=true).")
    if not shared and is_multi_node():
        raise ConfigError(
            f"{setting}={root!r} is a local path, but this Ray cluster has (or can launch) several nodes: each "
            "would write to its own disk and the run could not resume elsewhere. Use s3://bucket/prefix, or a "
            "path every node shares (NFS, EFS) with storage.shared=true.")


# ---------------------------------------------------------------------------------------------- placement


def gpus_on_tier_nodes(tier: str, alive: list[dict], types: dict[str, dict] | None) -> int:
    """1 where the nodes carrying tier_<tier> (alive ones, and node types the autoscaler can launch) have a GPU,
    else 0: what a tier's Serve replica or latency task asks for with `num_gpus: auto`."""
    key = f"tier_{tier}"
    gpus = [node.get("Resources", {}).get("GPU", 0) for node in alive if node.get("Resources", {}).get(key)]
    gpus += [resources.get("GPU", 0) for resources in (types or {}).values() if resources.get(key)]
    return int(any(count >= 1 for count in gpus))


def tier_gpus(tier: str) -> int:
    """`gpus_on_tier_nodes` on this cluster (0 without a running Ray)."""
    import ray

    return gpus_on_tier_nodes(tier, _alive_nodes(), autoscaler_node_types()) if ray.is_initialized() else 0


def tier_pinning(tier: str, amount: float, mode: str, what: str) -> dict:
    """Ray resources that pin a tier's replica or latency task to cluster.yaml's target_<tier> nodes.

    mode "required": always ask for tier_<tier> (check_request fails fast if nothing can provide it);
    "auto": ask when an alive node or an autoscaler node type can provide it, else run anywhere
    (a local instance); "off": never ask.
    """
    resource = {f"tier_{tier}": amount}
    if mode == "off":
        return {}
    if mode == "required":
        check_request(resource, what, "pin_to_tier_workers")
        return resource
    if _satisfiable(resource, _alive_nodes(), autoscaler_node_types()):
        return resource
    print(f"{what}: no node of this cluster (alive or launchable) has tier_{tier}; it runs on any worker")
    return {}
