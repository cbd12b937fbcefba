"""The local controller interrupted every way (benchmarks/chaos_local.py, small): SIGINT, SIGTERM
and SIGKILL at seeded random times, with and without a user ``trap ... EXIT`` in the jobs, two
racing controllers, and a controller killed beside a live one. Every job ends done; none is
recorded done without its end line; only jobs interrupted mid-run ran again."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("chaos_local", REPO / "benchmarks" / "chaos_local.py")
chaos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos)


@pytest.mark.parametrize("scenario,user_trap", [("sigint", True), ("sigterm", False), ("sigkill", True),
                                                ("race", False), ("killed_beside_live", True)])
def test_interrupted_controllers_lose_nothing_and_record_nothing_unfinished(tmp_path, scenario, user_trap):
    counts = chaos.run_scenario(tmp_path, scenario, random.Random(7), jobs=12, rounds=2, user_trap=user_trap)
    assert chaos.bad(counts) == 0, counts
    assert counts["jobs"] == 12 and counts["exactly_once"] + counts.get("rerun_after_interruption", 0) == 12, counts
