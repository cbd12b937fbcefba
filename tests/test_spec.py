"""Spec loading and `near sweep add`: clear errors naming file and key; validation against a hydra
config tree before anything is written; dedup on re-add."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from near.errors import ConfigError, SpecError
from near.sweep.expand import expand
from near.jobtable import JobTable
from near.sweep.spec import load_spec
from near.sweep.validate import Validator, validate_jobs


def near(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "near", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def make_cfg(root: Path) -> None:
    """A small hydra tree shaped like near's cfg/ (task group selects the train config; the
    declared defaults come in through the *_base configs)."""
    (root / "cfg" / "task").mkdir(parents=True)
    (root / "cfg" / "train").mkdir(parents=True)
    (root / "cfg" / "config.yaml").write_text(
        "run_dir: ''\nseed: 42\n"
        "defaults:\n  - task: mazeNEAR\n  - train: ${task}PPO\n  - _self_\n"
    )
    for algo in ("NEAR", "PPO"):
        (root / "cfg" / "task" / f"maze{algo}.yaml").write_text(
            f"defaults:\n  - maze_base\n  - _self_\nname: maze{algo}\nenv:\n  numEnvs: 4\n")
        near_cfg = "    near_config:\n      inference:\n        sigma_level: 0\n        eb_model_checkpoint: ''\n" \
            if algo == "NEAR" else ""
        (root / "cfg" / "train" / f"maze{algo}PPO.yaml").write_text(
            f"defaults:\n  - {algo.lower()}_base\n  - _self_\nparams:\n  config:\n    name: x\n    minibatch_size: 8\n{near_cfg}")


SPEC = """
name: demo
axes:
  algorithm: [NEAR, PPO]
  seed: {count: 2}
stages:
  - name: ncsn
    when: {algorithm: NEAR}
    command: near train ncsn task=maze${algorithm} seed=${seed} run_dir=${run_dir}
  - name: rl
    when: {algorithm: NEAR}
    needs: [ncsn]
    command: near train rl task=maze${algorithm} seed=${seed} run_dir=${run_dir}
    overrides:
      - ++train.params.config.near_config.inference.eb_model_checkpoint=${ncsn.run_dir}/nn/checkpoint.pth
      - ++train.params.config.near_config.inference.sigma_level=-1
  - name: rl
    when: {algorithm: PPO}
    command: near train rl task=maze${algorithm} seed=${seed} run_dir=${run_dir} ++train.params.config.minibatch_size=4
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_cfg(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "demo.yaml").write_text(SPEC)
    return tmp_path


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_add_is_idempotent_and_a_new_seed_adds_only_its_jobs(repo):
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "6 new, 0 existing, 0 shared" in r.stdout and "2 distinct override shape" in r.stdout
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert "0 new, 6 existing" in r.stdout
    (repo / "sweeps" / "demo.yaml").write_text(SPEC.replace("{count: 2}", "{count: 3}"))
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert "3 new, 6 existing" in r.stdout
    assert len(JobTable.open(repo / "experiments" / "demo")) == 9


@pytest.mark.parametrize("bad, where", [
    ("++train.params.config.near_confg.inference.sigma_level=-1", "near_confg"),
    ("++train.params.config.near_config.inference.sigma_level=-1 num_env=3", "num_env"),
    ("++train.params.config.near_config.inference.sigma_level=-1 task=mazeNOPE", "mazeNOPE"),
])
def test_bad_override_fails_add_naming_file_point_key_and_leaves_table_untouched(repo, bad, where):
    assert near("sweep", "add", "sweeps/demo.yaml", cwd=repo).returncode == 0
    db = repo / "experiments" / "demo" / "jobs.db"
    before = digest(db)
    broken = SPEC.replace("{count: 2}", "{count: 3}").replace(
        "      - ++train.params.config.near_config.inference.sigma_level=-1", f"      - {bad.split()[0]}")
    if len(bad.split()) > 1:
        broken = broken.replace("seed=${seed} run_dir=${run_dir}\n    overrides:",
                                f"seed=${{seed}} run_dir=${{run_dir}} {bad.split()[1]}\n    overrides:")
    (repo / "sweeps" / "demo.yaml").write_text(broken)
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert r.returncode == 2
    assert "sweeps/demo.yaml: job " in r.stderr and "(algorithm=NEAR seed=" in r.stderr and where in r.stderr
    assert digest(db) == before
    assert len(JobTable.open(db)) == 6


def test_bad_spec_on_a_fresh_sweep_writes_nothing(repo):
    (repo / "sweeps" / "demo.yaml").write_text(SPEC.replace("sigma_level=-1", "sigma_levl=-1").replace(
        "++train.params.config.near_config.inference.sigma_levl", "train.params.config.near_config.inference.sigma_levl"))
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert r.returncode == 2 and "sigma_levl" in r.stderr
    assert not (repo / "experiments" / "demo").exists()


def test_validation_cost_grows_with_shapes_not_jobs(repo):
    (repo / "sweeps" / "demo.yaml").write_text(SPEC.replace("{count: 2}", "{count: 300}"))
    spec = load_spec(repo / "sweeps" / "demo.yaml")
    jobs = expand(spec).jobs
    v = Validator()
    report = validate_jobs(jobs, spec.label, validator=v)
    assert report.checked == 900 and report.shapes == 2 and v.checker.shapes == 2


def test_a_task_without_a_config_is_refused(repo):
    # a misspelt task (or one only Isaac Gym had) is an error naming the job, never a skipped check
    (repo / "sweeps" / "demo.yaml").write_text(SPEC.replace("maze${algorithm}", "maze${algorithm}X"))
    spec = load_spec(repo / "sweeps" / "demo.yaml")
    with pytest.raises(ConfigError, match=r"job [0-9a-f]+ \(algorithm=NEAR.*Could not find 'task/mazeNEARX'"):
        validate_jobs(expand(spec).jobs, spec.label)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    p = tmp_path / "sweeps" / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ("axes: {a: [1]\nstages: x", "malformed YAML: line"),
    ("- just\n- a list\n", "a sweep spec is a mapping"),
    ("axes: {a: [1]}\n", "stages: missing"),
    ("axes: {a: [1]}\nstages: {s: x}\nexclude: [{b: 1}]", "exclude[0].b: unknown axis 'b'"),
    ("axes: {a: [1]}\nstages: {s: x}\nzip: [[a, c]]", "zip[0]: unknown axis 'c'"),
    ("axes: {a: [1, 2], b: [1]}\nstages: {s: x}\nzip: [[a, b]]", "zipped axes need the same number of values"),
    ("axes: {a: {values: [x, y], overrides: {z: [k=1]}}}\nstages: {s: x}", "axes.a.overrides.z: 'z' is not a value"),
    ("axes: {a: {values: [x], overrides: {x: {rll: [k=1]}}}}\nstages: {s: x}",
     "axes.a.overrides.x.rll: unknown stage 'rll'"),
    ("axes: {a: {values: [x], overrides: {x: [nokey]}}}\nstages: {s: x}", "axes.a.overrides.x[0]: override 'nokey'"),
    ("axes: {a: {values: [1], when: {b: 1}}, b: [1]}\nstages: {s: x}", "axes.a.when: 'b' is not an axis declared before"),
    ("axes: {seed: {count: 0}}\nstages: {s: x}", "axes.seed.count: must be a positive integer"),
    ("axes: {a: [1]}\nstages: {s: {command: x, needs: {n: t}}}", "stages.s.needs.n: unknown stage 't'"),
    ("axes: {a: [1]}\nstages: {s: {command: x, resources: {gpu: 1}}}", "stages.s.resources.gpu: unknown resource"),
    ("axes: {a: [1]}\nstages: {s: {command: x, resources: {time: soon}}}", "is not a time limit"),
    ("axes: {a: [1]}\nstages: {s: {command: x, resources: {slurm: {'--qos': x}}}}",
     "stages.s.resources.slurm.--qos: sbatch option names"),
    ("axes: {a: [1]}\nstages: {s: {command: x, needs: [t]}, t: {command: y, needs: [s]}}", "cycle"),
    ("axes: {a: [1]}\nstages: {s: x}\ncolour: red", "colour: unknown key"),
])
def test_bad_specs_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "bad.yaml" in str(err.value) and message in str(err.value), str(err.value)


def test_cli_reports_spec_errors_without_traceback(tmp_path):
    write(tmp_path, "axes: {a: [1]}\nstages: {s: x}\nexclude: [{b: 1}]")
    r = near("sweep", "add", "sweeps/bad.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("near: error: sweeps/bad.yaml: exclude[0].b")
    assert "Traceback" not in r.stderr


def test_corrupt_table_is_named_and_not_overwritten(repo):
    exp = repo / "experiments" / "demo"
    exp.mkdir(parents=True)
    (exp / "jobs.db").write_text("not a database\n")
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert r.returncode == 2 and "experiments/demo/jobs.db: not a near job table" in r.stderr
    assert (exp / "jobs.db").read_text() == "not a database\n"


def test_shipped_specs_load_and_expand():
    repo = Path(__file__).resolve().parents[1]
    for name in ("demo", "paper_main", "paper_ablations", "humanoid"):
        spec = load_spec(repo / "sweeps" / f"{name}.yaml")
        assert expand(spec).jobs
    # NEAR's experiment_generator.py: 15 motions x 5 seeds (AMP without walk_and_wave); NEAR trains
    # one ncsn per motion x seed, two (walk + hello body parts) for walk_and_wave
    main = expand(load_spec(repo / "sweeps" / "paper_main.yaml"))
    stages = Counter((j.stage, j.params.get("algorithm")) for j in main.jobs)
    assert stages == {("ncsn", "NEAR"): 14 * 5 + 2 * 5, ("rl", "NEAR"): 15 * 5, ("rl", "AMP"): 14 * 5}
    # ablation_generator.py: 3 motions x 3 seeds x 5 rows; the rows differ only in rl except the
    # NCSN version, so 2 ncsn jobs per motion x seed, the v2 one shared by 4 rows
    abl = expand(load_spec(repo / "sweeps" / "paper_ablations.yaml"))
    assert Counter(j.stage for j in abl.jobs) == {"rl": 45, "ncsn": 18} and abl.shared == 9


def test_readd_after_cfg_change_validates_again(repo):
    assert near("sweep", "add", "sweeps/demo.yaml", cwd=repo).returncode == 0
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert "unchanged since the last add" in r.stdout and "0 new, 6 existing" in r.stdout
    train = repo / "cfg" / "train" / "mazeNEARPPO.yaml"
    train.write_text(train.read_text().replace("near_config", "near_cfg"))
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert r.returncode == 2 and "near_config" in r.stderr


def test_var_and_name_shrink_a_sweep_into_its_own_folder(repo):
    spec_file = repo / "sweeps" / "demo.yaml"
    spec_file.write_text(SPEC.replace("name: demo", "name: demo\nvars: {iters: 50}")
                         .replace("  seed: {count: 2}", "  seed: {count: 2}\n  motion:\n    values: [a, b]\n"
                                  "    overrides: {b: {vars: {iters: 80}}}")
                         .replace("seed=${seed} run_dir=${run_dir}", "seed=${seed} max_iterations=${iters} run_dir=${run_dir}"))
    r = near("sweep", "add", "sweeps/demo.yaml", cwd=repo)
    assert r.returncode == 0, r.stderr
    full = JobTable.open(repo / "experiments" / "demo").jobs()
    assert {j.command.split("max_iterations=")[1].split()[0] for j in full} == {"50", "80"}
    # a forced variable beats the spec's vars and the per-value bundle
    r = near("sweep", "add", "sweeps/demo.yaml", "--name", "demo-ci", "--var", "iters=3", cwd=repo)
    assert r.returncode == 0 and "experiments/demo-ci/jobs.db" in r.stdout, r.stderr
    small = JobTable.open(repo / "experiments" / "demo-ci").jobs()
    # motion only chose the budget here: with one budget forced, a and b are the same job (shared);
    # the ncsn stage does not read the budget, so the full sweep already shares its ncsn jobs
    assert len(full) == 10 and len(small) == 6 and all("max_iterations=3 " in j.command for j in small)
    assert len(JobTable.open(repo / "experiments" / "demo")) == len(full)  # the full sweep is untouched
    # changed variables are not mistaken for an unchanged spec
    r = near("sweep", "add", "sweeps/demo.yaml", "--name", "demo-ci", "--var", "iters=4", cwd=repo)
    assert f"{len(small)} new, 0 existing" in r.stdout, r.stdout
    for args, message in ((["--var", "iterz=3"], "--var iterz: not a variable of this spec (variables: iters)"),
                          (["--var", "iters"], "--var 'iters': expected KEY=VALUE"),
                          (["--name", "../x"], "--name '../x' is not a valid sweep name")):
        r = near("sweep", "add", "sweeps/demo.yaml", *args, cwd=repo)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_a_spec_added_by_another_near_is_expanded_and_validated_again(tmp_path):
    """An unchanged spec is recognised without expanding it only while near's own expansion and
    validation are unchanged too: after an upgrade that refuses what the older near accepted,
    re-adding refuses it (and writes nothing) instead of reporting it unchanged."""
    import os
    import shutil

    repo = Path(__file__).resolve().parents[1]
    older = tmp_path / "older"
    shutil.copytree(repo / "near", older / "near", ignore=shutil.ignore_patterns("__pycache__"))
    settings = older / "near" / "training" / "settings.py"
    current = settings.read_text()
    settings.write_text(current.replace('HUMANOID_MOTIONS = ("walk", "run", "crane_pose")',
                                        'HUMANOID_MOTIONS = ("walk", "run", "crane_pose", "wlak")'))
    assert settings.read_text() != current
    spec = tmp_path / "wlak.yaml"
    spec.write_text(f"name: wlak\nworkdir: {repo}\naxes: {{seed: [1]}}\nstages:\n  - name: rl\n    command: "
                    "near train rl task=Humanoid seed=${seed} run_dir=${run_dir} ++task.env.motion_file=wlak\n")

    def add(tree: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "near", "sweep", "add", str(spec), "--root", "exp"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(tree)})

    first = add(older)
    assert first.returncode == 0 and "1 new" in first.stdout, first.stderr
    again = add(older)
    assert again.returncode == 0 and "unchanged since the last add" in again.stdout
    db = (tmp_path / "exp" / "wlak" / "jobs.db").read_bytes()
    upgraded = add(repo)
    assert upgraded.returncode == 2, upgraded.stdout
    assert "job" in upgraded.stderr and "task.env.motion_file='wlak': not a motion" in upgraded.stderr
    assert (tmp_path / "exp" / "wlak" / "jobs.db").read_bytes() == db


@pytest.mark.parametrize("root", ["exps,v2", "jürgen", "it's", "[old]"])
def test_an_experiment_folder_hydra_cannot_read_is_refused_for_trainer_jobs(tmp_path, root):
    """Trainer jobs get their run dirs as hydra overrides (run_dir=EXP/runs/ID): under a folder
    whose path hydra's grammar cannot read, near train stops every one of them, so add refuses the
    folder (dry run too) and creates nothing; a blank is fine."""
    repo = Path(__file__).resolve().parents[1]
    spec = tmp_path / "t.yaml"
    spec.write_text(f"name: t\nworkdir: {repo}\naxes: {{seed: [1]}}\nstages:\n  - name: rl\n    command: near train "
                    "rl task=mazePPO seed=${seed} run_dir=${run_dir} num_envs=2 max_iterations=1 device=cpu\n")
    train = near("train", "rl", "task=mazePPO", "num_envs=2", "max_iterations=1", "device=cpu",
                 f"run_dir={tmp_path / root / 't' / 'runs' / 'x'}", cwd=tmp_path)
    assert train.returncode == 2 and "do not compose" in train.stderr  # what every job would do
    for dry in ([], ["--dry-run"]):
        r = near("sweep", "add", str(spec), "--root", root, *dry, cwd=tmp_path)
        assert r.returncode == 2, r.stdout
        assert f"runs near train, whose run dirs would lie in {tmp_path / root / 't'}, which holds" in r.stderr
        assert not (tmp_path / root).exists()
    ok = near("sweep", "add", str(spec), "--root", "my exps", "--dry-run", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    unchecked = near("sweep", "add", str(spec), "--root", root, "--no-validate", "--dry-run", cwd=tmp_path)
    assert unchecked.returncode == 0, unchecked.stderr
