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

WEIGHTED = (nn.Conv2d, nn.Linear)
CONCATENATIONS = {torch.cat, torch.concat}
SUMS = {operator.add, operator.iadd, torch.add}
POOLING = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
           nn.modules.pooling._AdaptiveMaxPoolNd, nn.LocalResponseNorm)


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
    skipped: list[str] = field(default_factory=list)  # what was not connected, and why

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        known = ", ".join(layer.name for layer in self.layers)
        raise AtlasError(f"Unknown layer `{name}`. The browsed layers of this model are: {known}.")


def _op_name(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    return str(getattr(node.target, "__name__", node.target))


def _trace(model: nn.Module) -> torch.fx.Graph:
    try:
        return torch.fx.Tracer().trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, ... for untraceable code
        raise AtlasError(
            f"The model {type(model).__name__} could not be traced with torch.fx "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"Its forward pass must not branch on tensor values; move such logic out of forward, "
            f"or wrap it in a submodule that torch.fx treats as a leaf."
        ) from None


def _run(graph: torch.fx.Graph, model: nn.Module, example: torch.Tensor) -> dict[torch.fx.Node, object]:
    """Every node's value on ``example``. Module names are looked up whole, never split."""
    modules = dict(model.named_modules())
    attributes = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    values: dict[torch.fx.Node, object] = {}

    def value(arg):
        return torch.fx.node.map_arg(arg, lambda n: values[n])

    with torch.no_grad():
        for node in graph.nodes:
            args, kwargs = value(node.args), value(node.kwargs)
            if node.op == "placeholder":
                values[node] = example
            elif node.op == "get_attr":
                values[node] = attributes[node.target]
            elif node.op == "call_module":
                values[node] = modules[node.target](*args, **kwargs)
            elif node.op == "call_function":
                values[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                values[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "output":
                values[node] = args[0]
    return values


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


def trace_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> LayerGraph:
    """Trace ``model`` on an input of ``input_shape`` (channels, height, width)."""
    graph = _trace(model)
    modules = dict(model.named_modules())
    try:
        values = _run(graph, model, torch.zeros(1, *input_shape))
    except Exception as error:
        raise AtlasError(
            f"The model failed on an input of shape {tuple(input_shape)} "
            f"({type(error).__name__}: {str(error).splitlines()[0]}). Set `input.channels` and "
            f"`input.size` in the atlas config to what the model expects."
        ) from None

    def is_tensor(n):
        return isinstance(values.get(n), torch.Tensor)

    def inputs(n):
        return [p for p in n.all_input_nodes if is_tensor(p) and p.op != "get_attr"]

    def consumers(n):
        return [u for u in n.users if is_tensor(u)]

    def module(n):
        return modules[n.target] if n.op == "call_module" else None

    def weighted(n):
        return isinstance(module(n), WEIGHTED)

    def concat(n):
        return n.op == "call_function" and n.target in CONCATENATIONS and (n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0) in (1, -3))

    def total(n):
        return n.op in ("call_function", "call_method") and n.target in SUMS | {"add", "add_"} and len(inputs(n)) == 2

    def pointwise(n):
        """One tensor in, same shape out, per channel: batch-norm, activations, dropout."""
        if n.op == "output" or len(inputs(n)) != 1 or weighted(n) or values[n].shape != values[inputs(n)[0]].shape:
            return False
        if n.op == "call_module":
            return not isinstance(module(n), POOLING)
        return "pool" not in _op_name(n) and "norm" not in _op_name(n).replace("batch_norm", "")

    data = [n for n in graph.nodes if n.op == "placeholder" or (is_tensor(n) and inputs(n))]
    idom = _immediate_dominators(data, inputs)
    blocks = [n for n in data if concat(n) or total(n)]
    inside: set[torch.fx.Node] = set()
    block_members: dict[torch.fx.Node, set] = {}
    for block in blocks:
        members = _ancestors(block, inputs) - _ancestors(idom[block], inputs) - {idom[block]}
        block_members[block] = members
        inside |= members

    layer_of: dict[torch.fx.Node, Layer] = {}
    taken: set[str] = set()

    def unique(name: str) -> str:
        candidate, i = name, 2
        while candidate in taken:
            candidate, i = f"{name}_{i}", i + 1
        taken.add(candidate)
        return candidate

    def shape(n) -> tuple[int, ...]:
        return tuple(values[n].shape[1:])

    for n in data:
        if n in inside:
            continue
        if weighted(n):
            kind = "conv" if isinstance(module(n), nn.Conv2d) else "linear"
            layer_of[n] = Layer(unique(n.target), kind, shape(n), (n.target,))
        elif n in block_members:
            members = block_members[n]
            names = sorted(m.target for m in members if weighted(m))
            prefix = _common_prefix(names) if names else ""
            branches = []
            if concat(n):
                start = 0
                for part in inputs(n):
                    origin = part
                    while not weighted(origin) and len(inputs(origin)) == 1 and origin in members:
                        origin = inputs(origin)[0]
                    mod = origin.target if weighted(origin) and origin in members else None
                    label = mod[len(prefix) + 1 :] if mod and prefix else (mod or part.name)
                    stop = start + values[part].shape[1]
                    branches.append(Branch(label, mod, start, stop))
                    start = stop
            layer_of[n] = Layer(unique(prefix or n.name), "mixed" if concat(n) else "sum", shape(n), tuple(names), tuple(branches))

    # A layer's value includes the batch-norm and activation that follow it (its "tail").
    tails: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for n in layer_of:
        chain = [n]
        while len(consumers(chain[-1])) == 1 and pointwise(consumers(chain[-1])[0]):
            chain.append(consumers(chain[-1])[0])
        tails[n] = chain
    layer_at = {chain[-1]: layer_of[n] for n, chain in tails.items()}

    # Direct connections: one weighted module between two browsed layers.
    connections, skipped = [], []
    for n in data:
        if not weighted(n):
            continue
        before, src = [], inputs(n)[0]
        while src not in layer_at and src.op != "placeholder" and not weighted(src) and len(inputs(src)) == 1:
            before.append(_op_name(src))
            src = inputs(src)[0]
        if src not in layer_at and src.op != "placeholder":
            continue  # fed by a bottleneck or a sum inside a block: an expanded-weights connection
        after, dst, start = [], n, 0
        while dst not in layer_of:
            users = consumers(dst)
            if len(users) != 1 or weighted(users[0]) or total(users[0]):
                dst = None
                break
            if concat(users[0]):
                start = sum(values[p].shape[1] for p in inputs(users[0])[: inputs(users[0]).index(dst)])
                dst = users[0]
                break
            after.append(_op_name(users[0]))
            dst = users[0]
        if dst is None:
            continue
        after += [_op_name(t) for t in tails[dst][1:]]
        target, source = layer_of[dst], layer_at.get(src)
        if isinstance(module(n), nn.Linear) and source is not None and module(n).in_features != source.channels:
            skipped.append(
                f"{n.target}: reads {module(n).in_features} features flattened from {source.name}'s "
                f"{source.channels} channels and their positions; no per-channel direct weights"
            )
            continue
        connections.append(Connection(
            source.name if source else None, target.name, start, start + values[n].shape[1],
            n.target, tuple(reversed(before)), tuple(after),
        ))
    if not layer_of:
        raise AtlasError(f"No convolution or linear layer was found in {type(model).__name__}'s traced graph.")
    return LayerGraph(tuple(input_shape), list(layer_of.values()), connections, skipped)
