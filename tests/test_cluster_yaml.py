"""cluster.yaml passes Ray's own launcher validator, and every custom resource the code asks for exists."""

import re
from pathlib import Path

import yaml

from oss_cluster.config import load_config
from oss_cluster.tiers import TIERS

ROOT = Path(__file__).resolve().parents[1]


def cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cluster())
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_node_types_cover_trainers_and_one_target_per_tier_with_priced_instances():
    from oss_cluster.cost.catalog import load_catalog, load_node_types

    types, catalog = load_node_types(), load_catalog()
    for tier in TIERS:
        assert [n for n, t in types.items() if f"tier_{tier}" in t["resources"]], f"no node type carries tier_{tier}"
    assert types["heavy_trainer"]["spot"] and not types["heavy_trainer_ondemand"]["spot"]
    assert all(t["instance_type"] in catalog for t in types.values())  # the price catalog covers every instance
    assert all(catalog[t["instance_type"]].accelerators >= 1 for n, t in types.items() if n != "head")


def requested_resources() -> set[str]:
    """Custom resources requested by configs/, serve/ and jobs/ (and the tier resources the Serve app and
    the latency job build as tier_<tier>)."""
    wanted = set()
    for path in (ROOT / "configs").glob("*.yaml"):
        wanted |= set(load_config(path).train.worker_resources)
    serve_config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    for app in serve_config["applications"]:
        wanted |= {f"tier_{tier}" for tier in app["args"]["tiers"]}
    wanted |= {f"tier_{tier}" for tier in TIERS}
    pattern = re.compile(r"\b(tier_[a-z]+|trainer_[a-z]+)\b")
    for folder in ("jobs", "serve", "configs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml"):
                wanted |= set(pattern.findall(path.read_text())) - {"tier_resource"}  # a config key, not a resource
    return wanted


def test_every_requested_custom_resource_exists_on_some_node_type():
    offered = set()
    for node in cluster()["available_node_types"].values():
        offered |= set(node.get("resources", {}))
    wanted = requested_resources()
    assert {"tier_pico", "tier_standard", "tier_heavy", "trainer_heavy", "trainer_canvas"} <= wanted
    assert wanted <= offered, f"requested but on no node type: {sorted(wanted - offered)}"


def test_dashboard_is_not_exposed():
    config = cluster()
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    ports = config["provider"]["security_group"]["IpPermissions"]
    assert [(rule["FromPort"], rule["ToPort"]) for rule in ports] == [(22, 22)]  # SSH only, no 8265
