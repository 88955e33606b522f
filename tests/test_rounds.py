"""The stopping rule of the TGAA rounds."""

from __future__ import annotations

import json

from uncerda_core.uncertainty.rounds import decide, write_decision


def test_round0_always_continues():
    d = decide(0, [1, 2, 3], None, max_rounds=2)
    assert d["continue"] and d["next_round"] == 1


def test_stops_when_sk_unchanged_as_a_set():
    d = decide(1, [3, 2, 1], [1, 2, 3], max_rounds=5)
    assert not d["continue"] and "unchanged" in d["reason"] and d["final_round"] == 1


def test_continues_when_sk_changes():
    d = decide(1, [1, 2, 4], [1, 2, 3], max_rounds=5)
    assert d["continue"] and d["next_round"] == 2


def test_stops_at_max_rounds():
    assert decide(1, [1, 2, 4], [1, 2, 3], max_rounds=2)["continue"]
    d = decide(2, [1, 2, 5], [1, 2, 4], max_rounds=2)
    assert not d["continue"] and "max_rounds" in d["reason"]
    assert decide(1, [7], [8], max_rounds=1)["continue"] is False


def test_write_decision(tmp_path):
    write_decision(tmp_path / "d.json", decide(0, [1], None, 1))
    assert json.loads((tmp_path / "d.json").read_text())["continue"] is True


def test_unchanged_sk_is_the_reason_even_at_the_round_limit():
    d = decide(2, [5, 7, 11], [11, 7, 5], max_rounds=2)
    assert d["continue"] is False and d["final_round"] == 2
    assert d["reason"].startswith("S_k unchanged between rounds 1 and 2")
    assert "max_rounds reached" in d["reason"]
