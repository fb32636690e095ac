"""The informer's indexed cache."""

from __future__ import annotations

from typing import Any

import pytest

from kubling.client import informer


def _pod(name: str, namespace: str = "ns", node: str = "", rv: str = "1",
         **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "resourceVersion": rv},
            "spec": {"nodeName": node}}


def _by_node(obj: dict[str, Any]) -> list[str]:
    node = obj["spec"].get("nodeName")
    return [node] if node else []


def test_keys_follow_client_go() -> None:
    assert informer.key_of(_pod("a", "ns")) == "ns/a"
    assert informer.key_of({"metadata": {"name": "node1"}}) == "node1"
    assert informer.split_key("ns/a") == ("ns", "a")
    assert informer.split_key("node1") == ("", "node1")


def test_get_list_and_namespace_index() -> None:
    indexer = informer.Indexer()
    assert indexer.upsert(_pod("a", "one")) is None
    indexer.upsert(_pod("b", "one"))
    indexer.upsert(_pod("c", "two"))
    assert len(indexer) == 3 and "one/a" in indexer
    assert indexer.get("one/a") == _pod("a", "one")
    assert indexer.get("two/a") is None
    assert sorted(informer.key_of(o) for o in indexer.list()) == ["one/a", "one/b", "two/c"]
    assert [informer.key_of(o) for o in indexer.by_index("namespace", "one")] == ["one/a", "one/b"]
    assert indexer.index_keys(informer.NAMESPACE_INDEX, "two") == ["two/c"]
    assert indexer.by_index("namespace", "three") == []


def test_updates_and_deletes_move_index_entries() -> None:
    indexer = informer.Indexer()
    indexer.add_index("node", _by_node)
    indexer.upsert(_pod("a", node="n1"))
    indexer.upsert(_pod("b", node="n1"))
    old = indexer.upsert(_pod("a", node="n2", rv="2"))
    assert old is not None and old["spec"]["nodeName"] == "n1"
    assert indexer.index_keys("node", "n1") == ["ns/b"]
    assert indexer.index_keys("node", "n2") == ["ns/a"]
    gone = indexer.delete("ns/b")
    assert gone is not None and gone["metadata"]["name"] == "b"
    assert indexer.index_keys("node", "n1") == []
    assert indexer.delete("ns/b") is None
    assert indexer.keys() == ["ns/a"]


def test_an_index_added_late_covers_existing_objects() -> None:
    indexer = informer.Indexer()
    indexer.upsert(_pod("a", app="web"))
    indexer.upsert(_pod("b", app="db"))
    indexer.upsert(_pod("c"))
    indexer.add_index("app", lambda o: [v for k, v in o["metadata"]["labels"].items()
                                         if k == "app"])
    assert indexer.index_keys("app", "web") == ["ns/a"]
    assert indexer.index_keys("app", "db") == ["ns/b"]
    with pytest.raises(ValueError):
        indexer.add_index("app", _by_node)
    with pytest.raises(ValueError, match="already exists"):
        indexer.add_index("app", _by_node, exist_ok=True)  # same name, another function
    indexer.add_index("node", _by_node)
    indexer.add_index("node", _by_node, exist_ok=True)  # a second controller, same index
    with pytest.raises(KeyError):
        indexer.by_index("nope", "x")


def test_multi_valued_index() -> None:
    indexer = informer.Indexer()
    indexer.add_index("labels", lambda o: [f"{k}={v}" for k, v in
                                           o["metadata"]["labels"].items()])
    indexer.upsert(_pod("a", app="web", tier="front"))
    indexer.upsert(_pod("b", app="web"))
    assert indexer.index_keys("labels", "app=web") == ["ns/a", "ns/b"]
    assert indexer.index_keys("labels", "tier=front") == ["ns/a"]
    indexer.upsert(_pod("a", app="web"))
    assert indexer.index_keys("labels", "tier=front") == []
