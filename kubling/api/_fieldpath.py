"""Field sets as tries in the ``FieldsV1`` shape, and the set algebra server-side apply needs.

Upstream (sigs.k8s.io/structured-merge-diff ``fieldpath``) keeps a set as sorted member and
child lists and serializes it to the nested JSON stored in ``managedFields[].fieldsV1``. We
store a set *directly* in that nested shape, because decoding stored managed fields then costs
nothing and encoding is a sort: a node is a ``dict`` from path-element strings (``f:name``,
``k:{"name":"x"}``, ``v:"a"``, ``i:0``) to child nodes, where

* ``{}`` is a member without children (a leaf),
* a node holding ``"."`` is a member that also has children,
* any other node is only a prefix of members below it.

Nodes are never mutated once built, so sets share subtrees freely (a union reuses both
inputs' unchanged branches). The root is a child map: the empty path is never a member.

Ordering matches upstream ``PathElement.Compare`` (field names, then keys, then values, then
indices; values ordered numerically/lexically by type), which fixes both the key order of
serialized ``fieldsV1`` and the order in which conflicts are listed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

Node = dict[str, Any]

DOT = "."
_EMPTY: Node = {}
_DOT_ONLY: Node = {DOT: _EMPTY}


# --------------------------------------------------------------------------- element text


def go_json(value: Any) -> str:
    """Compact JSON as Go's ``encoding/json`` writes it: sorted keys, HTML characters escaped.

    Element strings embed JSON (``k:{"name":"nginx"}``) and must be byte-identical to what
    kube-apiserver stores, or clients comparing managed fields would see phantom changes.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return text


def field_element(name: str) -> str:
    return "f:" + name


def key_element(fields: dict[str, Any]) -> str:
    """``k:`` element of an associative-list item; the key fields are sorted by name."""
    return "k:" + go_json(fields)


def value_element(value: Any) -> str:
    return "v:" + go_json(value)


def index_element(index: int) -> str:
    return "i:" + str(index)


def _value_order(value: Any) -> tuple[Any, ...]:
    """Upstream ``value.Compare``: numbers < strings < bools < lists < maps < null."""
    if value is None:
        return (5,)
    if value is True or value is False:
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, list):
        return (3, tuple(_value_order(v) for v in value))
    if isinstance(value, dict):
        return (4, tuple((k, _value_order(value[k])) for k in sorted(value)))
    return (6, str(value))


_ORDER_CACHE: dict[str, tuple[Any, ...]] = {}


def element_order(element: str) -> tuple[Any, ...]:
    """Sort key of a path-element string, cached (the same few strings recur constantly)."""
    cached = _ORDER_CACHE.get(element)
    if cached is not None:
        return cached
    kind = element[:2]
    rest = element[2:]
    order: tuple[Any, ...]
    try:
        if kind == "f:":
            order = (0, rest)
        elif kind == "k:":
            parsed = json.loads(rest)
            order = (1, tuple((k, _value_order(parsed[k])) for k in sorted(parsed)))
        elif kind == "v:":
            order = (2, _value_order(json.loads(rest)))
        elif kind == "i:":
            order = (3, int(rest))
        else:
            order = (4, element)
    except (ValueError, TypeError, AttributeError):
        order = (4, element)
    if len(_ORDER_CACHE) < 100_000:
        _ORDER_CACHE[element] = order
    return order


def _go_value_string(value: Any) -> str:
    """Upstream ``value.ToString``: strings quoted, maps as ``{k=v;...}``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_go_value_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ";".join(f"{k}={_go_value_string(value[k])}" for k in sorted(value)) + "}"
    return str(value)


def element_string(element: str) -> str:
    """How upstream prints one path element: ``.name``, ``[name="x"]``, ``[="v"]``, ``[0]``."""
    kind, rest = element[:2], element[2:]
    try:
        if kind == "f:":
            return "." + rest
        if kind == "k:":
            parsed = json.loads(rest)
            return "[" + ",".join(f"{k}={_go_value_string(parsed[k])}" for k in parsed) + "]"
        if kind == "v:":
            return "[=" + _go_value_string(json.loads(rest)) + "]"
        if kind == "i:":
            return "[" + rest + "]"
    except ValueError:
        pass
    return "{{invalid path element}}"


def path_string(path: tuple[str, ...]) -> str:
    return "".join(element_string(e) for e in path)


# --------------------------------------------------------------------------- node algebra


def is_member(node: Node) -> bool:
    return not node or DOT in node


def _expand(node: Node) -> Node:
    return node if node else _DOT_ONLY


def _normalize(node: Node) -> Node | None:
    if not node:
        return None
    if len(node) == 1 and DOT in node:
        return _EMPTY
    return node


def union_children(a: Node, b: Node) -> Node:
    """Union of two child maps (the root, or a node's entries)."""
    if a is b or not b:
        return a
    if not a:
        return b
    result = dict(a)
    for key, bv in b.items():
        av = result.get(key)
        if av is None:
            result[key] = bv
        elif key != DOT and av is not bv:
            result[key] = union_node(av, bv)
    return result


def union_node(a: Node, b: Node) -> Node:
    if a is b:
        return a
    merged = union_children(_expand(a), _expand(b))
    return _normalize(merged) or _EMPTY


def difference_children(a: Node, b: Node) -> Node:
    """Members of ``a`` that are not members of ``b`` (upstream ``Set.Difference``)."""
    if not b or not a:
        return a
    result: Node = {}
    changed = False
    for key, av in a.items():
        bv = b.get(key)
        if bv is None:
            result[key] = av
            continue
        changed = True
        if key == DOT:
            continue
        diff = difference_node(av, bv)
        if diff is not None:
            result[key] = diff
    return result if changed else a


def difference_node(a: Node, b: Node) -> Node | None:
    return _normalize(difference_children(_expand(a), _expand(b)))


def intersection_children(a: Node, b: Node) -> Node:
    if not a or not b:
        return {}
    if len(b) < len(a):
        a, b = b, a
    result: Node = {}
    for key, av in a.items():
        bv = b.get(key)
        if bv is None:
            continue
        if key == DOT:
            result[DOT] = _EMPTY
            continue
        inter = intersection_node(av, bv)
        if inter is not None:
            result[key] = inter
    return result


def intersection_node(a: Node, b: Node) -> Node | None:
    return _normalize(intersection_children(_expand(a), _expand(b)))


def recursive_difference_children(a: Node, b: Node) -> Node:
    """Drop from ``a`` every path that has a member of ``b`` as a prefix (or is one)."""
    if not b or not a:
        return a
    result: Node = {}
    changed = False
    for key, av in a.items():
        bv = b.get(key)
        if bv is None or key == DOT:
            result[key] = av
            continue
        changed = True
        if is_member(bv):
            continue
        diff = _normalize(recursive_difference_children(_expand(av), bv))
        if diff is not None:
            result[key] = diff
    return result if changed else a


def leaves_children(a: Node) -> Node:
    """Members without children (upstream ``Set.Leaves``), recursively."""
    result: Node = {}
    for key, av in a.items():
        if key == DOT:
            continue
        if not av:
            result[key] = _EMPTY
        else:
            sub = leaves_children(av)
            if sub:
                result[key] = sub
    return result


def has_path(root: Node, path: tuple[str, ...]) -> bool:
    node = root
    for i, element in enumerate(path):
        child = node.get(element) if element != DOT else None
        if child is None:
            return False
        if i == len(path) - 1:
            return is_member(child)
        node = child
    return False


def with_prefix(root: Node, element: str) -> Node:
    child = root.get(element)
    if not child:
        return {}
    return {k: v for k, v in child.items() if k != DOT}


def iterate(root: Node, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Member paths in upstream order: a level's members first, then each child's subtree."""
    keys = sorted((k for k in root if k != DOT), key=element_order)
    for key in keys:
        if is_member(root[key]):
            yield (*prefix, key)
    for key in keys:
        child = root[key]
        if child and (len(child) > 1 or DOT not in child):
            yield from iterate({k: v for k, v in child.items() if k != DOT}, (*prefix, key))


def count(root: Node) -> int:
    total = 0
    for key, child in root.items():
        if key == DOT:
            continue
        if is_member(child):
            total += 1
        if child:
            total += count(child)
    return total


def insert(root: Node, path: tuple[str, ...]) -> Node:
    """A new child map with ``path`` added as a member (input untouched)."""
    if not path:
        return root
    node: Node = _EMPTY
    for element in reversed(path[1:]):
        node = {element: node}
    return union_children(root, {path[0]: node})


# --------------------------------------------------------------------------- FieldsV1


def to_fieldsv1(root: Node) -> dict[str, Any]:
    """The nested JSON upstream stores: ``"."`` first, then elements in upstream order."""
    return _encode(root)


def _encode(node: Node) -> dict[str, Any]:
    if not node:
        return {}
    out: dict[str, Any] = {}
    if DOT in node:
        out[DOT] = {}
    keys = [k for k in node if k != DOT]
    if len(keys) > 1:
        keys.sort(key=element_order)
    for key in keys:
        out[key] = _encode(node[key])
    return out


class FieldsV1Error(ValueError):
    """A stored or client-supplied ``fieldsV1`` value is not a valid field set."""


_ELEMENT_PREFIXES = ("f:", "k:", "v:", "i:")


def from_fieldsv1(data: Any, *, validate: bool = True) -> Node:
    """Parse ``fieldsV1`` into a root child map, rejecting malformed input like upstream.

    Stored (already validated) data can skip validation: the dicts are then shared as-is,
    which is what makes reading managed fields on every write cheap.
    """
    if not isinstance(data, dict):
        raise FieldsV1Error("expected a JSON object for FieldsV1")
    if not validate:
        return {k: v for k, v in data.items() if k != DOT} if DOT in data else data
    return _parse(data, root=True)


def _parse(data: dict[str, Any], root: bool) -> Node:
    out: Node = {}
    for key, value in data.items():
        if not isinstance(value, dict):
            raise FieldsV1Error(f"expected an object for {key!r} in FieldsV1")
        if key == DOT:
            if value:
                raise FieldsV1Error("'.' in FieldsV1 must map to an empty object")
            if not root:
                out[DOT] = _EMPTY
            continue
        if not key.startswith(_ELEMENT_PREFIXES):
            raise FieldsV1Error(f"parsing error: unknown path element type {key!r}")
        if key[0] in "kv":
            try:
                parsed = json.loads(key[2:])
            except ValueError:
                raise FieldsV1Error(f"parsing error: invalid path element {key!r}") from None
            if key[0] == "k" and not isinstance(parsed, dict):
                raise FieldsV1Error(f"parsing error: invalid key {key!r}")
            key = key[:2] + go_json(parsed)
        elif key[0] == "i" and not key[2:].lstrip("-").isdigit():
            raise FieldsV1Error(f"parsing error: invalid index {key!r}")
        out[key] = (_normalize(_parse(value, root=False)) or _EMPTY) if value else _EMPTY
    return out


class FieldSet:
    """An immutable set of field paths, as recorded in ``managedFields``.

    Paths are tuples of element strings (``("f:spec", "f:replicas")``). Construction from an
    object is :func:`kubling.api.fieldmanager.field_set`; this class is the algebra and the
    ``fieldsV1`` codec.
    """

    __slots__ = ("_root",)

    def __init__(self, root: Node | None = None) -> None:
        self._root: Node = root if root is not None else {}

    @property
    def root(self) -> Node:
        """The trie (do not mutate: subtrees are shared between sets)."""
        return self._root

    @classmethod
    def from_paths(cls, paths: list[tuple[str, ...]]) -> FieldSet:
        root: Node = {}
        for path in paths:
            root = insert(root, path)
        return cls(root)

    @classmethod
    def from_fieldsv1(cls, data: Any) -> FieldSet:
        """Parse a ``fieldsV1`` value; :class:`FieldsV1Error` if it is malformed."""
        return cls(from_fieldsv1(data))

    def to_fieldsv1(self) -> dict[str, Any]:
        return to_fieldsv1(self._root)

    def empty(self) -> bool:
        return not self._root

    def __bool__(self) -> bool:
        return bool(self._root)

    def __len__(self) -> int:
        return count(self._root)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iterate(self._root)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, tuple) and has_path(self._root, path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSet):
            return NotImplemented
        return self.to_fieldsv1() == other.to_fieldsv1()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_fieldsv1(), sort_keys=True))

    def __repr__(self) -> str:
        return f"FieldSet({[path_string(p) for p in self]})"

    def _op(self, fn: Callable[[Node, Node], Node], other: FieldSet) -> FieldSet:
        return FieldSet(fn(self._root, other._root))

    def union(self, other: FieldSet) -> FieldSet:
        return self._op(union_children, other)

    def difference(self, other: FieldSet) -> FieldSet:
        """Paths that are members here but not in ``other`` (children of ``other``'s
        members survive: use :meth:`recursive_difference` to drop whole subtrees)."""
        return self._op(difference_children, other)

    def intersection(self, other: FieldSet) -> FieldSet:
        return self._op(intersection_children, other)

    def recursive_difference(self, other: FieldSet) -> FieldSet:
        return self._op(recursive_difference_children, other)

    def leaves(self) -> FieldSet:
        return FieldSet(leaves_children(self._root))

    def strings(self) -> list[str]:
        """Member paths as upstream prints them (``.spec.containers[name="x"].image``)."""
        return [path_string(p) for p in self]
