"""The plugin registry: a name → factory map, and the default profile's plugin set.

Adding a plugin is one module here and one line in ``REGISTRY`` (and in ``DEFAULTS`` if it
should run by default). Weights are upstream's defaults.
"""

from __future__ import annotations

from kubling.scheduler.framework import PluginFactory, PluginSpec
from kubling.scheduler.plugins import (
    balanced_allocation,
    default_preemption,
    image_locality,
    inter_pod_affinity,
    node_affinity,
    node_name,
    node_ports,
    node_resources_fit,
    node_unschedulable,
    pod_topology_spread,
    taint_toleration,
    volume_binding,
)

__all__ = ["DEFAULTS", "REGISTRY"]

REGISTRY: dict[str, PluginFactory] = {
    node_unschedulable.NAME: node_unschedulable.new,
    node_name.NAME: node_name.new,
    taint_toleration.NAME: taint_toleration.new,
    node_affinity.NAME: node_affinity.new,
    node_ports.NAME: node_ports.new,
    node_resources_fit.NAME: node_resources_fit.new,
    volume_binding.NAME: volume_binding.new,
    pod_topology_spread.NAME: pod_topology_spread.new,
    inter_pod_affinity.NAME: inter_pod_affinity.new,
    balanced_allocation.NAME: balanced_allocation.new,
    image_locality.NAME: image_locality.new,
    default_preemption.NAME: default_preemption.new,
}

#: Upstream's default plugin order (cheap, decisive filters first) and score weights.
DEFAULTS: tuple[PluginSpec, ...] = (
    PluginSpec(node_unschedulable.NAME),
    PluginSpec(node_name.NAME),
    PluginSpec(taint_toleration.NAME, weight=3),
    PluginSpec(node_affinity.NAME, weight=2),
    PluginSpec(node_ports.NAME),
    PluginSpec(node_resources_fit.NAME, weight=1),
    PluginSpec(volume_binding.NAME),
    PluginSpec(pod_topology_spread.NAME, weight=2),
    PluginSpec(inter_pod_affinity.NAME, weight=2),
    PluginSpec(balanced_allocation.NAME, weight=1),
    PluginSpec(image_locality.NAME, weight=1),
    PluginSpec(default_preemption.NAME),
)
