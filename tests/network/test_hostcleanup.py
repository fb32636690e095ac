"""``kubling server --cleanup``'s network part, without touching the host: the names it
matches, and the ``nat`` rules it removes, against a fake ``iptables`` that records calls."""

from __future__ import annotations

import uuid
from pathlib import Path

from kubling.network import hostcleanup
from kubling.node import sandbox

LISTING = r"""-P POSTROUTING ACCEPT
-N CNI-HOSTPORT-DNAT
-N CNI-aaaaaaaaaaaaaaaaaaaaaaaa
-N CNI-bbbbbbbbbbbbbbbbbbbbbbbb
-N CNI-DN-cccccccccccccccccccccc
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.42.0.2/32 -m comment --comment "name: \"kubling\" id: \"0d881c0f\"" -j CNI-aaaaaaaaaaaaaaaaaaaaaaaa
-A POSTROUTING -s 10.88.0.2/32 -m comment --comment "name: \"podman\" id: \"1234\"" -j CNI-bbbbbbbbbbbbbbbbbbbbbbbb
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"kubling\" id: \"0d881c0f\"" -m multiport --dports 8080 -j CNI-DN-cccccccccccccccccccccc
-A CNI-aaaaaaaaaaaaaaaaaaaaaaaa -d 10.42.0.0/24 -m comment --comment "name: \"kubling\" id: \"0d881c0f\"" -j ACCEPT
"""


def fake_iptables(tmp_path: Path) -> tuple[str, Path]:
    calls = tmp_path / "calls"
    listing = tmp_path / "listing"
    listing.write_text(LISTING)
    tool = tmp_path / "iptables"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                    f"case \"$*\" in *' -S') cat {listing};; esac\n")
    tool.chmod(0o755)
    return str(tool), calls


def test_pod_namespaces_are_matched_exactly() -> None:
    for _ in range(20):
        assert hostcleanup.POD_NETNS.match(sandbox.netns_name(str(uuid.uuid4())))
    for other in ("kubling-pt3fa2a", "kubling-e2e-x", "kubling0", "cni-1234"):
        assert not hostcleanup.POD_NETNS.match(other)


def test_only_the_kubling_networks_nat_rules_and_chains_go(tmp_path: Path) -> None:
    tool, calls = fake_iptables(tmp_path)
    removed = hostcleanup.cni_nat_rules("kubling", tool=tool)
    assert removed == ["CNI-aaaaaaaaaaaaaaaaaaaaaaaa", "CNI-DN-cccccccccccccccccccccc"]
    made = calls.read_text().splitlines()
    deletes = [c for c in made if " -D " in c]
    assert len(deletes) == 3 and not any("podman" in c for c in deletes)
    assert not any("CNI-HOSTPORT-DNAT" in c for c in made if " -X " in c or " -F " in c)
    assert made[-4:] == ["-w 5 -t nat -F CNI-aaaaaaaaaaaaaaaaaaaaaaaa",
                         "-w 5 -t nat -X CNI-aaaaaaaaaaaaaaaaaaaaaaaa",
                         "-w 5 -t nat -F CNI-DN-cccccccccccccccccccccc",
                         "-w 5 -t nat -X CNI-DN-cccccccccccccccccccccc"]


def test_no_iptables_means_nothing_to_remove(tmp_path: Path) -> None:
    assert hostcleanup.cni_nat_rules(tool=str(tmp_path / "missing")) == []
