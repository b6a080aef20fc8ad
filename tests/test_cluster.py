"""oss_cluster.cluster on the session's single-node Ray instance: requests, node types, storage, pinning."""

import pytest

from oss_cluster.cluster import (ResourceRequestError, check_request, check_shared_storage, count_node_types,
                                 gpus_on_tier_nodes, is_multi_node, tier_gpus, tier_pinning)
from oss_cluster.config import ConfigError


def test_node_types_count_distinct_nodes_not_workers():
    placements = [("n1", "heavy_trainer"), ("n1", "heavy_trainer"), ("n2", "heavy_trainer"), ("n3", "canvas_trainer")]
    assert count_node_types(placements) == {"heavy_trainer": 2, "canvas_trainer": 1}


def test_a_request_some_node_can_satisfy_passes_even_if_busy(ray_local):
    check_request({"CPU": 1, "tier_pico": 1}, "test", "x")  # whether it is free now does not matter


def test_a_request_no_node_can_ever_satisfy_fails_in_bounded_time_naming_the_resource(ray_local):
    # No autoscaler here: the node types are unknown, so it waits (here 1 s) for a node that could.
    with pytest.raises(ResourceRequestError, match=r"trainer_nowhere.*Change train.worker_resources"):
        check_request({"CPU": 1, "trainer_nowhere": 1}, "train.num_workers=2 workers", "train.worker_resources",
                      timeout_s=1, poll_s=0.2)
    with pytest.raises(ResourceRequestError, match="GPU"):
        check_request({"CPU": 1, "GPU": 1}, "train.num_workers=2 workers", "train.use_gpu", timeout_s=0)


def test_storage_every_node_shares(ray_local, tmp_path, monkeypatch):
    assert not is_multi_node()  # one node with CPUs, no autoscaler
    check_shared_storage("s3://bucket/prefix", shared=False)
    check_shared_storage(str(tmp_path), shared=False)  # a single node: its disk is shared by all its workers
    # `ray job submit --working-dir` runs the driver in Ray's unpacked copy, deleted with the job.
    copy = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with pytest.raises(ConfigError, match=r"storage.root='./oss-runs' is relative.*s3://"):
        check_shared_storage("./oss-runs", shared=False)


def test_tier_pinning_asks_for_the_tier_resource(ray_local):
    assert tier_pinning("pico", 0.01, "auto", "test") == {"tier_pico": 0.01}
    assert tier_pinning("pico", 0.01, "off", "test") == {}


def test_replicas_and_latency_tasks_ask_for_a_gpu_only_where_the_tier_nodes_have_one(ray_local):
    """num_gpus: auto. This instance's node carries tier_pico but no GPU: 0. A launchable node type with tier_pico
    and a GPU (as the autoscaler fills in for cluster.yaml's g4dn.xlarge): 1; one for another tier does not count."""
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    assert tier_gpus("pico") == 0 == gpus_on_tier_nodes("pico", alive, None)
    assert gpus_on_tier_nodes("pico", alive, {"target_pico": {"CPU": 4, "GPU": 1, "tier_pico": 1}}) == 1
    assert gpus_on_tier_nodes("pico", alive, {"target_heavy": {"CPU": 4, "GPU": 1, "tier_heavy": 1}}) == 0
