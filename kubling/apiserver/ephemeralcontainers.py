"""The ``pods/ephemeralcontainers`` subresource's strategy (what ``kubectl debug`` writes).

Upstream's EphemeralContainersStrategy: a GET, PUT or PATCH here reads and writes a whole
Pod, yet only ``spec.ephemeralContainers`` is taken from the request; everything else comes
from the stored pod. Validation is the full pod's plus the one transition rule: existing
ephemeral containers stay exactly as they are. The regular pod endpoint refuses any change
to that list (``validate_pod_update``), so this is the only way in.
"""

from __future__ import annotations

import copy

from kubling.api import field, names
from kubling.api.meta import Object
from kubling.api.validation import pods
from kubling.apiserver.registry import kinds


class EphemeralContainersStrategy(kinds.PodStrategy):
    """Pods through ``pods/<name>/ephemeralcontainers``."""

    subresource = "ephemeralcontainers"

    def prepare_for_update(self, new: Object, old: Object) -> None:
        """The stored pod with the request's ephemeral containers, defaulted as on create
        (the request's body went through the decoder's defaulting upstream)."""
        self.default(new)
        wanted = (new.get("spec") or {}).get("ephemeralContainers")
        replacement = copy.deepcopy(old)
        md = replacement["metadata"]
        md["resourceVersion"] = new["metadata"].get("resourceVersion", "")
        if "managedFields" in new["metadata"]:  # ownership of this write (apply)
            md["managedFields"] = new["metadata"]["managedFields"]
        spec = replacement.setdefault("spec", {})
        if wanted:
            spec["ephemeralContainers"] = wanted
        else:
            spec.pop("ephemeralContainers", None)
        new.clear()
        new.update(replacement)

    def validate_update(self, new: Object, old: Object) -> list[field.FieldError]:
        """``ValidatePodEphemeralContainersUpdate``: the pod as a whole must be valid (this
        checks the new containers), and the existing ones unchanged. Not the regular pod
        update rules, which forbid exactly the change this endpoint exists to make."""
        errors = names.validate_object_meta(
            new, namespaced=True, name_rule=self.name_rule, kube_finalizers=True
        )
        errors.extend(names.validate_object_meta_update(new, old))
        errors.extend(pods.validate_pod(new))
        errors.extend(pods.validate_ephemeral_containers_update(new, old))
        return errors
