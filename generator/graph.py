"""The layer graph: the layers people browse and how they connect, found in a traced network.

Browsed layers are:

- every block: an instance of a module class that joins branches in its own forward pass
  (a concatenation along channels, or one residual sum), as one layer whose value is what
  the block returns. Every instance of such a class is a block, shortcut or not. A block
  that holds blocks and returns their concatenation (a dense block) is not a layer: its
  units are browsed already;
- every concatenation or residual sum made outside block modules, with the nodes between
  it and its immediate dominator (the last node every path from the input passes through
  before it);
- every convolution or linear layer that is not inside a block (the stem, the
  classifier); a layer's units are its output channels.

Bottlenecks, branch convolutions and gates are therefore part of their block.

A *direct connection* joins two browsed layers through exactly one convolution or linear
map, with only weight-free or per-channel operations (ReLU, pooling, batch-norm,
dropout, flatten) around it: its kernel is the direct weight between their units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx
from torch import nn

from .errors import AtlasError
from .network import TracedNetwork, ancestors
from . import operations as ops
from .operations import name_of

@dataclass(frozen=True)
class Branch:
    """One parallel branch of a mixed layer: the channel range it fills."""

    name: str
    module: str | None
    start: int
    stop: int


@dataclass(frozen=True)
class Layer:
    """A layer people browse; its units are its channels."""

    name: str
    kind: str  # "conv", "linear", "mixed" (concatenation) or "sum" (residual)
    shape: tuple[int, ...]  # (channels, height, width) or (features,)
    modules: tuple[str, ...]  # the weighted modules that compute it
    branches: tuple[Branch, ...] = ()

    @property
    def channels(self) -> int:
        return self.shape[0]

    def branch_of(self, unit: int) -> Branch | None:
        return next((b for b in self.branches if b.start <= unit < b.stop), None)


@dataclass(frozen=True)
class Connection:
    """A direct connection: ``dst[start:stop] = f(module(g(src)))`` for per-channel ``f, g``.

    ``before`` names the operations between ``src`` and the module, ``after`` those between
    the module and ``dst`` (module names, or function names such as ``relu``); ``src`` is None
    when the module reads the model's input image.
    """

    src: str | None
    dst: str
    start: int
    stop: int
    module: str
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclass(frozen=True)
class LayerGraph:
    """The browsed layers of a traced network and how they connect: plain data."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    connections: tuple[Connection, ...]
    # (src, dst): dst reads src with no other browsed layer between; src None is the image
    adjacent: tuple[tuple[str | None, str], ...] = ()
    values: dict[str, str] = field(default_factory=dict)  # layer -> the fx node holding its value

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        known = ", ".join(layer.name for layer in self.layers)
        raise AtlasError(f"Unknown layer `{name}`. The browsed layers of this model are: {known}.")

    def restricted(self, names: tuple[str, ...] | None) -> LayerGraph:
        """The graph with only the layers ``names`` (all when None); connections between them."""
        if names is None:
            return self
        for name in names:
            self.layer(name)  # an unknown name stops here, with the list of known ones
        keep = set(names)
        return LayerGraph(
            self.input_shape, tuple(layer for layer in self.layers if layer.name in keep),
            tuple(c for c in self.connections if c.dst in keep and (c.src is None or c.src in keep)),
            tuple((s, d) for s, d in self.adjacent if d in keep and (s is None or s in keep)), self.values,
        )

    def upstream(self, dst: str, hops: int) -> list[str]:
        """The browsed layers exactly ``hops`` steps above ``dst`` along ``adjacent``."""
        frontier = {dst}
        for _ in range(hops):
            frontier = {s for s, d in self.adjacent if d in frontier and s is not None}
        order = [layer.name for layer in self.layers]
        return sorted(frontier, key=order.index)


def _immediate_dominators(nodes: list[torch.fx.Node], inputs) -> dict[torch.fx.Node, torch.fx.Node | None]:
    """Immediate dominator of every node in a DAG given in topological order."""
    idom: dict[torch.fx.Node, torch.fx.Node | None] = {}
    depth: dict[torch.fx.Node, int] = {}

    def common(a, b):  # None: no common dominator (the graph has several roots, such as shape arithmetic)
        while a is not b:
            if a is None or b is None:
                return None
            if depth[a] < depth[b]:
                a, b = b, a
            a = idom[a]
        return a

    for node in nodes:
        preds = [p for p in inputs(node) if p in idom]
        if not preds:
            idom[node], depth[node] = None, 0
            continue
        dom = preds[0]
        for p in preds[1:]:
            dom = common(dom, p)
        idom[node], depth[node] = dom, (depth[dom] + 1 if dom is not None else 0)
    return idom


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    prefix = []
    for group in zip(*parts):
        if len(set(group)) != 1:
            break
        prefix.append(group[0])
    return ".".join(prefix)


def _scope(n: torch.fx.Node) -> list[str]:
    """The modules whose forward pass made ``n``, outermost first (the model itself left out)."""
    return list(n.meta.get("nn_module_stack", {}))


def _module_blocks(t: TracedNetwork, data: list[torch.fx.Node]) -> dict[str, set]:
    """Blocks found by module: path -> the nodes its forward pass makes.

    A *block class* is a module class one of whose instances joins branches in its own
    forward pass: a concatenation along channels, or one residual sum. Every instance of a
    block class is a block, so the blocks of a network without a shortcut (the first
    MobileNet block, a strided EfficientNet block) are layers like their residual siblings.
    A module whose forward adds more than one residual is a body of blocks, not a block, and
    a module with no weights of its own (arithmetic wrapped in a module, as converters write
    it) is an operation, not a block.
    """
    sums: dict[str, int] = {}
    owners = set()
    weighted = {path for n in data if t.weighted(n) for path in _scope(n)}
    for n in data:
        scope = _scope(n)
        if scope and (t.concat(n) or t.total(n)):
            owners.add(scope[-1])
            sums[scope[-1]] = sums.get(scope[-1], 0) + t.total(n)
    classes = {type(t.modules[p]) for p in owners if sums[p] <= 1 and p in t.modules and p in weighted}
    members: dict[str, set] = {}
    for n in data:
        for path in _scope(n):
            if type(t.modules.get(path)) in classes:
                members.setdefault(path, set()).add(n)
    return members


def _gate_parts(t: TracedNetwork, data: list[torch.fx.Node]) -> set[torch.fx.Node]:
    """Convolutions that compute a squeeze-and-excitation gate: every path from them runs through
    values of one position per channel into a gate. They are part of the gate (as inside a
    block module), not layers: in a graph without block modules, such as a converted ONNX file,
    they would otherwise stand between a layer and the next one."""
    memo: dict[torch.fx.Node, bool] = {}

    def feeds_gate(n: torch.fx.Node) -> bool:
        if n not in memo:
            memo[n] = False  # while deciding
            value = t.values.get(n)
            if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[2:] == (1, 1):
                consumers = t.consumers(n)
                gate = ops.is_gate(t, n) and any((op := t.operation(c)) is not None and op.role == ops.PRODUCT
                                                 for c in consumers)  # a squashed output that multiplies
                memo[n] = gate or (bool(consumers) and all(feeds_gate(c) for c in consumers))
        return memo[n]

    return {n for n in data if t.weighted(n) and feeds_gate(n)}


def _block_value(members: set, order: dict) -> torch.fx.Node:
    """The node a block returns: its last node read from outside it."""
    leaving = [n for n in members if any(u not in members for u in n.users)]
    return max(leaving, key=order.__getitem__)


def _strip_tail(t: TracedNetwork, n: torch.fx.Node) -> torch.fx.Node:
    """The node before ``n``'s trailing activations and batch-norm."""
    while t.pointwise(n):
        n = t.inputs(n)[0]
    return n


def trace_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[TracedNetwork, LayerGraph]:
    """Trace ``model`` on an input of ``input_shape`` (channels, height, width): the network
    and its browsed layers."""
    network = TracedNetwork(model, input_shape)
    return network, find_layers(network)


def find_layers(t: TracedNetwork) -> LayerGraph:
    """The browsed layers of a traced network."""
    values = t.values
    data = [n for n in t.graph.nodes if n.op == "placeholder" or (t.is_data(n) and t.inputs(n))]
    order = {n: i for i, n in enumerate(t.graph.nodes)}

    # Blocks by module; a block holding other blocks and returning a concatenation (a dense
    # block) only gathers units already browsed, so it is not a layer of its own.
    by_module = _module_blocks(t, data)
    block_members: dict[torch.fx.Node, set] = {}
    block_names: dict[torch.fx.Node, str] = {}
    for path, members in by_module.items():
        holds_blocks = any(p.startswith(path + ".") for p in by_module)
        value = _block_value(members, order)
        if holds_blocks and t.concat(_strip_tail(t, value)):
            continue
        block_members[value], block_names[value] = members, path
    # Blocks the model's own forward pass makes: found by immediate dominators.
    claimed = set().union(*block_members.values()) if block_members else set()
    idom = _immediate_dominators(data, t.inputs)
    for block in (n for n in data if (t.concat(n) or t.total(n)) and n not in claimed and idom[n] is not None):
        members = ancestors(block, t.inputs) - ancestors(idom[block], t.inputs) - {idom[block]} - claimed
        if any(t.weighted(m) for m in members | {block}):  # else plumbing, such as a colour transform
            block_members[block] = members
    inside = set().union(*block_members.values()) if block_members else set()
    gate_parts = _gate_parts(t, data)

    layer_of: dict[torch.fx.Node, Layer] = {}
    taken: set[str] = set()

    def unique(name: str) -> str:
        candidate, i = name, 2
        while candidate in taken:
            candidate, i = f"{name}_{i}", i + 1
        taken.add(candidate)
        return candidate

    for n in data:
        if n in block_members:
            members = block_members[n]
            names = sorted(m.target for m in members if t.weighted(m))
            prefix = block_names.get(n) or (_common_prefix(names) if names else "")
            core = _strip_tail(t, n) if n in block_names else n
            branches = []
            if t.concat(core):
                start = 0
                for part in core.args[0]:
                    origin = part
                    while not t.weighted(origin) and len(t.inputs(origin)) == 1 and origin in members:
                        origin = t.inputs(origin)[0]
                    mod = origin.target if t.weighted(origin) and origin in members else None
                    label = mod[len(prefix) + 1 :].split(".")[0] if mod and prefix else (mod or part.name)
                    stop = start + values[part].shape[1]
                    branches.append(Branch(label, mod, start, stop))
                    start = stop
            kind = "mixed" if t.concat(core) else "sum" if t.total(core) else "block"
            layer_of[n] = Layer(unique(prefix or n.name), kind, tuple(values[n].shape[1:]), tuple(names),
                                tuple(branches))
        elif n not in inside and t.weighted(n) and n not in gate_parts:
            kind = t.operation(n).kind
            layer_of[n] = Layer(unique(n.target), kind, tuple(values[n].shape[1:]), (n.target,))
    if not layer_of:
        raise AtlasError(f"No convolution or linear layer was found in {type(t.model).__name__}'s traced graph.")

    # A layer's value includes the batch-norm and activation that follow it (its "tail").
    tails: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for n in layer_of:
        chain = [n]
        while len(t.consumers(chain[-1])) == 1 and t.pointwise(t.consumers(chain[-1])[0]):
            chain.append(t.consumers(chain[-1])[0])
        tails[n] = chain
    layer_at = {chain[-1]: layer_of[n] for n, chain in tails.items()}

    connections = _direct_connections(t, data, layer_of, layer_at, tails)
    adjacent = []
    for n, layer in layer_of.items():
        for source in _nearest_layers(t, n, layer_at):
            adjacent.append((source.name if source else None, layer.name))
    outputs = {layer_of[n].name: chain[-1].name for n, chain in tails.items()}
    return LayerGraph(t.input_shape, tuple(layer_of.values()), tuple(connections), tuple(adjacent), outputs)


def _nearest_layers(t: TracedNetwork, node: torch.fx.Node, layer_at: dict) -> list[Layer | None]:
    """The browsed layers (None: the image) that ``node`` reads with no browsed layer between."""
    found, seen, stack = [], set(), list(t.inputs(node))
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in layer_at or n.op == "placeholder":
            source = layer_at.get(n)
            if source not in found:
                found.append(source)
        else:
            stack.extend(t.inputs(n))
    return sorted(found, key=lambda layer: -1 if layer is None else list(layer_at.values()).index(layer))


def _direct_connections(t: TracedNetwork, data, layer_of, layer_at, tails) -> list[Connection]:
    """One weighted module between two browsed layers, with only per-channel ops or pooling around it."""
    connections = []
    for n in data:
        if not t.weighted(n):
            continue
        before, src = [], t.inputs(n)[0]
        while src not in layer_at and src.op != "placeholder" and not t.weighted(src) and len(t.inputs(src)) == 1:
            before.append(name_of(src))
            src = t.inputs(src)[0]
        if src not in layer_at and src.op != "placeholder":
            continue  # fed by a bottleneck or a sum inside a block: expanded weights only
        after, dst, start = [], n, 0
        while dst not in layer_of:
            users = t.consumers(dst)
            if len(users) != 1 or t.weighted(users[0]) or t.total(users[0]):
                dst = None
                break
            if t.concat(users[0]):
                parts = list(users[0].args[0])
                start = sum(t.values[p].shape[1] for p in parts[: parts.index(dst)])
                dst = users[0]
                break
            after.append(name_of(users[0]))
            dst = users[0]
        if dst is None or dst not in layer_of:  # ends in a concatenation inside another block
            continue
        after += [name_of(node) for node in tails[dst][1:]]
        target, source = layer_of[dst], layer_at.get(src)
        connections.append(Connection(
            source.name if source else None, target.name, start, start + t.values[n].shape[1],
            n.target, tuple(reversed(before)), tuple(after),
        ))
    return connections
