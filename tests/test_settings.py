"""Typed settings: every key declared once, unknown and ill-typed keys refused by `near train` and
`near sweep add`, stage identity from what a stage reads, and tables written before still working."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings as hyp_settings, strategies as st

from near.cli import main
from near.errors import ConfigError
from near.jobtable import JobSpec, JobTable
from near.sweep.expand import expand
from near.sweep.spec import load_spec
from near.sweep.validate import Validator, trainer_call, validate_jobs
from near.training import settings as S

REPO = Path(__file__).resolve().parents[1]
INF = "train.params.config.near_config.inference"

# one misspelt and one ill-typed key per settings group:
# (group, stage, task, misspelt override, reported key, suggestion, ill-typed override, reported key)
GROUPS = [
    ("top level", "rl", "mazePPO", "num_env=8", "num_env", "num_envs", "seed=1.5", "seed"),
    ("maze env", "rl", "mazePPO", "++task.env.maxEpisodeLenght=50", "task.env.maxEpisodeLenght",
     "maxEpisodeLength", "++task.env.kp=fast", "task.env.kp"),
    ("motion env", "rl", "motionPPO", "++task.env.episodeLenght=50", "task.env.episodeLenght", "episodeLength",
     "task.env.numObsSteps=two", "task.env.numObsSteps"),
    ("humanoid env", "rl", "Humanoid", "++task.env.terminationHieght=0.2", "task.env.terminationHieght",
     "terminationHeight", "task.env.stateInit=WeightedRandom", "task.env.stateInit"),
    ("PPO", "rl", "mazePPO", "++train.params.config.horizon_lenght=16", "train.params.config.horizon_lenght",
     "horizon_length", "train.params.config.gamma=high", "train.params.config.gamma"),
    ("AMP", "rl", "mazeAMP", "++train.params.config.disc_coeff=3", "train.params.config.disc_coeff", "disc_coef",
     "train.params.config.amp_batch_size=1.5", "train.params.config.amp_batch_size"),
    ("NEAR training (ncsn trainer)", "ncsn", "mazeNEAR", "++train.params.config.near_config.training.n_iter=5",
     "train.params.config.near_config.training.n_iter", "n_iters",
     "train.params.config.near_config.training.batch_size=big", "train.params.config.near_config.training.batch_size"),
    ("NEAR model", "ncsn", "mazeNEAR", "++train.params.config.near_config.model.ncsnv3=True",
     "train.params.config.near_config.model.ncsnv3", "ncsnv2", "train.params.config.near_config.model.L=1.5",
     "train.params.config.near_config.model.L"),
    ("NEAR optim", "ncsn", "mazeNEAR", "++train.params.config.near_config.optim.lrr=0.1",
     "train.params.config.near_config.optim.lrr", "lr", "train.params.config.near_config.optim.optimizer=Adamw",
     "train.params.config.near_config.optim.optimizer"),
    ("NEAR inference", "rl", "mazeNEAR", f"++{INF}.sigma_levl=-1", f"{INF}.sigma_levl", "sigma_level",
     f"{INF}.energy_reward_w=[1]", f"{INF}.energy_reward_w"),
    ("Track", "rl", "mazeTrack", "++train.params.config.tracking_config.combin=sum",
     "train.params.config.tracking_config.combin", "combine", "train.params.config.tracking_config.combine=mean",
     "train.params.config.tracking_config.combine"),
    ("network", "rl", "mazePPO", "++train.params.network.mlp.unit=[8]", "train.params.network.mlp.unit", "units",
     "train.params.network.mlp.units=[a]", "train.params.network.mlp.units[0]"),
]
CASES = [pytest.param(stage, task, bad, key, hint, id=f"{group}: misspelt")
         for group, stage, task, bad, key, hint, _, _ in GROUPS]
CASES += [pytest.param(stage, task, bad, key, None, id=f"{group}: ill-typed")
          for group, stage, task, _, _, _, bad, key in GROUPS]


def _message(key: str, hint: str | None) -> str:
    if hint is None:
        return f"ill-typed setting {key}="
    return f"unknown setting {key}; did you mean {hint}?"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


SPEC = """name: settings
workdir: {workdir}
axes:
  seed: [0, 1]
stages:
  - name: {stage}
    command: near train {stage} task={task} seed=${{seed}} run_dir=${{run_dir}} {extra}
"""


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    """A sweep folder holding a valid add of the same spec name."""
    root = tmp_path_factory.mktemp("sweeps")
    spec = root / "good.yaml"
    spec.write_text(SPEC.format(workdir=REPO, stage="rl", task="mazePPO", extra=""))
    assert main(["sweep", "add", str(spec), "--root", str(root / "exp")]) == 0
    return root


@pytest.mark.parametrize("stage,task,bad,key,hint", CASES)
def test_near_sweep_add_refuses_the_key_naming_file_job_and_key(sweep_root, capsys, stage, task, bad, key, hint):
    spec = sweep_root / "bad.yaml"
    spec.write_text(SPEC.format(workdir=REPO, stage=stage, task=task, extra=bad))
    before = _digest(sweep_root / "exp")
    capsys.readouterr()
    assert main(["sweep", "add", str(spec), "--root", str(sweep_root / "exp")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"near: error: {re.escape(str(spec))}: job [0-9a-f]{{12}} \(seed=[01]\): ", err), err
    assert _message(key, hint) in err, err
    assert _digest(sweep_root / "exp") == before


@pytest.mark.parametrize("stage,task,bad,key,hint", CASES)
def test_near_train_refuses_the_key_before_writing_anything(tmp_path, monkeypatch, capsys, stage, task, bad, key, hint):
    monkeypatch.chdir(tmp_path)
    assert main(["train", stage, f"task={task}", f"run_dir={tmp_path / 'run'}", bad]) == 2
    assert f"near: error: {_message(key, hint)}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_every_declared_setting_has_a_type_default_and_doc():
    for cls in (S.Settings, S.MazeTask, S.MotionTask, S.HumanoidTask, S.TrainParams, S.AMPNetwork, S.AMPConfig,
                S.NEARConfig, S.TrackConfig, S.NEARSettings):
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        cls()  # the defaults are valid settings
    assert S.NEARConfig().near_config.model.ema is True  # one EMA default, read by ncsn and rl alike


def test_stage_settings_of_ncsn_leave_out_what_it_does_not_read():
    base = S.load_settings(["task=mazeNEAR"])
    other = S.load_settings(["task=mazeNEAR", f"{INF}.sigma_level=3", "num_envs=7", "max_iterations=9",
                             "train.params.config.gamma=0.5", "run_dir=/x"])
    assert S.stage_settings(base, "ncsn") == S.stage_settings(other, "ncsn")
    assert S.stage_settings(base, "rl") != S.stage_settings(other, "rl")
    changed = S.load_settings(["task=mazeNEAR", "train.params.config.near_config.model.L=7"])
    assert S.stage_settings(changed, "ncsn") != S.stage_settings(base, "ncsn")
    assert json.loads(json.dumps(S.stage_settings(base, "ncsn"))) == S.stage_settings(base, "ncsn")
    with pytest.raises(ConfigError, match="no near_config"):
        S.stage_settings(S.load_settings(["task=mazePPO"]), "ncsn")


# ---------------------------------------------------------------------- every shipped sweep
def _shipped() -> dict[str, list]:
    out = {}
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        if spec.search is not None:
            continue
        out[spec.label] = [(j, trainer_call(j.command)) for j in expand(spec).jobs if trainer_call(j.command)]
    return out


SHIPPED = _shipped()
VALIDATOR = Validator()
DECLARED = {key for cls in vars(S).values() if dataclasses.is_dataclass(cls) for key in S._fields(cls)}


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_misspelt_key_in_any_job_of_a_shipped_sweep_is_refused(data):
    label = data.draw(st.sampled_from(sorted(SHIPPED)))
    job, (kind, overrides) = data.draw(st.sampled_from(SHIPPED[label]))
    keys = [o.lstrip("+").split("=", 1)[0] for o in overrides if "=" in o]
    keys = [k for k in keys if k not in ("task", "train")]
    key = data.draw(st.sampled_from(keys))
    head, _, last = key.rpartition(".")
    at = data.draw(st.integers(0, len(last)))
    letter = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_"))
    new_last = last[:at] + letter + last[at:]
    assume(new_last not in DECLARED)
    mutated = f"{head}.{new_last}" if head else new_last
    command, n = re.subn(rf"(?<![\w.]){re.escape(key)}(?==)", mutated, job.command, count=1)
    assert n == 1
    # a job as a table holds it: its command read anew, not expansion's parts
    plain = JobSpec(**{f.name: getattr(job, f.name) for f in dataclasses.fields(JobSpec)})
    with pytest.raises(ConfigError) as err:
        validate_jobs([dataclasses.replace(plain, command=command)], label, validator=VALIDATOR)
    assert f"{label}: job {job.job_id}" in str(err.value) and f"unknown setting {mutated}" in str(err.value)


# ---------------------------------------------------------------------- stage identity
def _ablations_nears_way(tmp_path: Path) -> Path:
    """sweeps/paper_ablations.yaml as NEAR's generator writes it: the inference overrides on the
    ncsn stage too."""
    text = (REPO / "sweeps" / "paper_ablations.yaml").read_text()
    text, n = re.subn(r', rl: \["\$\{inference\}', ', "*": ["${inference}', text)
    assert n == 5
    spec = tmp_path / "ablations.yaml"
    spec.write_text(text.replace("name: paper_ablations", f"name: ablations\nworkdir: {REPO}"))
    return spec


def test_nears_ablation_grid_trains_18_energy_models_for_45_runs(tmp_path, capsys):
    spec = _ablations_nears_way(tmp_path)
    assert main(["sweep", "add", str(spec), "--root", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    with JobTable.open(tmp_path / "exp" / "ablations") as table:
        jobs = table.jobs()
    assert len(jobs) == 63 and sum(j.stage == "ncsn" for j in jobs) == 18
    m = re.search(r"45 grid points, 63 jobs: 63 new, 0 existing, (\d+) shared", out)
    assert m and int(m.group(1)) >= 9, out
    assert f"stage ncsn does not read these overrides" in out and f"{INF}.sigma_level (45 job(s))" in out
    # every rl job needs an ncsn job of the table, and a shared one carries no ablation value
    ncsn = {j.job_id: j for j in jobs if j.stage == "ncsn"}
    assert all(j.deps["ncsn"] in ncsn for j in jobs if j.stage == "rl")
    assert all("ablation" not in j.params for j in ncsn.values() if sum(
        r.deps.get("ncsn") == j.job_id for r in jobs) > 1)


PINNED = "a4345ddf4ead"  # the main branch before typed settings
PINNED_SPEC = """name: pinned
axes:
  seed: [0, 1]
  sigma: [-1, 2, 5]
stages:
  - name: ncsn
    command: >-
      near train ncsn task=mazeNEAR seed=${seed} run_dir=${run_dir}
      ++train.params.config.near_config.inference.sigma_level=${sigma}
  - name: rl
    needs: [ncsn]
    command: >-
      near train rl task=mazeNEAR seed=${seed} run_dir=${run_dir}
      ++train.params.config.near_config.inference.sigma_level=${sigma}
      ++train.params.config.near_config.inference.eb_model_checkpoint=${ncsn.run_dir}/nn/checkpoint.pth
"""


def test_a_table_written_before_typed_settings_gains_no_job_when_readded(tmp_path, capsys):
    if shutil.which("git") is None or subprocess.run(["git", "cat-file", "-e", f"{PINNED}^{{commit}}"], cwd=REPO,
                                                     capture_output=True).returncode:
        pytest.skip(f"commit {PINNED} is not in this checkout's history")
    old = tmp_path / "old"  # that code and its cfg/; the spec's workdir (its folder's parent)
    (old / "sweeps").mkdir(parents=True)
    archive = subprocess.run(["git", "archive", PINNED, "near", "cfg"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    spec = old / "sweeps" / "pinned.yaml"
    spec.write_text(PINNED_SPEC)
    r = subprocess.run([sys.executable, "-m", "near", "sweep", "add", str(spec), "--root", str(tmp_path / "exp")],
                       cwd=old, env=dict(os.environ, PYTHONPATH=str(old)), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "12 jobs: 12 new" in r.stdout, r.stdout + r.stderr
    # today the ncsn jobs ignore sigma_level: a fresh add shares them ...
    spec.write_text(PINNED_SPEC.replace("name: pinned", f"name: pinned\nworkdir: {REPO}"))
    assert main(["sweep", "add", str(spec), "--root", str(tmp_path / "fresh")]) == 0
    assert "8 jobs: 8 new" in capsys.readouterr().out
    # ... but every job already in the old table stays, and nothing is added
    with JobTable.open(tmp_path / "exp" / "pinned") as table:
        before = {j.job_id: j.state for j in table.jobs()}
    assert main(["sweep", "add", str(spec), "--root", str(tmp_path / "exp")]) == 0
    assert " 0 new, 12 existing" in capsys.readouterr().out
    with JobTable.open(tmp_path / "exp" / "pinned") as table:
        assert {j.job_id: j.state for j in table.jobs()} == before


# ---------------------------------------------------------------------- motions
def test_a_missing_motion_file_stops_the_run_naming_it_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from near.training.envs.humanoid import motion_lib

    # the data folder as a fresh clone has it (empty), whatever this machine keeps in cfg/
    empty = tmp_path / "motions"
    empty.mkdir()
    monkeypatch.setattr(motion_lib, "MOTION_DIR", empty)
    monkeypatch.delenv("NEAR_MOTION_DIR", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # NEAR's name of the walk is a file, not the synthetic walk: no silent substitution
    assert main(["train", "rl", "task=Humanoid", "++task.env.motion_file=amp_humanoid_walk.yaml",
                 f"run_dir={work / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "motion file 'amp_humanoid_walk.yaml'" in err and "looked in:" in err
    assert str(empty / "amp_humanoid_walk.yaml") in err
    assert os.listdir(work) == []


def test_motion_sources_record_files_hashes_and_which_are_synthetic(tmp_path):
    from near.training import motions
    from near.training.envs.humanoid import motion_lib

    (walk,) = motion_lib.motion_sources("walk")
    assert walk["synthetic"] is True and walk["sha256"] == hashlib.sha256(Path(walk["file"]).read_bytes()).hexdigest()
    clip = tmp_path / "clip.npy"
    shutil.copy(walk["file"], clip)
    (own,) = motion_lib.motion_sources(str(clip))
    assert own == {"motion_file": str(clip), "file": str(clip), "sha256": walk["sha256"], "synthetic": False}
    assert motions.motion_sources("circle") == [{"motion_file": "circle", "file": None, "sha256": None,
                                                 "synthetic": True}]


def test_matmul_precision_is_applied_by_both_stages_and_a_bad_value_refused(tmp_path, monkeypatch, capsys):
    import torch

    from near.training.entry import _prepare

    before = torch.get_float32_matmul_precision()
    try:
        _prepare("rl", ["task=mazePPO", f"run_dir={tmp_path / 'a'}", "matmul_precision=medium"])
        assert torch.get_float32_matmul_precision() == "medium"
        _prepare("ncsn", ["task=mazeNEAR", f"run_dir={tmp_path / 'b'}"])
        assert torch.get_float32_matmul_precision() == "high"  # the default: TF32 on CUDA
    finally:
        torch.set_float32_matmul_precision(before)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["train", "rl", "task=mazePPO", f"run_dir={empty / 'run'}", "matmul_precision=low"]) == 2
    assert "ill-typed setting matmul_precision='low': expected one of 'highest', 'high', 'medium'" in \
        capsys.readouterr().err
    assert os.listdir(empty) == []


def test_add_notes_name_synthetic_motions_and_files_found_nowhere_the_env_looks(tmp_path, monkeypatch):
    from near.sweep.validate import motion_notes

    cfg = tmp_path / "repo" / "cfg"
    (cfg / "task" / "motions" / "humanoid").mkdir(parents=True)
    near_checkout = tmp_path / "near"
    data = near_checkout / "isaacgymenvs" / "custom_envs" / "data" / "humanoid"
    data.mkdir(parents=True)
    (data / "amp_humanoid_walk.yaml").write_text("motions:\n- file: clip.npy\n")
    (data / "clip.npy").write_bytes(b"")  # the notes look for files, they do not parse them
    monkeypatch.setenv("NEAR_MOTION_DIR", str(near_checkout))
    notes = motion_notes({(str(cfg), "Humanoid", "walk"): 3,
                          (str(cfg), "Humanoid", "amp_humanoid_walk.yaml"): 2,   # in the NEAR checkout
                          (str(cfg), "Humanoid", "amp_humanoid_run.yaml"): 1})   # nowhere
    assert notes[0] == "synthetic motions (near's generated clips, not motion capture): walk (3 job(s))"
    assert notes[1] == "motion files: amp_humanoid_walk.yaml (2 job(s)), amp_humanoid_run.yaml (1 job(s))"
    assert len(notes) == 3 and "amp_humanoid_walk.yaml" not in notes[2]
    assert notes[2].startswith(f"motion files not found (looked in the workdir and {data}, "
                               f"{cfg / 'task' / 'motions' / 'humanoid'}): amp_humanoid_run.yaml")
    (data / "amp_humanoid_crane_pose.yaml").write_text("motions:\n- file: amp_cmu_crane_pose_task/a.npy\n")
    crane = motion_notes({(str(cfg), "Humanoid", "amp_humanoid_crane_pose.yaml"): 1})  # a clip it lists is missing
    assert crane[-1] == (f"{data / 'amp_humanoid_crane_pose.yaml'}: motions[0] names 'amp_cmu_crane_pose_task/a.npy', "
                         f"not found (looked for {data / 'amp_cmu_crane_pose_task' / 'a.npy'}); its jobs stop with "
                         "this error until it is fixed")
    monkeypatch.delenv("NEAR_MOTION_DIR")  # without the checkout, NEAR's walk is missing too
    assert "amp_humanoid_walk.yaml" in motion_notes({(str(cfg), "Humanoid", "amp_humanoid_walk.yaml"): 1})[-1]


def test_a_constant_learning_rate_asks_rl_games_scheduler_once_per_mini_epoch():
    """rl-games' default reads the KL back from the GPU after every minibatch for its scheduler; a
    constant rate ignores the KL, so near asks once per mini-epoch. Other schedules keep rl-games'."""
    constant = S.rl_games_params(S.load_settings(["task=HumanoidNEAR"]))["config"]
    assert constant["lr_schedule"] == "constant" and constant["schedule_type"] == "standard"
    adaptive = S.rl_games_params(S.load_settings(["task=HumanoidNEAR", "train.params.config.lr_schedule=adaptive"]))
    assert "schedule_type" not in adaptive["config"]


def test_a_body_the_humanoid_lacks_stops_the_run_before_its_config_is_rewritten(tmp_path, capsys):
    """A typo in contactBodies on a resume must not overwrite the run's recorded config.yaml."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("recorded: true\n")
    assert main(["train", "rl", "task=HumanoidNEAR", "++task.env.contactBodies=[right_foot,left_fot]",
                 f"run_dir={run_dir}"]) == 2
    assert "contactBodies: unknown bodies ['left_fot']" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "recorded: true\n" and sorted(os.listdir(run_dir)) == ["config.yaml"]


# a motion no env can load: a misspelt built-in name, NEAR's walk_and_wave name (no file by it), none
BAD_MOTIONS = [("rl", "Humanoid", "wlak"), ("ncsn", "HumanoidNEAR", "amp_humanoid_walk_and_wave"),
               ("rl", "motionPPO", "circel"), ("ncsn", "motionNEAR", "")]


@pytest.mark.parametrize("stage,task,motion", BAD_MOTIONS)
def test_a_motion_no_env_can_load_is_refused_at_add_and_by_near_train(sweep_root, tmp_path, monkeypatch, capsys,
                                                                      stage, task, motion):
    """The run would stop loading its motions: add refuses it with the job and the key instead of
    calling it a synthetic motion."""
    spec = sweep_root / "bad_motion.yaml"
    spec.write_text(SPEC.format(workdir=REPO, stage=stage, task=task, extra=f"'++task.env.motion_file={motion}'"))
    before = _digest(sweep_root / "exp")
    capsys.readouterr()
    assert main(["sweep", "add", str(spec), "--root", str(sweep_root / "exp")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"near: error: {re.escape(str(spec))}: job [0-9a-f]{{12}} \(seed=[01]\): setting "
                     rf"task.env.motion_file='{motion}': not a motion", err), err
    assert _digest(sweep_root / "exp") == before
    monkeypatch.chdir(tmp_path)
    assert main(["train", stage, f"task={task}", f"run_dir={tmp_path / 'run'}",
                 f"++task.env.motion_file={motion}"]) == 2
    assert f"setting task.env.motion_file='{motion}': not a motion" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_the_built_in_motion_names_are_those_the_envs_generate():
    from near.training import motions
    from near.training.envs.humanoid import synthetic

    assert sorted(S.PLANAR_MOTIONS) == motions.motion_names()
    assert sorted(S.HUMANOID_MOTIONS) == sorted(synthetic.MOTIONS)
