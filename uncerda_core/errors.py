"""The package's one exception type, in a module of its own that imports nothing.

Every layer raises it, the pure equations included, so it cannot live beside
the I/O helpers (``artifacts.py``) without making the equations import them.
Errors of one stage (``train.guards.TrainingDiverged``, ``train.loop.NonFiniteLoss``)
subclass it where they are raised.
"""

from __future__ import annotations


class UncerdaError(Exception):
    """An error a user can act on: the message names the file and the fix."""
