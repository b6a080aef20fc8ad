"""Instance prices (cost/aws_vms.csv, SkyPilot's AWS vms.csv columns) and cluster.yaml's node types."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "cost" / "aws_vms.csv"
CLUSTER = REPO / "cluster.yaml"
COLUMNS = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "SpotPrice", "Region"]


class CostError(ValueError):
    """A bad catalog, cluster or plan file; the message names the file and the field."""


@dataclass(frozen=True)
class Instance:
    instance_type: str
    accelerator: str | None
    accelerators: int
    vcpus: float
    memory_gib: float
    price: float  # on-demand USD per hour
    spot_price: float | None
    region: str


def load_catalog(path: Path = CATALOG) -> dict[str, Instance]:
    if not Path(path).is_file():
        raise CostError(f"{path}: no price catalog")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != COLUMNS:
            raise CostError(f"{path}: columns {reader.fieldnames} != {COLUMNS}")
        catalog = {}
        for line, row in enumerate(reader, start=2):
            try:
                instance = Instance(row["InstanceType"], row["AcceleratorName"] or None, int(row["AcceleratorCount"] or 0),
                                    float(row["vCPUs"]), float(row["MemoryGiB"]), float(row["Price"]),
                                    float(row["SpotPrice"]) if row["SpotPrice"] else None, row["Region"])
            except ValueError as err:
                raise CostError(f"{path}:{line}: {err}") from None
            if instance.price < 0 or (instance.spot_price or 0) < 0:
                raise CostError(f"{path}:{line}: negative price for {instance.instance_type}")
            catalog[instance.instance_type] = instance
    return catalog


def load_node_types(path: Path = CLUSTER) -> dict[str, dict]:
    """cluster.yaml's available_node_types: name -> {instance_type, spot, resources}."""
    config = yaml.safe_load(Path(path).read_text())
    types = {}
    for name, node in config["available_node_types"].items():
        node_config = node.get("node_config", {})
        types[name] = {"instance_type": node_config.get("InstanceType"),
                       "spot": node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot",
                       "resources": node.get("resources", {})}
    return types


def hourly_price(node_types: dict[str, int], catalog: dict[str, Instance], cluster: dict[str, dict]) -> tuple[float, list[str]]:
    """USD per hour of {node type: count} at the node types' own market (spot or on-demand);
    also the node types that have no price (e.g. 'local')."""
    total, unpriced = 0.0, []
    for name, count in node_types.items():
        node = cluster.get(name)
        instance = catalog.get(node["instance_type"]) if node else None
        if instance is None:
            unpriced.append(name)
            continue
        price = instance.spot_price if node["spot"] and instance.spot_price is not None else instance.price
        total += price * count
    return total, unpriced
