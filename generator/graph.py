"""The layer graph: the layers people browse and how they connect, found by tracing.

The model is traced with torch.fx and run once on a blank input to learn every tensor's
shape. Browsed layers are:

- every concatenation of parallel branches (an Inception "mixed" block) and every residual
  sum, as one layer whose value is the block's output;
- every convolution or linear layer that is not inside such a block (the stem, the
  classifier); a layer's units are its output channels.

A node is inside a block when it lies between the block's output and the block's
immediate dominator: the last node every path from the input passes through before the
block (for mixed3a, the max-pool after conv2d2). Bottlenecks and branch convolutions are
therefore part of their block, not layers of their own.

A *direct connection* joins two browsed layers through exactly one convolution or linear
map, with only weight-free or per-channel operations (ReLU, pooling, batch-norm,
dropout, flatten) around it: its kernel is the direct weight between their units.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn

from .errors import AtlasError
from .operations import (
    CONCATENATIONS, SUMS, WEIGHTED_MODULES, is_batch_norm, name_of, per_channel,
)

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


@dataclass
class LayerGraph:
    input_shape: tuple[int, ...]
    layers: list[Layer]
    connections: list[Connection]
    # (src, dst): dst reads src with no other browsed layer between; src None is the image
    adjacent: list[tuple[str | None, str]] = field(default_factory=list)
    traced: TracedModel | None = field(default=None, repr=False, compare=False)
    outputs: dict[str, torch.fx.Node] = field(default_factory=dict, repr=False, compare=False)  # layer -> value node

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
            self.input_shape, [layer for layer in self.layers if layer.name in keep],
            [c for c in self.connections if c.dst in keep and (c.src is None or c.src in keep)],
            [(s, d) for s, d in self.adjacent if d in keep and (s is None or s in keep)], self.traced, self.outputs,
        )

    def truncated(self, names: list[str], before_activation: bool | list[bool] = False) -> torch.fx.GraphModule:
        """The model cut after the layers ``names``: image in, a tuple of their values out.

        Only the operations those layers depend on are kept, so nothing after the deepest
        of them runs. With ``before_activation`` (one flag, or one per name), a layer's value
        is taken before its activation functions (after batch-norm): for a mixed layer, the
        concatenation of its branches before theirs. The module shares the model's parameters.
        """
        t = self.traced
        flags = before_activation if isinstance(before_activation, list) else [before_activation] * len(names)
        targets = [self.outputs[self.layer(name).name] for name in names]
        targets = [self._before_activation(n) if flag else n for n, flag in zip(targets, flags)]
        roots = [n for target in targets for n in (target[0] if isinstance(target, tuple) else (target,))]
        needed = set(roots).union(*(_ancestors(n, lambda m: m.all_input_nodes) for n in roots))
        graph = torch.fx.Graph()
        copies: dict[torch.fx.Node, torch.fx.Node] = {}
        owned: dict[str, object] = {}  # modules and tensors under plain names: model names may hold dots
        attributes = {**dict(t.model.named_parameters()), **dict(t.model.named_buffers())}
        for node in t.graph.nodes:
            if node in needed:
                copy = copies[node] = graph.node_copy(node, lambda n: copies[n])
                if node.op in ("call_module", "get_attr"):
                    copy.target = f"part{len(owned)}"
                    owned[copy.target] = t.modules[node.target] if node.op == "call_module" else \
                        attributes.get(node.target, getattr(t.model, node.target, None))
        for target in targets:
            if target not in copies:  # a concatenation of values before their activations
                parts, dim = target
                copies[target] = graph.call_function(torch.cat, ([copies[p] for p in parts], dim))
        graph.output(tuple(copies[n] for n in targets))
        return torch.fx.GraphModule(owned, graph, class_name="Truncated")

    def _before_activation(self, node: torch.fx.Node):
        """The node whose value is ``node``'s before its trailing activations; for a
        concatenation, ``(parts, dim)`` with each part taken before its own."""
        t = self.traced

        def strip(n: torch.fx.Node) -> torch.fx.Node:
            while t.pointwise(n) and not is_batch_norm(t.module(n), name_of(n)):
                n = t.inputs(n)[0]
            return n

        node = strip(node)
        if t.concat(node):
            parts = [strip(p) for p in node.args[0]]
            if parts != list(node.args[0]):
                return (tuple(parts), node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0))
        return node

    def upstream(self, dst: str, hops: int) -> list[str]:
        """The browsed layers exactly ``hops`` steps above ``dst`` along ``adjacent``."""
        frontier = {dst}
        for _ in range(hops):
            frontier = {s for s, d in self.adjacent if d in frontier and s is not None}
        order = [layer.name for layer in self.layers]
        return sorted(frontier, key=order.index)


def _trace(model: nn.Module) -> torch.fx.Graph:
    try:
        return torch.fx.Tracer().trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, ... for untraceable code
        raise AtlasError(
            f"The model {type(model).__name__} could not be traced with torch.fx "
            f"({type(error).__name__}: {_first_line(error)}). "
            f"Its forward pass must not branch on tensor values; move such logic out of forward, "
            f"or wrap it in a submodule that torch.fx treats as a leaf."
        ) from None


class TracedModel:
    """A model's torch.fx graph with every node's value on a blank input of the traced size."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]):
        self.model = model
        self.graph = _trace(model)
        self.modules = dict(model.named_modules())
        try:
            self.values = self._run(torch.zeros(1, *input_shape))
        except Exception as error:
            raise AtlasError(
                f"The model failed on an input of shape {tuple(input_shape)} "
                f"({type(error).__name__}: {_first_line(error)}). Set `input.channels` and "
                f"`input.size` in the atlas config to what the model expects."
            ) from None

    def _run(self, example: torch.Tensor) -> dict[torch.fx.Node, object]:
        return self.evaluate(example)

    def evaluate(self, images: torch.Tensor, keep: set | None = None) -> dict[torch.fx.Node, object]:
        """Every node's value on ``images`` (only those of ``keep``, when given, holding no
        other value longer than needed). Module names are looked up whole, never split at dots."""
        attributes = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        values: dict[torch.fx.Node, object] = {}
        last_use = {p: n for n in self.graph.nodes for p in n.all_input_nodes}
        with torch.no_grad():
            for node in self.graph.nodes:
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
                if node.op == "placeholder":
                    values[node] = images
                elif node.op == "get_attr":
                    values[node] = attributes[node.target]
                elif node.op == "call_module":
                    values[node] = self.modules[node.target](*args, **kwargs)
                elif node.op == "call_function":
                    values[node] = node.target(*args, **kwargs)
                elif node.op == "call_method":
                    values[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
                elif node.op == "output":
                    values[node] = args[0]
                if keep is not None:
                    for p in node.all_input_nodes:
                        if last_use[p] is node and p not in keep:
                            del values[p]
        return values if keep is None else {n: values[n] for n in keep}

    def is_tensor(self, n: torch.fx.Node) -> bool:
        return isinstance(self.values.get(n), torch.Tensor)

    def is_data(self, n: torch.fx.Node) -> bool:
        """A tensor, or a tuple of tensors (what chunk and split return)."""
        value = self.values.get(n)
        return isinstance(value, torch.Tensor) or (
            isinstance(value, (tuple, list)) and bool(value) and all(isinstance(v, torch.Tensor) for v in value))

    def inputs(self, n: torch.fx.Node) -> list[torch.fx.Node]:
        """The data ``n`` reads, each node once (parameters fetched with get_attr excluded)."""
        return [p for p in n.all_input_nodes if self.is_data(p) and p.op != "get_attr"]

    def consumers(self, n: torch.fx.Node) -> list[torch.fx.Node]:
        return [u for u in n.users if self.is_data(u)]

    def module(self, n: torch.fx.Node) -> nn.Module | None:
        return self.modules[n.target] if n.op == "call_module" else None

    def weighted(self, n: torch.fx.Node) -> bool:
        return isinstance(self.module(n), WEIGHTED_MODULES)

    def concat(self, n: torch.fx.Node) -> bool:
        """A concatenation along channels."""
        if n.op != "call_function" or n.target not in CONCATENATIONS:
            return False
        return n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0) in (1, 1 - self.values[n].dim())

    def total(self, n: torch.fx.Node) -> bool:
        """A sum of two tensors (a residual connection)."""
        return n.op in ("call_function", "call_method") and n.target in SUMS and len(self.inputs(n)) == 2

    def pointwise(self, n: torch.fx.Node) -> bool:
        """Batch-norm or an element-wise activation: part of the value of the layer before it."""
        if len(self.inputs(n)) != 1 or not self.is_tensor(n):
            return False
        if n.op not in ("call_module", "call_function", "call_method"):
            return False
        return per_channel(self.module(n), name_of(n))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def _immediate_dominators(nodes: list[torch.fx.Node], inputs) -> dict[torch.fx.Node, torch.fx.Node | None]:
    """Immediate dominator of every node in a DAG given in topological order."""
    idom: dict[torch.fx.Node, torch.fx.Node | None] = {}
    depth: dict[torch.fx.Node, int] = {}

    def common(a, b):
        while a is not b:
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
        idom[node], depth[node] = dom, depth[dom] + 1
    return idom


def _ancestors(node, inputs) -> set:
    seen, stack = set(), [node]
    while stack:
        for p in inputs(stack.pop()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


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


def _module_blocks(t: TracedModel, data: list[torch.fx.Node]) -> dict[str, set]:
    """Blocks found by module: path -> the nodes its forward pass makes.

    A *block class* is a module class one of whose instances joins branches in its own
    forward pass: a concatenation along channels, or one residual sum. Every instance of a
    block class is a block, so the blocks of a network without a shortcut (the first
    MobileNet block, a strided EfficientNet block) are layers like their residual siblings.
    A module whose forward adds more than one residual is a body of blocks, not a block.
    """
    sums: dict[str, int] = {}
    owners = set()
    for n in data:
        scope = _scope(n)
        if scope and (t.concat(n) or t.total(n)):
            owners.add(scope[-1])
            sums[scope[-1]] = sums.get(scope[-1], 0) + t.total(n)
    classes = {type(t.modules[p]) for p in owners if sums[p] <= 1 and p in t.modules}
    members: dict[str, set] = {}
    for n in data:
        for path in _scope(n):
            if type(t.modules.get(path)) in classes:
                members.setdefault(path, set()).add(n)
    return members


def _block_value(t: TracedModel, members: set, order: dict) -> torch.fx.Node:
    """The node a block returns: its last node read from outside it."""
    leaving = [n for n in members if any(u not in members for u in n.users)]
    return max(leaving, key=order.__getitem__)


def _strip_tail(t: TracedModel, n: torch.fx.Node) -> torch.fx.Node:
    while t.pointwise(n):
        n = t.inputs(n)[0]
    return n


def trace_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> LayerGraph:
    """Trace ``model`` on an input of ``input_shape`` (channels, height, width)."""
    t = TracedModel(model, input_shape)
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
        value = _block_value(t, members, order)
        if holds_blocks and t.concat(_strip_tail(t, value)):
            continue
        block_members[value], block_names[value] = members, path
    # Blocks the model's own forward pass makes: found by immediate dominators.
    claimed = set().union(*block_members.values()) if block_members else set()
    idom = _immediate_dominators(data, t.inputs)
    for block in (n for n in data if (t.concat(n) or t.total(n)) and n not in claimed):
        members = _ancestors(block, t.inputs) - _ancestors(idom[block], t.inputs) - {idom[block]}
        block_members[block] = members - claimed
    inside = set().union(*block_members.values()) if block_members else set()

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
        elif n not in inside and t.weighted(n):
            kind = "conv" if isinstance(t.module(n), nn.Conv2d) else "linear"
            layer_of[n] = Layer(unique(n.target), kind, tuple(values[n].shape[1:]), (n.target,))
    if not layer_of:
        raise AtlasError(f"No convolution or linear layer was found in {type(model).__name__}'s traced graph.")

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
    outputs = {layer_of[n].name: chain[-1] for n, chain in tails.items()}
    return LayerGraph(tuple(input_shape), list(layer_of.values()), connections, adjacent, t, outputs)


def _nearest_layers(t: TracedModel, node: torch.fx.Node, layer_at: dict) -> list[Layer | None]:
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


def _direct_connections(t: TracedModel, data, layer_of, layer_at, tails) -> list[Connection]:
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
