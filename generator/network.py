"""The traced network: a model's torch.fx graph, each node's value, and cuts of it.

One object owns the trace. It runs the model once on a blank input of the traced size, so
every node's shape (and the arguments the forward pass computes, such as the sizes given
to ``view``) is known; it tells what each node is, by the registry of operations
(:mod:`generator.operations`); it evaluates the graph on other images; and it cuts the
graph after chosen nodes with torch.fx's own graph editing. The layer graph, expanded
weights, feature visualisation and dataset examples all read the same one.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from .errors import AtlasError
from . import operations as ops


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping as one node only the modules the registry of operations knows
    (:func:`generator.operations.leaf`): any other module is traced into where its forward can
    be traced, so that arithmetic wrapped in modules reaches the registry. A model that is
    already a ``torch.fx.GraphModule`` (onnx2torch's, or one traced elsewhere) keeps its graph:
    with ``whole_where_untraceable``, each module it calls that cannot be traced on its own
    stays one node (the second try, when looking into all of them failed)."""

    def __init__(self, model: nn.Module, whole_where_untraceable: bool = False):
        super().__init__()
        self.traceable: dict[type, bool] = {}
        self.called = {n.target for n in model.graph.nodes if n.op == "call_module"} \
            if whole_where_untraceable and isinstance(model, torch.fx.GraphModule) else set()

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        if ops.leaf(m):
            return True
        if super().is_leaf_module(m, qualified_name) or qualified_name in self.called:
            return not self._traceable(m)  # torch's own modules, and a graph's nodes: whole if they must be
        return False  # a model's own module: traced into, as torch.fx does

    def _traceable(self, m: nn.Module) -> bool:
        if type(m) not in self.traceable:
            try:
                torch.fx.symbolic_trace(m)
                self.traceable[type(m)] = True
            except Exception:  # control flow or an operation torch.fx cannot record
                self.traceable[type(m)] = False
        return self.traceable[type(m)]


def _trace(model: nn.Module) -> torch.fx.Graph:
    try:
        try:
            return _Tracer(model).trace(model)
        except Exception:  # fx raises TraceError, TypeError, ... for untraceable code
            if not isinstance(model, torch.fx.GraphModule):
                raise
            return _Tracer(model, whole_where_untraceable=True).trace(model)
    except Exception as error:
        if isinstance(model, torch.fx.GraphModule):
            advice = ("It is a torch.fx GraphModule, whose own code should trace: check that its graph runs "
                      "(`model.graph.lint()`, then `model(x)` on an input of the config's size), or convert it "
                      "again (an ONNX file: `model.source: onnx:FILE`).")
        else:
            advice = ("Its forward pass must not branch on tensor values; move such logic out of forward, or "
                      "wrap it in a submodule that torch.fx treats as a leaf. A model you have as an ONNX file "
                      "builds from the file: `model.source: onnx:FILE`.")
        raise AtlasError(f"The model {type(model).__name__} could not be traced with torch.fx "
                         f"({type(error).__name__}: {_first_line(error)}). {advice}") from None


class TracedNetwork:
    """A model's torch.fx graph with every node's value on a blank input of the traced size."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]):
        self.model, self.input_shape = model, tuple(input_shape)
        self.graph = _trace(model)
        self.modules = dict(model.named_modules())
        self.nodes = {n.name: n for n in self.graph.nodes}
        try:
            self.values = self.evaluate(torch.zeros(1, *input_shape))
        except Exception as error:
            raise AtlasError(
                f"The model failed on an input of shape {tuple(input_shape)} "
                f"({type(error).__name__}: {_first_line(error)}). Set `input.channels` and "
                f"`input.size` in the atlas config to what the model expects."
            ) from None

    def evaluate(self, images: torch.Tensor, keep: set | None = None) -> dict[torch.fx.Node, object]:
        """Every node's value on ``images`` (only those of ``keep``, when given: no node after the
        last of them is computed, and no other value is held longer than needed). Module names
        are looked up whole, never split at dots."""
        attributes = self.attributes()
        values: dict[torch.fx.Node, object] = {}
        needed = None if keep is None else set(keep).union(*(ancestors(n, lambda m: m.all_input_nodes) for n in keep))
        last_use = {p: n for n in self.graph.nodes if needed is None or n in needed for p in n.all_input_nodes}
        with torch.no_grad():
            for node in self.graph.nodes:
                if needed is not None and node not in needed:
                    continue
                values[node] = images if node.op == "placeholder" else self.run(node, values, attributes)
                if keep is not None:
                    for p in node.all_input_nodes:
                        if last_use[p] is node and p not in keep:
                            del values[p]
        return values if keep is None else {n: values[n] for n in keep}

    def attributes(self) -> dict[str, torch.Tensor]:
        """The model's parameters and buffers by name, as ``get_attr`` nodes read them."""
        return {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}

    def run(self, node: torch.fx.Node, values: dict[torch.fx.Node, object], attributes: dict[str, torch.Tensor]):
        """``node``'s value from the values of the nodes it reads (not a placeholder's);
        ``attributes``: :meth:`attributes`, taken once for many nodes."""
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
        if node.op == "get_attr":  # a parameter or buffer, or a constant tracing kept on the model
            return attributes[node.target] if node.target in attributes else getattr(self.model, node.target)
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return args[0]  # output

    def node(self, name: str) -> torch.fx.Node:
        """The node called ``name`` in the fx graph."""
        return self.nodes[name]

    def truncated(self, names: list[str], before_activation: bool | list[bool] = False) -> torch.fx.GraphModule:
        """The model cut after the nodes ``names``: image in, a tuple of their values out.

        Only the operations those layers depend on are kept, so nothing after the deepest
        of them runs. With ``before_activation`` (one flag, or one per name), a layer's value
        is taken before its activation functions (after batch-norm): for a mixed layer, the
        concatenation of its branches before theirs. The module shares the model's parameters.
        """
        t = self
        flags = before_activation if isinstance(before_activation, list) else [before_activation] * len(names)
        targets = [self.node(name) for name in names]
        targets = [self.before_activation(n) if flag else n for n, flag in zip(targets, flags)]
        roots = [n for target in targets for n in (target[0] if isinstance(target, tuple) else (target,))]
        needed = set(roots).union(*(ancestors(n, lambda m: m.all_input_nodes) for n in roots))
        graph = torch.fx.Graph()
        copies: dict[torch.fx.Node, torch.fx.Node] = {}
        owned: dict[str, object] = {}  # modules and tensors under plain names: model names may hold dots
        attributes = t.attributes()
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

    def before_activation(self, node: torch.fx.Node):
        """The node whose value is ``node``'s before its trailing activations; for a
        concatenation, ``(parts, dim)`` with each part taken before its own."""
        t = self

        def strip(n: torch.fx.Node) -> torch.fx.Node:
            while t.pointwise(n) and ops.operation_of(t, n).role != ops.NORM:
                n = t.inputs(n)[0]
            return n

        node = strip(node)
        if t.concat(node):
            parts = [strip(p) for p in node.args[0]]
            if parts != list(node.args[0]):
                return (tuple(parts), node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0))
        return node

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

    def operation(self, n: torch.fx.Node) -> ops.Operation | None:
        """The entry of ``n``'s operation in the registry (:mod:`generator.operations`)."""
        return ops.operation_of(self, n)

    def weighted(self, n: torch.fx.Node) -> bool:
        """A weight module (convolution, linear layer): what a browsed layer computes."""
        op = self.operation(n)
        return n.op == "call_module" and op is not None and op.role == ops.WEIGHTED

    def concat(self, n: torch.fx.Node) -> bool:
        """A concatenation along channels."""
        op = self.operation(n)
        if n.op != "call_function" or op is None or op.role != ops.CONCAT:
            return False
        return n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0) in (1, 1 - self.values[n].dim())

    def total(self, n: torch.fx.Node) -> bool:
        """A sum of two tensors (a residual connection)."""
        op = self.operation(n)
        return op is not None and op.role == ops.SUM and len(self.inputs(n)) == 2

    def pointwise(self, n: torch.fx.Node) -> bool:
        """Batch-norm or an element-wise activation: part of the value of the layer before it."""
        if len(self.inputs(n)) != 1 or not self.is_tensor(n):
            return False
        return ops.part_of_layer(self.operation(n))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"




def ancestors(node, inputs) -> set:
    seen, stack = set(), [node]
    while stack:
        for p in inputs(stack.pop()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen
