"""The node's container runtime: OCI runtime specs from what the agent wants (`spec`), and
container lifecycle under runc with one conmon monitor per container (`runc`), so that
containers outlive the agent, write CRI-format logs and leave their exit codes in files."""

from kubling.node.runtime.runc import (
    ContainerNotFoundError,
    ContainerRuntimeError,
    ContainerState,
    Runtime,
)
from kubling.node.runtime.spec import (
    HOST,
    RUNTIME_DEFAULT,
    ContainerConfig,
    Device,
    Mount,
    Namespaces,
    Resources,
    SpecError,
    oci_spec,
)

__all__ = [
    "HOST",
    "RUNTIME_DEFAULT",
    "ContainerConfig",
    "ContainerNotFoundError",
    "ContainerRuntimeError",
    "ContainerState",
    "Device",
    "Mount",
    "Namespaces",
    "Resources",
    "Runtime",
    "SpecError",
    "oci_spec",
]
