"""Aggregated profiles: the stacks of every sampled request, folded per endpoint and group.

The stack sampler already takes low-rate samples of every in-flight request. When a request
has ended, the sampler thread hands its samples to :meth:`StackFolder.fold`, which adds each
one to a table ``stack -> [samples, ns]`` of the request's endpoint and group; the writer
thread takes the tables with :meth:`StackFolder.drain` now and then and adds them to the store.
Memory and storage grow with the number of distinct stacks, not with the number of requests.
Nothing here runs on a request thread.

Choices, and why:

- **A frame is a function**: its qualified name, file and first line -- not the line it was
  at, so the samples of one call merge however far it got.
- **Stacks start at the request's entry** (flamewatch's WSGI middleware), so requests served by
  different servers or threads merge; the frames above it are the server's.
- **Each sample weighs the time it stands for**: the time since the request's previous sample
  (for the first one: since the sampler's previous round, see :mod:`.stack_sampler`), at most
  ``max_weight_ns`` (1 s). Rounds come late when busy threads hold the GIL, and a statistical
  profile stays unbiased only if each sample stands for the real gap before it; the price is
  that time spent in C code holding the GIL goes to the stack found after it. High-rate
  samples taken after a request passed its outlier threshold therefore weigh about 1 ms each
  instead of 10 ms: an outlier counts for its duration, not for its number of samples (which
  would over-represent outliers tenfold), and a thinned buffer's merged samples keep their
  weight. Folding only every tenth high-rate sample would do the same with more variance;
  weighting keeps every sample.
- **Bounded**: at most ``max_stacks`` distinct stacks per (endpoint, group) in a process; a
  stack first seen once the table is full is charged to its deepest ancestor already in it
  (its parent frame, or the parent's parent, ...), so its time stays in the right subtree.
  At most ``max_groups`` groups per endpoint keep their own tables; requests of later groups
  go to :data:`OTHER_GROUP`. Requests without a group (no ``group_by``) are :data:`NO_GROUP`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import CodeType
from typing import Any

from .inflight import Sample
from .store.base import FrameKey, ProfileStack

__all__ = ["NO_GROUP", "OTHER_GROUP", "StackFolder", "frame_key"]

NO_GROUP = ""
OTHER_GROUP = "[other groups]"

#: root first, the functions of one stack by ``id()`` of their code objects: a tuple of ints
#: hashes in a fraction of the time a tuple of code objects takes (a code object's hash is
#: computed from its contents on every call). The folder keeps every code object of a stored
#: chain alive, so an id in a stored chain never names another function.
Chain = tuple[int, ...]

_keys: dict[CodeType, FrameKey] = {}
_MAX_CACHED = 50_000


def frame_key(code: CodeType) -> FrameKey:
    """``(qualified name, file, first line)`` of a function's code."""
    key = _keys.get(code)
    if key is None:
        if len(_keys) > _MAX_CACHED:
            _keys.clear()
        name: str = getattr(code, "co_qualname", code.co_name)
        key = _keys[code] = (name, code.co_filename, code.co_firstlineno)
    return key


class StackFolder:
    """Per (endpoint, group), the time spent in each distinct stack since the last drain.

    :meth:`fold` is called by the sampler thread, :meth:`drain` by the writer thread; a lock
    guards the swap between them (never held across I/O).
    """

    def __init__(
        self,
        *,
        max_stacks: int = 500,
        max_groups: int = 20,
        entry_code: CodeType | None = None,
        max_weight_ns: int = 1_000_000_000,
    ) -> None:
        self.max_stacks = max_stacks
        self.max_groups = max_groups
        self.entry_code = entry_code
        self.max_weight_ns = max_weight_ns
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], dict[Chain, list[int]]] = {}
        #: stacks kept per (endpoint, group) for the life of the process: the cap's memory
        self._known: dict[tuple[str, str], set[Chain]] = {}
        self._groups: dict[str, set[str]] = {}
        self._codes: dict[int, CodeType] = {}  # id -> code, of every function in a kept chain
        self.folded = 0  # samples folded
        self.merged = 0  # of which charged to an ancestor because the table was full

    def fold(
        self, endpoint: str, group: Any, samples: Sequence[Sample], t0: int, end: int = 0
    ) -> None:
        """Add the samples of one finished request. ``t0`` is where the first sample's time
        starts and ``end`` (if later than the last sample) where the last one's ends, in
        perf_counter ns: the sampler gives the time of its round before the one that first found
        the request, and of the last round that found it still in flight -- so that every round
        counts the whole gap before it for each request it finds, the estimate that is unbiased
        whatever the requests' durations."""
        weighted: list[tuple[Chain, int]] = []
        chains: dict[int, Chain] = {}  # id(stack) -> chain; consecutive samples share stacks
        codes_of: dict[Chain, Sequence[tuple[CodeType, int]]] = {}  # chain -> a stack of it
        previous, cap = t0, self.max_weight_ns
        for taken_at, _, stack in samples:
            weight = min(cap, taken_at - previous)
            previous = taken_at
            if weight <= 0:
                continue
            chain = chains.get(id(stack))
            if chain is None:
                chain = chains[id(stack)] = self._chain(stack)
                codes_of[chain] = stack
            weighted.append((chain, weight))
        if not weighted:
            return
        if end > previous:
            chain, weight = weighted[-1]
            weighted[-1] = (chain, weight + min(cap, end - previous))
        with self._lock:
            key = (endpoint, self._group_key(endpoint, group))
            table = self._tables.get(key)
            if table is None:
                table = self._tables[key] = {}
            known = self._known.get(key)
            if known is None:
                known = self._known[key] = set()
            for chain, weight in weighted:
                kept = chain if chain in known else self._admit(known, chain, codes_of[chain])
                entry = table.get(kept)
                if entry is None:
                    table[kept] = [1, weight]
                else:
                    entry[0] += 1
                    entry[1] += weight
            self.folded += len(weighted)

    def drain(self) -> list[ProfileStack]:
        """What was folded since the last drain, as store records (the tables are emptied)."""
        with self._lock:
            tables, self._tables = self._tables, {}
            codes = dict(self._codes)
        return [
            ProfileStack(endpoint, group, tuple(frame_key(codes[i]) for i in chain), n, ns / 1e6)
            for (endpoint, group), table in tables.items()
            for chain, (n, ns) in table.items()
        ]

    def _chain(self, stack: Sequence[tuple[CodeType, int]]) -> Chain:
        chain = tuple([id(code) for code, _ in stack])
        entry = self.entry_code
        if entry is not None and id(entry) in chain:
            return chain[chain.index(id(entry)) :]
        return chain

    def _admit(
        self, known: set[Chain], chain: Chain, stack: Sequence[tuple[CodeType, int]]
    ) -> Chain:
        """``chain`` itself while the table has room, else its deepest known ancestor."""
        if len(known) < self.max_stacks:
            known.add(chain)
            codes = self._codes
            for code, _ in stack:
                codes[id(code)] = code
            return chain
        self.merged += 1
        for depth in range(len(chain) - 1, 0, -1):
            if chain[:depth] in known:
                return chain[:depth]
        root = chain[:1]  # the request's entry: kept even past the cap (one per entry frame)
        known.add(root)
        code = stack[len(stack) - len(chain)][0]
        self._codes[id(code)] = code
        return root

    def _group_key(self, endpoint: str, group: Any) -> str:
        if group is None:
            return NO_GROUP
        name = str(group)
        kept = self._groups.get(endpoint)
        if kept is None:
            kept = self._groups[endpoint] = set()
        if name in kept:
            return name
        if len(kept) < self.max_groups:
            kept.add(name)
            return name
        return OTHER_GROUP
