"""Array planning (near.executors.slurm_plan): pure, no cluster."""

from __future__ import annotations

import pytest

from near.errors import ConfigError
from near.executors.slurm_plan import ClusterLimits, Group, parse_limits, plan_arrays
from near.executors.slurm_profile import profile_from_dict

P = {"time": 10}


def ids(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:05d}" for i in range(n))


def test_a_group_larger_than_max_array_size_is_split_with_offsets() -> None:
    jobs = ids("a", 2500)
    plan = plan_arrays([Group("rl", P, jobs)], {}, ClusterLimits(max_array_size=1001))
    assert [len(a.job_ids) for a in plan.arrays] == [1001, 1001, 498]
    assert [a.offset for a in plan.arrays] == [0, 1001, 2002]
    # every job exactly once, job offset+k is task k of its chunk
    assert [j for a in plan.arrays for j in a.job_ids] == list(jobs)
    for a in plan.arrays:
        assert all(jobs[a.offset + k] == j for k, j in enumerate(a.job_ids))
        assert len(a.job_ids) <= 1001 and a.after_corr is None and a.after_ok == []
    assert not plan.deferred and plan.jobs == 2500


def test_exact_fit_is_one_array_and_limit_one_gives_single_jobs() -> None:
    assert len(plan_arrays([Group("rl", P, ids("a", 1001))], {}, ClusterLimits()).arrays) == 1
    assert [len(a.job_ids) for a in plan_arrays([Group("rl", P, ids("a", 3))], {},
                                                ClusterLimits(max_array_size=1)).arrays] == [1, 1, 1]
    with pytest.raises(ValueError):
        plan_arrays([Group("rl", P, ids("a", 3))], {}, ClusterLimits(max_array_size=0))


def test_aftercorr_dependents_are_chunked_like_their_parent_and_wait_on_the_matching_chunk() -> None:
    parents = ids("n", 70)
    # dependents in another order than their parents: the plan orders them by the parent's task
    kids = tuple(reversed(ids("r", 70)))
    needs = {f"r{i:05d}": [f"n{i:05d}"] for i in range(70)}
    plan = plan_arrays([Group("ncsn", P, parents), Group("rl", P, kids)], needs, ClusterLimits(max_array_size=30))
    assert [(a.stage, len(a.job_ids)) for a in plan.arrays] == [
        ("ncsn", 30), ("ncsn", 30), ("ncsn", 10), ("rl", 30), ("rl", 30), ("rl", 10)]
    for chunk in range(3):
        parent, kid = plan.arrays[chunk], plan.arrays[3 + chunk]
        assert kid.after_corr == chunk and kid.after_ok == []
        # task k of the dependent chunk needs task k of its parent chunk, nothing else
        assert [needs[j] for j in kid.job_ids] == [[p] for p in parent.job_ids]


def test_a_dependent_needing_several_jobs_waits_afterok_on_exactly_those() -> None:
    parents = ids("n", 40)
    needs = {"r0": ["n00000", "n00035"], "r1": ["n00001"]}
    plan = plan_arrays([Group("ncsn", P, parents), Group("rl", P, ("r0", "r1"))], needs,
                       ClusterLimits(max_array_size=30))
    rl = plan.arrays[-1]
    assert rl.after_corr is None and rl.after_ok == ["n00000", "n00001", "n00035"]


def test_dependencies_already_on_the_cluster_give_afterok() -> None:
    # the parent array was submitted by an earlier call: its jobs are not in this plan
    plan = plan_arrays([Group("rl", P, ("r0", "r1"))], {"r0": ["n0"], "r1": ["n1"]}, ClusterLimits())
    assert plan.arrays[0].after_corr is None and plan.arrays[0].after_ok == ["n0", "n1"]


def test_partial_cover_of_a_parent_chunk_is_not_aftercorr() -> None:
    # dependents of parent tasks 1 and 3 only: "task k waits for task k" would pair them wrongly
    parents = ids("n", 5)
    needs = {"r1": ["n00001"], "r3": ["n00003"]}
    plan = plan_arrays([Group("ncsn", P, parents), Group("rl", P, ("r1", "r3"))], needs, ClusterLimits())
    assert plan.arrays[1].after_corr is None and plan.arrays[1].after_ok == ["n00001", "n00003"]


def test_budget_defers_the_rest_and_their_dependents() -> None:
    parents, kids = ids("n", 50), ids("r", 50)
    needs = {k: [p] for p, k in zip(parents, kids)}
    plan = plan_arrays([Group("ncsn", P, parents), Group("rl", P, kids)], needs,
                       ClusterLimits(max_array_size=20), budget=65)
    assert plan.jobs == 65
    assert [(a.stage, len(a.job_ids)) for a in plan.arrays] == [("ncsn", 20), ("ncsn", 20), ("ncsn", 10),
                                                                 ("rl", 15)]
    assert plan.arrays[-1].after_corr == 0   # a prefix of the first parent chunk: still aftercorr
    assert set(plan.deferred) == set(kids[15:])
    assert "MaxSubmitJobs" in plan.deferred[kids[20]]
    # with room for 30 only: the parents past 30 and every dependent stay pending
    small = plan_arrays([Group("ncsn", P, parents), Group("rl", P, kids)], needs,
                        ClusterLimits(max_array_size=20), budget=30)
    assert small.jobs == 30 and len(small.deferred) == 70
    assert "needs n00030" in small.deferred["r00030"]


def test_limits_from_scontrol_and_sacctmgr_text() -> None:
    config = ("Configuration data as of 2026-01-01T00:00:00\nMaxArraySize            = 1001\n"
              "MaxJobCount             = 10000\nMaxStepCount            = 40000\n")
    lim = parse_limits(config, "|\n500|\n|200\n")
    assert (lim.max_array_size, lim.max_submit, lim.max_jobs) == (1001, 200, 10000)
    assert lim.budget(mine_queued=150, all_queued=9000) == 50
    assert lim.budget(mine_queued=0, all_queued=9990) == 10
    assert lim.budget(mine_queued=300, all_queued=0) == 0
    none = parse_limits("MaxArraySize = 1001\n", "|\n")
    assert none.max_submit is None and none.budget(10**6, 10**6) is None
    assert parse_limits(config).budget(10**6, 9999) == 1   # MaxJobCount alone
    # a profile lowers, never raises
    assert lim.lowered(30, 10_000).max_array_size == 30 and lim.lowered(30, 10_000).max_submit == 200
    assert lim.lowered(5000, None).max_array_size == 1001


def test_profile_limits_are_validated() -> None:
    prof = profile_from_dict({"max_array_size": 30, "max_submit_jobs": 100}, "p.yaml")
    assert (prof.max_array_size, prof.max_submit_jobs) == (30, 100)
    with pytest.raises(ConfigError, match=r"p\.yaml.*'max_array_size'"):
        profile_from_dict({"max_array_size": 0}, "p.yaml")
    with pytest.raises(ConfigError, match="'max_submit_jobs'"):
        profile_from_dict({"max_submit_jobs": "lots"}, "p.yaml")
