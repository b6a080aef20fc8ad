"""Ray's fake multi-node provider with one temp folder per node, as separate machines would have.

The stock provider starts every fake node in the head's session folder, so a job's working_dir
unpacked by one node deletes the folder another node's driver runs in. The autoscaler loads this
class through cluster.yaml's `provider: {type: external, module: tests.cluster.fake_provider.SeparateNodesProvider}`
(its `temp_root` is the folder under which each node gets its own).
"""

from __future__ import annotations

import json
import os

from ray._private import ray_constants
from ray._private.node import Node
from ray._private.parameter import RayParams
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (NODE_KIND_WORKER, STATUS_UP_TO_DATE, TAG_RAY_NODE_KIND, TAG_RAY_NODE_NAME,
                                 TAG_RAY_NODE_STATUS, TAG_RAY_USER_NODE_TYPE)


class SeparateNodesProvider(FakeMultiNodeProvider):
    def __init__(self, provider_config, cluster_name):
        super().__init__(provider_config, cluster_name)
        self._temp_root = provider_config["temp_root"]
        self._gcs = provider_config["gcs_address"]

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = dict(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            node_id = self._next_hex_node_id()
            params = RayParams(
                min_worker_port=0, max_worker_port=0, dashboard_port=None, dashboard_agent_listen_port=0,
                num_cpus=resources.pop("CPU", 0), num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None), resources=resources, labels=labels,
                redis_address=self._gcs, gcs_address=self._gcs,
                temp_dir=os.path.join(self._temp_root, f"n{node_id[-5:]}"),
                env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id, "RAY_CLOUD_INSTANCE_ID": node_id,
                          "RAY_NODE_TYPE_NAME": node_type,
                          ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                          ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels)})
            node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {"node": node, "tags": {
                TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type, TAG_RAY_NODE_NAME: node_id,
                TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE, **tags}}

