"""Feature visualisation: a picture of what excites each unit, its "variable name".

Small parts, as in Lucid's optvis: :mod:`.param` (how the image is parameterised),
:mod:`.transforms` (robustness transforms), :mod:`.objectives` (what is maximised),
:mod:`.optimise` (the loop), :mod:`.cache` (pictures on disk) and :mod:`.jobs` (the work
split into independent jobs, which the build's engine runs: :mod:`generator.engines`).
:func:`visualise_units` is the build stage.
"""

from .jobs import Pictures, visualise_units

__all__ = ["Pictures", "visualise_units"]
