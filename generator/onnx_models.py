"""Models that come as ONNX files: ``model.source: onnx:path/to/model.onnx``.

The file is converted to PyTorch with onnx2torch (the optional extra ``weight-atlas[onnx]``),
which gives a ``torch.fx.GraphModule``: one module per ONNX node, constants as buffers. The
atlas keeps that graph and looks inside its modules (:mod:`generator.network`); onnx2torch's
arithmetic modules have linear twins in :mod:`generator.operations`. Where onnxruntime is
installed, the converted model is run beside the file on a few inputs, and the build says how
far apart they are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import AtlasError
from .torchvision_models import import_torchvision

log = logging.getLogger("weight_atlas")

INSTALL = "pip install 'weight-atlas[onnx]' (onnx2torch, onnx and onnxruntime)"
COMPARED = 2  # random inputs the converted model and onnxruntime both run


def load_onnx(path: Path, input_shape: tuple[int, int, int]) -> nn.Module:
    """The ONNX file at ``path`` as a PyTorch module, compared with onnxruntime where it is installed."""
    if not path.is_file():
        raise AtlasError(f"`model.source: onnx:{path}`: there is no such file. Give the path of an .onnx file "
                         f"(relative to the folder you build from).")
    try:
        import_torchvision()  # onnx2torch imports torchvision; without its compiled operators where they do not load
        import onnx
        import onnx2torch
    except (ImportError, AtlasError):
        raise AtlasError(f"`model.source: onnx:{path.name}` needs the ONNX extra: {INSTALL}.") from None
    try:
        proto = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others for a damaged file
        raise AtlasError(f"`model.source: onnx:{path.name}`: the file is not a readable ONNX model "
                         f"({type(error).__name__}: {str(error)[:200]}).") from None
    shared_weights(proto, onnx)
    batch_free_reshapes(proto, onnx)
    readable_names(proto)
    try:
        model = onnx2torch.convert(proto)
    except NotImplementedError as error:
        raise AtlasError(f"`model.source: onnx:{path.name}`: onnx2torch cannot convert it ({str(error)[:300]}). "
                         f"Simplify the graph (for example with onnxsim) or export it with another opset.") from None
    except Exception as error:
        raise AtlasError(f"`model.source: onnx:{path.name}`: onnx2torch failed to convert it "
                         f"({type(error).__name__}: {str(error)[:300]}).") from None
    compare(path, model.eval(), input_shape)
    return model


def shared_weights(proto, onnx) -> None:
    """Give each weight that PyTorch's exporter shares through an ``Identity`` node (equal
    tensors, such as the zero biases of untrained batch-norms, are stored once) a copy of its
    own under the node's output name, and drop the node: onnx2torch reads a convolution's
    weights from the stored tensors only."""
    stored = {tensor.name: tensor for tensor in proto.graph.initializer}
    kept = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in stored:
            copy = onnx.TensorProto()
            copy.CopyFrom(stored[node.input[0]])
            copy.name = node.output[0]
            proto.graph.initializer.append(copy)
        else:
            kept.append(node)
    if len(kept) < len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(kept)


def batch_free_reshapes(proto, onnx) -> None:
    """Let reshapes follow the batch. An exporter traces one image, so a reshape it writes with a
    constant shape (ShuffleNet's channel shuffle: ``[1, 2, 24, 8, 8]``) fails on the batches of
    pictures the atlas optimises together. Where the tensor reshaped is batch-first (of two or
    more dimensions, the first 1 as the traced batch was, or not inferred: 0) and the shape
    starts with that 1, the 1 becomes 0, which ONNX reads as "the input's own first dimension":
    the same for one image, and right for a batch."""
    try:
        shapes = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # a graph the checker cannot infer: reshapes are left as the exporter wrote them
        return
    first = {v.name: v.type.tensor_type.shape.dim[0].dim_value
             for v in [*shapes.value_info, *shapes.input] if len(v.type.tensor_type.shape.dim) >= 2}
    constants = {t.name: t for t in proto.graph.initializer}
    constants.update({n.output[0]: a.t for n in proto.graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})
    for node in proto.graph.node:
        if node.op_type != "Reshape" or first.get(node.input[0]) not in (0, 1) or node.input[1] not in constants:
            continue
        tensor = constants[node.input[1]]
        shape = onnx.numpy_helper.to_array(tensor).copy()
        if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
            shape[0] = 0
            tensor.CopyFrom(onnx.numpy_helper.from_array(shape, tensor.name))


def readable_names(proto) -> None:
    """Name the nodes PyTorch's exporter scoped (``/features/features.2/block/block.2/block.2.0/Conv``)
    by the module path they came from (``features.2.block.2.0.Conv``), which onnx2torch makes the
    module's name (``features/2/block/2/0/Conv``): layer names a reader knows from the model."""
    for node in proto.graph.node:
        if not node.name.startswith("/"):
            continue
        *scopes, operation = node.name.strip("/").split("/")
        path: list[str] = []
        for scope in scopes:
            parts = scope.split(".")
            shared = next((k for k in range(min(len(path), len(parts)), 0, -1) if path[-k:] == parts[:k]), 0)
            path += parts[shared:]
        node.name = ".".join(path + [operation])


def compare(path: Path, model: nn.Module, input_shape: tuple[int, int, int]) -> float | None:
    """The largest difference between ``model`` and onnxruntime running ``path`` on a few
    seeded random inputs, relative to the largest output; None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        log.info("ONNX: onnxruntime is not installed, so the converted model is not compared with the file (%s)",
                 INSTALL)
        return None
    inputs = torch.rand(COMPARED, *input_shape, generator=torch.Generator().manual_seed(0))
    largest, scale = 0.0, 0.0
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        outputs = [session.run(None, {feed: one[None].numpy()})[0] for one in inputs]
    except Exception as error:  # onnxruntime's own errors (a shape it does not take, an operator it lacks)
        log.warning("ONNX: onnxruntime could not run the file on inputs of %s (%s), so the converted model is "
                    "not compared with it", tuple(input_shape), str(error).splitlines()[0][:200])
        return None
    with torch.no_grad():
        for one, theirs in zip(inputs, outputs):
            ours = model(one[None])
            ours = (ours[0] if isinstance(ours, (tuple, list)) else ours).numpy()
            largest = max(largest, float(np.abs(ours - theirs).max()))
            scale = max(scale, float(np.abs(theirs).max()))
    relative = largest / scale if scale > 0 else largest
    log.info("ONNX: the converted model matches onnxruntime to %.1e of its largest output (%d random inputs)",
             relative, COMPARED)
    if relative > 1e-3:
        log.warning("ONNX: the converted model differs from onnxruntime by %.1e of its largest output: the "
                    "conversion may have changed what the model computes", relative)
    return relative
