"""The pending-header fork tree and the link rule (protocol/fork_tree.py, SPEC.md §8.1.1), on toy headers.

A toy header is a name, its parent's name, a producer and a weight; its height is its parent's plus one. Trees
are written as ``"a<g b<a x<g"`` (``a`` is a child of ``g``) and built in that order, so arrival order is the
order written. Every table starts from a valid tree and checks what one operation leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol.errors import HeaderError, ReplayError
from protocol.fork_tree import ForkNode, ForkTree, check_link, require_parent
from protocol.light_client import HeaderReplayError, UnknownParentError


def h(name: str) -> bytes:
    return name.encode().ljust(32, b".")


class Node(ForkNode[str]):
    __slots__ = ("weight",)

    def __init__(self, name: str, parent: str, height: int, producer: str, weight: int) -> None:
        super().__init__(name, h(name), h(parent), height, producer)
        self.weight = weight


def longest(n: Node) -> int:
    return n.height


def heaviest(n: Node) -> tuple[int, int]:
    """PoC's rule: greater weight, ties to the lower hash."""
    return n.weight, -int.from_bytes(n.hash, "big")


def grow(tree: ForkTree[Node], spec: str, *, choose: bool = True) -> list[tuple[list[str], list[str]]]:
    """Add ``name<parent[:producer[:weight]]`` items in order (weight 1 unless given, added to the parent's); with
    ``choose``, make each preferred one best. Returns the (joined, left) of every switch."""
    switches = []
    for item in spec.split():
        name, rest = item.split("<")
        parts = rest.split(":")
        parent = parts[0]
        producer = parts[1] if len(parts) > 1 else "p"
        weight = parts[2] if len(parts) > 2 else "1"
        parent_node = tree.get(h(parent))
        assert parent_node is not None, item
        node = Node(name, parent, parent_node.height + 1, producer, parent_node.weight + int(weight))
        tree.add(node)
        if choose and tree.prefers(node):
            joined, left = tree.set_best(node)
            switches.append(([n.header for n in joined], [n.header for n in left]))
    return switches


def new_tree(key: Any = longest, root: str = "g", producer: str = "p") -> ForkTree[Node]:
    tree: ForkTree[Node] = ForkTree(key)
    tree.add(Node(root, "-", 0, producer, 0))
    return tree


def names(nodes: Any) -> list[str]:
    return [n.header for n in nodes]


def canon(tree: ForkTree[Node]) -> list[str]:
    return names(reversed(list(tree.branch(tree.best))))


# -- fork choice: branch switches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchCase:
    name: str
    spec: str
    best: str
    canonical: list[str]
    switches: list[tuple[list[str], list[str]]] = field(default_factory=list)
    key: Any = longest


SWITCH_CASES = [
    SwitchCase("a linear chain extends one step at a time", "a<g b<a c<b", "c", ["g", "a", "b", "c"],
               [(["a"], []), (["b"], []), (["c"], [])]),
    SwitchCase("a tie keeps the branch seen first", "a<g x<g", "a", ["g", "a"], [(["a"], [])]),
    SwitchCase("a longer fork wins; the old branch leaves", "a<g b<a x<g y<x z<y", "z", ["g", "x", "y", "z"],
               [(["a"], []), (["b"], []), (["z", "y", "x"], ["b", "a"])]),
    SwitchCase("a fork from a canonical inner node", "a<g b<a c<b x<b y<x", "y", ["g", "a", "b", "x", "y"],
               [(["a"], []), (["b"], []), (["c"], []), (["y", "x"], ["c"])]),
    SwitchCase("heaviest: a shorter but heavier branch wins and the canonical heights above it go",
               "a<g:p:1 b<a:p:1 c<b:p:1 x<g:p:5", "x", ["g", "x"],
               [(["a"], []), (["b"], []), (["c"], []), (["x"], ["c", "b", "a"])], heaviest),
    SwitchCase("heaviest: equal weight goes to the lower hash", "b<g:p:2 a<g:p:2", "a", ["g", "a"],
               [(["b"], []), (["a"], ["b"])], heaviest),
]


@pytest.mark.parametrize("case", SWITCH_CASES, ids=[c.name for c in SWITCH_CASES])
def test_branch_switch(case: SwitchCase) -> None:
    tree = new_tree(case.key)
    assert grow(tree, case.spec) == case.switches
    assert tree.best.header == case.best
    assert canon(tree) == case.canonical
    for height in range(0, 8):
        on = tree.canonical(height)
        assert (on.header if on is not None else None) == (case.canonical[height] if height < len(case.canonical)
                                                           else None)
    for node in tree.nodes():
        assert tree.is_canonical(node) == (node.header in case.canonical)


def test_first_node_is_the_best_tip_and_a_tree_without_fork_choice_has_none() -> None:
    tree = new_tree()
    assert tree.best.header == "g" and tree.is_canonical(tree.best)
    pool: ForkTree[Node] = ForkTree()
    pool.add(Node("a", "g", 1, "p", 1))
    for call in (lambda: pool.best, lambda: pool.prefers(pool.best), lambda: pool.set_best(pool.best)):
        with pytest.raises(LookupError):
            call()


# -- pruning -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneCase:
    name: str
    spec: str
    op: str
    """``to:<name>`` or ``below:<height>``."""
    removed: set[str]
    detached: set[str]
    """Nodes left whose parent is not held."""


PRUNE_CASES = [
    PruneCase("to a child of the root drops the root and the other branches", "a<g b<a c<a x<g y<x",
              "to:a", {"g", "x", "y"}, {"a"}),
    PruneCase("to a deeper node drops every branch off the path", "a<g b<a c<a d<b x<g",
              "to:b", {"g", "a", "c", "x"}, {"b"}),
    PruneCase("to the root drops nothing", "a<g x<g", "to:g", set(), {"g"}),
    PruneCase("below a height keeps orphans above it, detached", "a<g b<a c<b x<a y<x",
              "below:2", {"g", "a"}, {"b", "x"}),
    PruneCase("below the lowest height drops nothing", "a<g", "below:0", set(), {"g"}),
]


@pytest.mark.parametrize("case", PRUNE_CASES, ids=[c.name for c in PRUNE_CASES])
def test_prune(case: PruneCase) -> None:
    tree = new_tree()
    grow(tree, case.spec)
    before = set(names(tree.nodes()))
    op, arg = case.op.split(":")
    if op == "to":
        node = tree.get(h(arg))
        assert node is not None
        removed = tree.prune_to(node)
    else:
        removed = tree.prune_below(int(arg))
    assert set(names(removed)) == case.removed and len(removed) == len(case.removed)
    left = set(names(tree.nodes()))
    assert left == before - case.removed
    assert {n.header for n in tree.nodes() if tree.parent(n) is None} == case.detached
    for node in tree.nodes():  # the indexes follow
        assert node in tree.at_height(node.height) and node in tree.by_producer(node.producer)
        for child in tree.children(node):
            assert child.parent_hash == node.hash and child.hash in tree
    assert sum(len(tree.at_height(x)) for x in tree.heights()) == len(tree)
    assert all(h(name) not in tree for name in case.removed)


def test_prune_to_keeps_the_canonical_branch_above_the_new_root() -> None:
    tree = new_tree()
    grow(tree, "a<g b<a c<b x<a")
    a = tree.get(h("a"))
    assert a is not None
    tree.prune_to(a)
    assert tree.best.header == "c" and canon(tree) == ["a", "b", "c"] and tree.canonical(0) is None


# -- eviction ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvictCase:
    name: str
    spec: str
    keep: str
    gone: set[str]
    evictable: list[str]
    """In arrival order."""
    victim: str | None
    """The DPoS rule's choice: of the producer holding the most nodes, the earliest to arrive."""


EVICT_CASES = [
    EvictCase("leaves off the canonical branch only", "a<g b<a x<g y<x z<g", "", set(), ["y", "z"], "y"),
    EvictCase("never the newcomer's parent", "a<g b<a x<g y<x z<g", "y", set(), ["z"], "z"),
    EvictCase("a parent whose children all go counts as a leaf", "a<g b<a x<g y<x", "", {"y"}, ["x"], "x"),
    EvictCase("the producer holding most pays first, earliest first",
              "a<g:w1 b<a:w1 x<g:w2 y<g:w3 z<g:w3 q<g:w2 r<g:w3", "", set(), ["x", "y", "z", "q", "r"], "y"),
    EvictCase("counts include the canonical nodes of a producer", "a<g:w1 b<a:w1 x<g:w2 y<g:w1", "", set(),
              ["x", "y"], "y"),
    EvictCase("nothing off the canonical branch", "a<g b<a", "", set(), [], None),
]


@pytest.mark.parametrize("case", EVICT_CASES, ids=[c.name for c in EVICT_CASES])
def test_eviction_order(case: EvictCase) -> None:
    tree = new_tree()
    grow(tree, case.spec)
    gone = {h(name) for name in case.gone}
    keep = h(case.keep) if case.keep else b""
    leaves = list(tree.evictable_leaves(tree.nodes(), keep=keep, gone=gone))
    assert names(leaves) == case.evictable
    victim = min(leaves, key=lambda n: (-tree.producer_count(n.producer), n.serial), default=None)
    assert (victim.header if victim is not None else None) == case.victim
    if victim is not None:
        best = tree.best
        removed = names(tree.remove_subtree(victim))
        assert removed[-1] == victim.header and set(removed) <= {victim.header} | case.gone
        assert tree.best is best and victim.hash not in tree
        parent = tree.get(victim.parent_hash)
        assert parent is not None and victim not in tree.children(parent)


def test_subtree_is_leaves_first_and_removal_updates_producer_counts() -> None:
    tree = new_tree()
    grow(tree, "a<g:w1 x<g:w2 y<x:w2 z<y:w3 q<x:w3", choose=False)
    x = tree.get(h("x"))
    assert x is not None
    order = names(tree.subtree(x))
    assert set(order) == {"x", "y", "z", "q"} and order[-1] == "x" and order.index("z") < order.index("y")
    assert (tree.producer_count("w2"), tree.producer_count("w3")) == (2, 2)
    tree.remove_subtree(x)
    assert (tree.producer_count("w2"), tree.producer_count("w3"), tree.producer_count("w1")) == (0, 0, 1)
    assert list(tree.producers()) == ["p", "w1"] and list(tree.by_producer("w2")) == []
    assert tree.best.header == "g" and names(tree.children(tree.best)) == ["a"]
    a = tree.get(h("a"))
    assert a is not None
    tree.release(a)  # still held, no longer counted
    tree.release(a)
    assert tree.producer_count("w1") == 0 and list(tree.producers()) == ["p"] and h("a") in tree
    tree.remove(a)
    assert h("a") not in tree and list(tree.producers()) == ["p"]


# -- unknown parents, detached nodes, duplicates ----------------------------------------------------------------


def test_a_header_whose_parent_is_not_held_is_unknown_parent() -> None:
    tree = new_tree()
    grow(tree, "a<g")
    assert require_parent(tree, h("a"), 2, client="demo-0", held="held").header == "a"
    with pytest.raises(UnknownParentError, match="does not link to any header client demo-0 holds") as info:
        require_parent(tree, h("nowhere"), 5, client="demo-0", held="the final tip or a pending header")
    assert info.value.code == "header.unknown_parent" and info.value.got == h("nowhere").hex()


def test_detached_nodes_are_adopted_when_their_parent_arrives() -> None:
    pool: ForkTree[Node] = ForkTree()
    for name, parent, height in (("c", "b", 3), ("c2", "b", 3), ("b", "a", 2)):
        pool.add(Node(name, parent, height, "p", 1))
    b = pool.get(h("b"))
    assert b is not None and names(pool.children(b)) == ["c", "c2"] and pool.parent(b) is None
    pool.remove(b)  # its children wait for it again
    assert all(pool.parent(n) is None for n in pool.nodes())
    pool.add(Node("b", "a", 2, "p", 1))
    b = pool.get(h("b"))
    assert b is not None and names(pool.children(b)) == ["c", "c2"]
    c = pool.get(h("c"))
    assert c is not None and pool.parent(c) is b and pool.descends_from(c, b) and not pool.descends_from(b, c)


def test_a_held_hash_is_a_replay_and_changes_nothing() -> None:
    tree = new_tree()
    grow(tree, "a<g x<g")
    before = (names(tree.nodes()), [n.serial for n in tree.nodes()], tree.producer_count("p"))
    with pytest.raises(HeaderReplayError) as info:
        tree.add(Node("x", "g", 1, "p", 1))
    assert isinstance(info.value, ReplayError) and info.value.code == "packet.replay"
    assert (names(tree.nodes()), [n.serial for n in tree.nodes()], tree.producer_count("p")) == before
    g = tree.get(h("g"))
    assert g is not None and names(tree.children(g)) == ["a", "x"]


# -- the link rule -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkCase:
    name: str
    height: int
    ts: int
    same_time: bool
    match: str | None
    expected: Any = None


LINK_CASES = [
    LinkCase("next height, later time", 6, 1001, False, None),
    LinkCase("height gap", 7, 1001, False, "height gap after 5: header 7 is not one above its parent", 6),
    LinkCase("same height as the parent", 5, 1001, True, "height gap", 6),
    LinkCase("same time, strict", 6, 1000, False, "timestamp of header 6 not after its parent's", "> 1000"),
    LinkCase("earlier time, strict", 6, 999, False, "not after its parent's", "> 1000"),
    LinkCase("same time allowed", 6, 1000, True, None),
    LinkCase("earlier time, same time allowed", 6, 999, True, "timestamp of header 6 is before its parent's",
             ">= 1000"),
]


@pytest.mark.parametrize("case", LINK_CASES, ids=[c.name for c in LINK_CASES])
def test_check_link(case: LinkCase) -> None:
    if case.match is None:
        check_link(case.height, case.ts, 5, 1000, same_time=case.same_time)
        return
    with pytest.raises(HeaderError, match=case.match) as info:
        check_link(case.height, case.ts, 5, 1000, same_time=case.same_time)
    assert info.value.code == "header.invalid" and info.value.expected == case.expected
