"""Expansion is pure: spec mapping -> grid points -> content-hashed jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from near.errors import SpecError
from near.sweep.expand import expand, grid_points, grid_size
from near.sweep.spec import parse_spec

SPEC_PATH = Path("/tmp/sweeps/x.yaml")


def spec(text: str):
    return parse_spec(yaml.safe_load(text), SPEC_PATH)


NEAR_LIKE = """
axes:
  algorithm: [NEAR, AMP]
  motion:
    values: [walk, run]
    overrides:
      walk: {rl: [max_iterations=60], ncsn: [n_iters=150]}
      run: [max_iterations=80]
  seed: [42, 700]
  ablation:
    when: {algorithm: NEAR}
    values:
      anneal_style: {rl: [sigma_level=-1, w=1.0]}
      fixed_style: {rl: [sigma_level=5, w=1.0]}
      anneal_style_v1: ["ncsnv2=False"]
stages:
  - name: ncsn
    when: {algorithm: NEAR}
    command: near train ncsn task=x${algorithm} motion=${motion} seed=${seed} run_dir=${run_dir}
  - name: rl
    when: {algorithm: NEAR}
    needs: {ncsn: ncsn}
    command: near train rl task=x${algorithm} motion=${motion} seed=${seed} run_dir=${run_dir}
    overrides: ["ckpt=${ncsn.run_dir}/nn/checkpoint.pth"]
  - name: rl
    when: {algorithm: AMP}
    command: near train rl task=x${algorithm} motion=${motion} seed=${seed} run_dir=${run_dir}
"""


def test_product_with_conditional_axis():
    pts = grid_points(spec(NEAR_LIKE))
    near = [p for p in pts if p["algorithm"] == "NEAR"]
    amp = [p for p in pts if p["algorithm"] == "AMP"]
    assert len(near) == 2 * 2 * 3 and len(amp) == 2 * 2
    assert all("ablation" not in p for p in amp)


def test_ncsn_is_shared_across_ablations_that_do_not_touch_it():
    e = expand(spec(NEAR_LIKE))
    ncsn = [j for j in e.jobs if j.stage == "ncsn"]
    rl_near = [j for j in e.jobs if j.stage == "rl" and j.params["algorithm"] == "NEAR"]
    # two ablations leave ncsn alone (one job per motion x seed), the v1 ablation changes it
    assert len(ncsn) == 2 * 2 * 2
    assert len(rl_near) == 12
    shared = [j for j in ncsn if j.uses == 2]
    assert len(shared) == 4 and all("ablation" not in j.params for j in shared)
    assert e.shared == 4
    for j in rl_near:
        dep = next(n for n in ncsn if n.job_id == j.deps["ncsn"])
        assert dep.params["motion"] == j.params["motion"] and dep.params["seed"] == j.params["seed"]
        assert "${ncsn.run_dir}/nn/checkpoint.pth" in j.command
    assert all(j.deps == {} for j in e.jobs if j.stage == "ncsn")
    # dependencies come before dependents
    order = [j.job_id for j in e.jobs]
    assert all(order.index(j.deps["ncsn"]) < order.index(j.job_id) for j in rl_near)


def test_per_value_and_per_stage_overrides_reach_the_right_commands():
    e = expand(spec(NEAR_LIKE))
    by = {(j.stage, j.params.get("algorithm"), j.params["motion"], j.params["seed"], j.params.get("ablation")): j
          for j in e.jobs}
    walk_rl = by[("rl", "NEAR", "walk", 42, "fixed_style")].command
    assert "max_iterations=60" in walk_rl and "sigma_level=5" in walk_rl and "n_iters" not in walk_rl
    walk_ncsn = next(j for j in e.jobs if j.stage == "ncsn" and j.params["motion"] == "walk")
    assert "n_iters=150" in walk_ncsn.command and "max_iterations" not in walk_ncsn.command
    assert "max_iterations=80" in by[("rl", "AMP", "run", 700, None)].command
    assert "${run_dir}" in walk_rl  # dispatch placeholders stay


def test_ids_are_stable_when_the_grid_grows_and_ignore_override_order():
    small = expand(spec(NEAR_LIKE))
    bigger = expand(spec(NEAR_LIKE.replace("seed: [42, 700]", "seed: [42, 700, 8125]")))
    old, new = {j.job_id for j in small.jobs}, {j.job_id for j in bigger.jobs}
    assert old < new and len(new - old) == len(small.jobs) // 2
    swapped = expand(spec(NEAR_LIKE.replace("[sigma_level=-1, w=1.0]", "[w=1.0, sigma_level=-1]")))
    assert {j.job_id for j in swapped.jobs} == old


def test_zip_include_exclude_and_seed_count():
    s = spec("""
axes:
  task: [a, b, c]
  budget: [10, 20, 30]
  seed: {count: 3, base: 100}
zip: [[task, budget]]
exclude: [{task: b, seed: [100, 101]}]
include: [{task: d, budget: 5, seed: [7, 8]}]
stages: {run: "python x.py ${task} ${budget} --seed ${seed} --logdir ${run_dir}"}
""")
    pts = grid_points(s)
    pairs = {(p["task"], p["budget"]) for p in pts}
    assert pairs == {("a", 10), ("b", 20), ("c", 30), ("d", 5)}
    assert {p["seed"] for p in pts if p["task"] == "a"} == {100, 101, 102}
    assert [p["seed"] for p in pts if p["task"] == "b"] == [102]
    assert [p["seed"] for p in pts if p["task"] == "d"] == [7, 8]
    e = expand(s)
    assert len(e.jobs) == 3 + 1 + 3 + 2
    assert any(j.command == "python x.py d 5 --seed 8 --logdir ${run_dir}" for j in e.jobs)


def test_needs_several_earlier_jobs_at_once():
    s = spec("""
axes:
  motion: [walk_and_wave]
  seed: [1]
stages:
  - name: ncsn
    command: near train ncsn motion=${motion} seed=${seed} run_dir=${run_dir}
  - name: rl
    needs:
      walk: {stage: ncsn, with: {motion: walk}}
      wave: {stage: ncsn, with: {motion: hello}}
    command: near train rl seed=${seed} run_dir=${run_dir}
    overrides: ["ckpt={walk:${walk.run_dir}/nn/checkpoint.pth,wave:${wave.run_dir}/nn/checkpoint.pth}"]
""")
    e = expand(s)
    rl = next(j for j in e.jobs if j.stage == "rl")
    ncsn = {j.job_id: j for j in e.jobs if j.stage == "ncsn"}
    assert set(rl.deps) == {"walk", "wave"}
    assert {ncsn[d].params["motion"] for d in rl.deps.values()} == {"walk", "hello"}
    # brace expansion would split the dict: the override is quoted
    assert "'ckpt={walk:${walk.run_dir}/nn/checkpoint.pth,wave:${wave.run_dir}/nn/checkpoint.pth}'" in rl.command


@pytest.mark.parametrize("body, message", [
    ("axes: {a: [1]}\nstages: {s: 'run ${b}'}", "stages.s.command: unknown variable ${b}"),
    ("axes: {a: [1]}\nstages: {s: 'run ${ref.run_dir}'}", "'ref' is not in this stage's needs"),
    ("axes: {a: [1, 9], b: {values: [2], when: {a: 9}}}\nstages: {s: 'run ${b}'}", "axis 'b' has no value"),
    ("axes: {a: [1]}\nstages: [{name: s, command: x}, {name: s, command: y}]", "two definitions of stage 's'"),
])
def test_expansion_errors_name_the_key_and_the_point(body, message):
    with pytest.raises(SpecError) as err:
        expand(spec(body))
    assert message in str(err.value)
    assert "x.yaml" in str(err.value) and "grid point a=1" in str(err.value)


def test_grid_size_counts_conditional_axes_and_stages_without_building():
    s = spec("""
axes:
  algorithm: [NEAR, AMP, PPO]
  seed: {count: 4}
  ablation: {when: {algorithm: NEAR}, values: [x, y, z]}
include: [{algorithm: AMP, seed: [10, 11]}]
stages:
  - {name: ncsn, when: {algorithm: NEAR}, command: 'echo ${seed}'}
  - {name: rl, needs: [ncsn], when: {algorithm: NEAR}, command: 'echo ${seed} ${ablation}'}
  - {name: rl, when: {algorithm: [AMP, PPO]}, command: 'echo ${algorithm} ${seed}'}
""")
    e = expand(s)
    points, jobs = grid_size(s)
    # NEAR 4 seeds x 3 ablations + AMP and PPO 4 seeds each + 2 included points
    assert points == len(e.points) == 12 + 8 + 2
    # ncsn counted once per point (12), though the 3 ablations share 4 ncsn jobs
    assert jobs == 12 * 2 + 8 + 2 and len(e.jobs) == 4 + 12 + 8 + 2


def test_zipped_axes_with_one_condition_are_present_only_where_it_matches():
    s = spec("""
axes:
  x: [1, 2]
  a: {values: [p, q], when: {x: 1}}
  b: {values: [r, s], when: {x: 1}}
zip: [[a, b]]
stages: [{name: s, command: "echo ${x}"}]
""")
    assert grid_points(s) == [{"x": 1, "a": "p", "b": "r"}, {"x": 1, "a": "q", "b": "s"}, {"x": 2}]
    assert grid_size(s) == (3, 3)


ORDERS = """
axes:
  a:
    values: [a1, a2]
    overrides: {a1: [n=8], a2: [n=16]}
  b:
    values: [b1, b2]
    overrides: {b1: [n=16], b2: [n=8]}
stages:
  - name: s
    command: printf '%s\\\\n' last
"""


def test_points_whose_overrides_set_a_key_in_another_order_are_refused():
    """The last override of a key wins, so a=a1 b=b1 runs n=16 and a=a2 b=b2 runs n=8, but a job id
    hashes the overrides sorted: both would be one job (the first point's command)."""
    import subprocess

    cmds = ["printf '%s\\n' last n=8 n=16", "printf '%s\\n' last n=16 n=8"]
    assert [subprocess.run(["bash", "-c", c], capture_output=True, text=True).stdout.split()[-1]
            for c in cmds] == ["n=16", "n=8"]  # what the program reads last
    with pytest.raises(SpecError, match=r"x.yaml: stages\[0\]: overrides set a key more than once, the last one "
                                        r"winning \(n=16 n=8\), in another order than at grid point a=a1 b=b1 "
                                        r"\(n=8 n=16\).* \(at grid point a=a2 b=b2\)"):
        expand(spec(ORDERS))
    # b sets 16 everywhere: no two points give the same overrides in another order
    same_value = expand(spec(ORDERS.replace("b2: [n=8]", "b2: [n=16]")))
    assert sorted(j.command.split(None, 3)[-1] for j in same_value.jobs) == ["n=16 n=16", "n=8 n=16"]


def test_a_key_set_twice_keeps_the_id_sorting_gives():
    """A stage's default and a value's bundle for the same key (the common case) keep the ids tables
    written before hold: the id does not depend on the order of the overrides."""
    def one(order: str):
        return spec("axes: {a: {values: [x], overrides: {x: [%s]}}}\nstages: [{name: s, command: run}]\n" % order)

    assert expand(one("k=200, k=150000")).jobs[0].job_id == expand(one("k=150000, k=200")).jobs[0].job_id
