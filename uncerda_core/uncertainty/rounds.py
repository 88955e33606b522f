"""The stopping rule of the target-guided adversarial adaptation rounds.

Round numbering: round 0 is adversarial adaptation (AA) with conventional
(uniform) source sampling; round r >= 1 is target-guided AA (TGAA), drawing
source images with the weights computed from round r-1's S_k (the maps of
round r-1's model). ``max_rounds`` counts TGAA rounds, so with
``max_rounds >= 1`` round 0 is always followed by round 1, and the last
possible round is ``max_rounds``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from uncerda_core.artifacts import write_json
from uncerda_core.errors import UncerdaError


def decide(round_index: int, sk_current: Sequence[int], sk_previous: Sequence[int] | None,
           max_rounds: int) -> dict[str, Any]:
    """Whether to run TGAA round ``round_index + 1`` after round ``round_index``.

    ``sk_current`` is S_k of round ``round_index``'s model, ``sk_previous`` that
    of round ``round_index - 1`` (None for round 0). Stop when S_k, as a set, is
    unchanged, or when ``max_rounds`` TGAA rounds have been run.
    """
    if round_index < 0 or max_rounds < 0:
        raise UncerdaError(f"rounds: round_index and max_rounds must be >= 0, got {round_index}, {max_rounds}")
    current = sorted(int(c) for c in sk_current)
    previous = None if sk_previous is None else sorted(int(c) for c in sk_previous)
    decision: dict[str, Any] = {"round": round_index, "sk": current, "sk_previous": previous,
                                "max_rounds": max_rounds}
    unchanged = previous is not None and set(current) == set(previous)
    if unchanged:  # the method's own criterion is reported first, even when the limit is also reached
        go, reason = False, f"S_k unchanged between rounds {round_index - 1} and {round_index}"
        if round_index >= max_rounds:
            reason += f" (and max_rounds reached: {round_index} of {max_rounds} TGAA rounds run)"
    elif round_index >= max_rounds:
        go, reason = False, f"max_rounds reached ({round_index} of {max_rounds} TGAA rounds run)"
    elif previous is None:
        go, reason = True, "round 0 (conventional sampling) is always followed by a TGAA round"
    else:
        go, reason = True, f"S_k changed between rounds {round_index - 1} and {round_index}"
    decision.update({"continue": go, "reason": reason, "next_round": round_index + 1 if go else None,
                     "final_round": None if go else round_index})
    return decision


def write_decision(path: str | os.PathLike, decision: dict[str, Any]) -> None:
    """Write the decision as JSON, atomically."""
    write_json(path, decision)
