"""ImageLocality: prefer nodes that already have the pod's images, weighted by image size
and by how widely the image is spread (an image on every node says nothing), as upstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubling.scheduler.interface import MAX_NODE_SCORE, SKIP, SUCCESS, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "ImageLocality"
_MB = 1024 * 1024
#: Below this sum an image is cheap to pull anyway; above max the advantage is saturated.
MIN_THRESHOLD = 23 * _MB
MAX_CONTAINER_THRESHOLD = 1000 * _MB
_KEY = NAME + "/state"


def calculate_priority(sum_scores: int, num_containers: int) -> int:
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
    return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


class ImageLocality:
    name = NAME

    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status:
        """No candidate node has any of the pod's images: every score would be zero; skip."""
        if not any(image in snapshot.image_num_nodes for image in pod.images):
            return SKIP
        state.write(_KEY, (len(snapshot), snapshot.image_num_nodes))
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if not node.images or not pod.images:
            return 0
        total_nodes, num_nodes = state.data[_KEY]
        total = 0
        for image in pod.images:
            size = node.images.get(image)
            if size is not None:
                total += int(size * (num_nodes[image] / total_nodes))
        return calculate_priority(total, len(pod.images))


def new(args: Mapping[str, Any], handle: Handle) -> ImageLocality:
    return ImageLocality()
