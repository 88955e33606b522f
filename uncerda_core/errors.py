"""The package's one exception type, in a module of its own that imports nothing.

Every layer raises it, the pure equations included, so it cannot live beside
the I/O helpers (``artifacts.py``) without making the equations import them.
Errors of one stage (``train.guards.TrainingDiverged``, ``train.loop.NonFiniteLoss``)
subclass it where they are raised. :class:`Interrupted` is Ctrl-C with what a stage knows about it.
"""

from __future__ import annotations


class UncerdaError(Exception):
    """An error a user can act on: the message names the file and the fix."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) that says what the interrupted stage leaves behind, e.g. a trainer's
    "interrupted after 37 of 60 iterations; the rerun resumes at iteration 30 from <resume file>".

    A ``KeyboardInterrupt``, so that nothing that catches ``Exception`` swallows it; the command
    line prints its message as one line and exits with 130 (:func:`uncerda_core.cli.main`).
    """
