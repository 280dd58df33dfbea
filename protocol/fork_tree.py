"""The tree of pending headers a light client holds above finality, and the link rule (SPEC.md §8.1.1).

A light client of a chain whose blocks become final only later — the DPoS last irreversible block, the PoC
confirmation depth and window, attestations of Ethereum blocks — holds headers that are not final yet, and
more than one at a height whenever the chain forks. :class:`ForkTree` is that store, one copy for every client
type; what a client decides with it (fork choice, finality, which header to drop for room) stays the client's:

* **Nodes** (:class:`ForkNode`, which a client subclasses to keep its own per-header state) by hash, in arrival
  order, each linked to its parent by the parent's hash. A node whose parent is held is among that parent's
  children; one whose parent is not held is *detached* and is adopted when the parent arrives (the Ethereum
  client holds headers before their parents; a pruned root leaves its children detached). Indexes by height
  and by producer (the witness or farmer that made the header) follow every change.
* **The canonical branch**, in a tree built with a fork-choice ``key``: the best tip is the node the client
  last made best (:meth:`ForkTree.set_best`), normally because :meth:`ForkTree.prefers` said its key beats
  the tip's (strictly: on a tie the tip stays, so the branch seen first wins); the canonical branch is the
  best tip and its held ancestors, indexed by height. The first node added to an empty tree is its best tip.
* **Pruning**: :meth:`ForkTree.prune_to` (finality moved to a node: its ancestors and every branch off them
  go), :meth:`ForkTree.prune_below` (fork points below a height age out), :meth:`ForkTree.remove` and
  :meth:`ForkTree.remove_subtree` (eviction).
* **Eviction hooks**: :meth:`ForkTree.evictable_leaves` lists the nodes a client may drop for room — leaves off
  the canonical branch — and :meth:`ForkTree.producer_count` / :meth:`ForkTree.by_producer` give the
  per-producer accounting a client's rule ranks them by (the producer holding most pays first); a node that no
  longer takes room (a final header kept as a fork point) leaves it by :meth:`ForkTree.release`.

:func:`check_link` is the rule linking a header to a held parent (height one above, time not before), and
:func:`require_parent` answers a header whose parent is not held with
:class:`~protocol.light_client.UnknownParentError`.

Nothing here reads a clock or does I/O. Every operation costs in proportion to the nodes it adds, visits or
removes (:meth:`ForkTree.prune_below` also to the heights held), so a client can call it on every header.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Iterator, KeysView
from typing import Any, Generic, TypeVar, cast

from protocol.errors import HeaderError
from protocol.light_client import HeaderReplayError, UnknownParentError

__all__ = ["ForkNode", "ForkTree", "check_link", "require_parent", "unknown_parent"]

H = TypeVar("H")
N = TypeVar("N", bound="ForkNode[Any]")


class ForkNode(Generic[H]):
    """One header held in a :class:`ForkTree`. A client subclasses it (with ``__slots__``) for its own state."""

    __slots__ = ("children", "hash", "header", "height", "parent_hash", "producer", "serial")

    def __init__(self, header: H, header_hash: bytes, parent_hash: bytes, height: int, producer: str = "") -> None:
        self.header = header
        """The header, or what the client keeps of it (the PoC client keeps its consensus context)."""
        self.hash = header_hash
        """The header's hash: its key in the tree, and what its children name as parent."""
        self.parent_hash = parent_hash
        """Hash of the parent header (held or not)."""
        self.height = height
        """Height of the header."""
        self.producer = producer
        """Who made the header (a DPoS witness, a PoC farmer; empty where headers are unsigned)."""
        self.children: list[ForkNode[H]] = []
        """Held nodes naming this one as parent, in arrival order. Maintained by the tree."""
        self.serial = -1
        """Arrival number in the tree (grows by one per node added): arrival order where a rule needs it."""


class ForkTree(Generic[N]):
    """Nodes by hash, linked by parent hash, with height and producer indexes and an optional canonical branch.

    The tree never validates a header: the client adds what its rules accepted and removes what they drop.
    """

    __slots__ = ("_best", "_best_key", "_by_height", "_by_producer", "_canon", "_key", "_nodes", "_serial",
                 "_waiting")

    def __init__(self, key: Callable[[N], Any] | None = None) -> None:
        """``key`` is the fork choice: a node whose key is greater than the best tip's is preferred (keys of one
        tree compare with each other). Without it the tree has no best tip and no canonical branch."""
        self._key = key
        self._nodes: dict[bytes, N] = {}
        self._by_height: dict[int, list[N]] = {}
        self._by_producer: dict[str, dict[bytes, N]] = {}
        self._waiting: dict[bytes, list[N]] = {}
        """Detached nodes by the hash of the parent they wait for."""
        self._canon: dict[int, N] = {}
        """The canonical branch by height: the best tip and its held ancestors."""
        self._best: N | None = None
        self._best_key: Any = None
        self._serial = 0

    # -- reading -----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, header_hash: object) -> bool:
        return header_hash in self._nodes

    def get(self, header_hash: bytes) -> N | None:
        """The node of a held header, or ``None``."""
        return self._nodes.get(header_hash)

    def nodes(self) -> Collection[N]:
        """Every node, in arrival order (a live view: copy it before changing the tree while iterating)."""
        return self._nodes.values()

    def hashes(self) -> KeysView[bytes]:
        """Every held hash, in arrival order (a live view)."""
        return self._nodes.keys()

    def at_height(self, height: int) -> Collection[N]:
        """The nodes at ``height``, every branch, in arrival order."""
        return self._by_height.get(height, ())

    def heights(self) -> Collection[int]:
        """Heights at which some node is held (in no particular order)."""
        return self._by_height.keys()

    def parent(self, node: N) -> N | None:
        """The node's parent, if held."""
        return self._nodes.get(node.parent_hash)

    def children(self, node: N) -> list[N]:
        """The node's held children, in arrival order (the tree's own list: do not change it)."""
        return cast(list[N], node.children)

    def branch(self, node: N, stop: N | None = None) -> Iterator[N]:
        """``node``, then its held ancestors downward, ending before ``stop`` or at the lowest held one."""
        nodes = self._nodes
        cur: N | None = node
        while cur is not None and cur is not stop:
            yield cur
            cur = nodes.get(cur.parent_hash)

    def descends_from(self, node: N, ancestor: N) -> bool:
        """Whether ``node`` is ``ancestor`` or above it on its branch (through held nodes only)."""
        nodes = self._nodes
        cur: N | None = node
        target = ancestor.height
        while cur is not None and cur.height > target:
            cur = nodes.get(cur.parent_hash)
        return cur is ancestor

    def subtree(self, top: N) -> list[N]:
        """``top`` and its held descendants, leaves first (each node after all of its descendants)."""
        out: list[N] = []
        stack = [top]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(cast(list[N], node.children))
        out.reverse()
        return out

    # -- producers --------------------------------------------------------------------------------------

    def producer_count(self, producer: str) -> int:
        """How many held nodes ``producer`` made (not counting released ones)."""
        held = self._by_producer.get(producer)
        return 0 if held is None else len(held)

    def by_producer(self, producer: str) -> Collection[N]:
        """The held nodes ``producer`` made and that were not released, in arrival order (a live view)."""
        held = self._by_producer.get(producer)
        return () if held is None else held.values()

    def producers(self) -> Collection[str]:
        """Producers with a counted node, in the order they first had one (a live view)."""
        return self._by_producer.keys()

    def release(self, node: N) -> None:
        """Stop counting the held ``node`` against its producer: it stays held, but no longer takes room the
        producer is accountable for (the PoC client releases a header when it becomes final)."""
        mine = self._by_producer.get(node.producer)
        if mine is not None and mine.pop(node.hash, None) is not None and not mine:
            del self._by_producer[node.producer]

    # -- the canonical branch -------------------------------------------------------------------------

    @property
    def best(self) -> N:
        """The best tip. :class:`LookupError` in a tree without one (no key, nothing added, or it was removed)."""
        best = self._best
        if best is None:
            raise LookupError("the fork tree has no best tip")
        return best

    def key(self, node: N) -> Any:
        """The fork-choice key of ``node`` (:class:`LookupError` in a tree without fork choice)."""
        if self._key is None:
            raise LookupError("the fork tree has no fork choice")
        return self._key(node)

    def prefers(self, node: N) -> bool:
        """Whether fork choice puts ``node`` (held or not) above the best tip: its key is strictly greater."""
        if self._key is None or self._best is None:
            raise LookupError("the fork tree has no best tip")
        return bool(self._key(node) > self._best_key)

    def canonical(self, height: int) -> N | None:
        """The node of the canonical branch at ``height``, if held."""
        return self._canon.get(height)

    def is_canonical(self, node: N) -> bool:
        """Whether ``node`` is on the canonical branch (the best tip or one of its held ancestors)."""
        return self._canon.get(node.height) is node

    def set_best(self, tip: N) -> tuple[list[N], list[N]]:
        """Make the held ``tip`` the best tip (the caller's fork choice decided). Returns ``(joined, left)``: the
        nodes that joined the canonical branch (from ``tip`` down to where it meets the old branch) and those that
        left it (from the old tip down to there). One step when ``tip`` extends the best tip."""
        if self._key is None:
            raise LookupError("the fork tree has no fork choice")
        canon, nodes = self._canon, self._nodes
        joined: list[N] = []
        node: N | None = tip
        while node is not None and canon.get(node.height) is not node:
            joined.append(node)
            node = nodes.get(node.parent_hash)
        left: list[N] = []
        old = self._best
        while old is not None and old is not node:
            left.append(old)
            if canon.get(old.height) is old:
                del canon[old.height]
            old = nodes.get(old.parent_hash)
        for n in joined:
            canon[n.height] = n
        self._best = tip
        self._best_key = self._key(tip)
        return joined, left

    # -- adding and removing --------------------------------------------------------------------------

    def add(self, node: N) -> None:
        """Hold ``node``: linked under its parent if held, else detached until it arrives; its detached children,
        if any are held, are adopted. :class:`HeaderReplayError` if its hash is held. The best tip does not move
        (but for the first node of a tree with fork choice, which becomes its best tip)."""
        nodes = self._nodes
        hhash = node.hash
        if hhash in nodes:
            raise HeaderReplayError(f"header {node.height} {hhash.hex()[:16]}… is already held", got=hhash.hex())
        node.serial = self._serial
        self._serial += 1
        nodes[hhash] = node
        parent = nodes.get(node.parent_hash)
        if parent is not None:
            parent.children.append(node)
        else:
            self._waiting.setdefault(node.parent_hash, []).append(node)
        if self._waiting:
            orphans = self._waiting.pop(hhash, None)
            if orphans is not None:
                node.children.extend(orphans)
        at = self._by_height.get(node.height)
        if at is None:
            self._by_height[node.height] = [node]
        else:
            at.append(node)
        mine = self._by_producer.get(node.producer)
        if mine is None:
            self._by_producer[node.producer] = {hhash: node}
        else:
            mine[hhash] = node
        if self._best is None and self._key is not None and len(nodes) == 1:
            self.set_best(node)

    def remove(self, node: N) -> None:
        """Forget the held ``node`` alone: its children stay, detached (adopted again if it comes back). Removing
        the best tip leaves the tree without one until :meth:`set_best`."""
        nodes = self._nodes
        parent = nodes.get(node.parent_hash)
        if parent is not None:
            parent.children.remove(node)
        else:
            self._unwait(node)
        # _forget, inline: this runs once per header that becomes final or is dropped
        hhash, height = node.hash, node.height
        del nodes[hhash]
        at = self._by_height[height]
        if len(at) == 1:
            del self._by_height[height]
        else:
            at.remove(node)
        mine = self._by_producer.get(node.producer)
        if mine is not None and mine.pop(hhash, None) is not None and not mine:
            del self._by_producer[node.producer]
        if self._canon.get(height) is node:
            del self._canon[height]
        if self._best is node:
            self._best = None
            self._best_key = None
        if node.children:
            self._waiting[hhash] = cast(list[N], node.children)
            node.children = []

    def remove_subtree(self, top: N) -> list[N]:
        """Forget the held ``top`` and all its held descendants; returns them, leaves first."""
        gone = self.subtree(top)
        parent = self._nodes.get(top.parent_hash)
        if parent is not None:
            parent.children.remove(top)
        else:
            self._unwait(top)
        for node in gone:
            self._forget(node)
        return gone

    def prune_to(self, root: N) -> list[N]:
        """Finality moved to the held ``root``: forget its held ancestors and every branch off them, so that only
        ``root`` and its descendants stay (of the tree ``root`` is in). Returns what was forgotten."""
        nodes = self._nodes
        removed: list[N] = []
        keep = root
        below = nodes.get(keep.parent_hash)
        while below is not None:
            for child in list(cast(list[N], below.children)):
                if child is not keep:
                    removed.extend(self.remove_subtree(child))
            next_below = nodes.get(below.parent_hash)
            self.remove(below)
            removed.append(below)
            keep, below = below, next_below
        return removed

    def prune_below(self, height: int) -> list[N]:
        """Forget every node below ``height`` (lowest first); nodes above whose parent goes stay, detached.
        Returns what was forgotten."""
        removed: list[N] = []
        for h in sorted(k for k in self._by_height if k < height):
            for node in list(self._by_height[h]):
                self.remove(node)
                removed.append(node)
        return removed

    def evictable_leaves(self, candidates: Iterable[N], *, keep: bytes = b"",
                         gone: Container[bytes] = frozenset()) -> Iterator[N]:
        """The ``candidates`` a client may drop for room: held leaves off the canonical branch (a node whose children
        are all in ``gone``, already chosen to go, counts as a leaf), neither ``keep`` (the parent of the header that
        needs the room) nor in ``gone``. Which one goes is the client's rule; dropping an off-canonical leaf never
        cuts the canonical branch, nor the branch the newcomer extends."""
        canon = self._canon
        for node in candidates:
            h = node.hash
            if h == keep or h in gone or canon.get(node.height) is node:
                continue
            if node.children and any(c.hash not in gone for c in node.children):
                continue
            yield node

    # -- internals -----------------------------------------------------------------------------------

    def _unwait(self, node: N) -> None:
        waiting = self._waiting.get(node.parent_hash)
        if waiting is not None:
            waiting.remove(node)
            if not waiting:
                del self._waiting[node.parent_hash]

    def _forget(self, node: N) -> None:
        """Drop ``node`` from the indexes (its parent's children list is the caller's)."""
        hhash, height = node.hash, node.height
        del self._nodes[hhash]
        at = self._by_height[height]
        at.remove(node)
        if not at:
            del self._by_height[height]
        mine = self._by_producer.get(node.producer)
        if mine is not None and mine.pop(hhash, None) is not None and not mine:
            del self._by_producer[node.producer]
        if self._canon.get(height) is node:
            del self._canon[height]
        if self._best is node:
            self._best = None
            self._best_key = None


def check_link(height: int, timestamp_ms: int, parent_height: int, parent_timestamp_ms: int, *,
               same_time: bool = False) -> None:
    """The link of a header to its held parent, as every client checks it: its height is the parent's plus one, and
    its time is after the parent's — or not before it with ``same_time`` (Ethereum headers carry whole seconds, and
    sub-second blocks share one). :class:`~protocol.errors.HeaderError` otherwise."""
    if height != parent_height + 1:
        raise HeaderError(f"height gap after {parent_height}: header {height} is not one above its parent",
                          expected=parent_height + 1, got=height)
    if timestamp_ms < parent_timestamp_ms:
        if same_time:
            raise HeaderError(f"timestamp of header {height} is before its parent's",
                              expected=f">= {parent_timestamp_ms}", got=timestamp_ms)
        raise HeaderError(f"timestamp of header {height} not after its parent's", expected=f"> {parent_timestamp_ms}",
                          got=timestamp_ms)
    if timestamp_ms == parent_timestamp_ms and not same_time:
        raise HeaderError(f"timestamp of header {height} not after its parent's", expected=f"> {parent_timestamp_ms}",
                          got=timestamp_ms)


def require_parent(tree: ForkTree[N], parent_hash: bytes, height: int, *, client: str, held: str) -> N:
    """The held parent of a header at ``height``, or :class:`~protocol.light_client.UnknownParentError` naming the
    ``client`` and what it holds (``held``, e.g. "the final tip 7 or a pending header")."""
    parent = tree.get(parent_hash)
    if parent is None:
        raise unknown_parent(parent_hash, height, client=client, held=held)
    return parent


def unknown_parent(parent_hash: bytes, height: int, *, client: str, held: str) -> UnknownParentError:
    """The :class:`~protocol.light_client.UnknownParentError` of a header at ``height`` whose parent is not held."""
    return UnknownParentError(
        f"header {height} does not link to any header client {client} holds: its parent {parent_hash.hex()[:16]}… is "
        f"not {held} (never seen, or dropped)", got=parent_hash.hex())
