"""torchvision's model definitions, also where its compiled operators do not load.

torchvision's classification models are plain Python over torch.nn. Its package, though,
registers compiled operators (``torchvision::nms`` and others) when it is imported, and
that fails when the installed torchvision was built for another torch than the one
present, such as the CPU build of the same release ("operator torchvision::nms does not
exist"). The models never call those operators, so when that import fails this module
imports torchvision as a bare package: its ``__init__`` (the registrations) is skipped
and every submodule, ``torchvision.models`` included, imports as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from .errors import AtlasError


def import_torchvision() -> types.ModuleType:
    """The ``torchvision`` package, bare if its compiled operators do not load here."""
    try:
        import torchvision
        return torchvision
    except ImportError:
        raise AtlasError(
            "torchvision is not installed. Install the release that matches your torch, such as "
            "`pip install --no-deps torchvision==0.28.0` beside torch 2.13.0 (the models need none of "
            "its compiled operators), or a matching pair: pip install torch==2.14.1 torchvision==0.29.1."
        ) from None
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # what the failed import left half done
    spec = importlib.util.find_spec("torchvision")
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__, package.__file__ = spec, spec.origin
    sys.modules["torchvision"] = package
    importlib.import_module("torchvision.models")
    return package


def ensure_importable() -> None:
    """Make ``import torchvision`` (and modules that do it) work, if torchvision is installed."""
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
