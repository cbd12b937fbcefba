"""Code snapshots: queued jobs run the code of the dispatch, not the live tree (local and SLURM).

The "live tree" is a git repository in tmp_path holding a copy of near's package and cfg/ plus a
probe: a module whose value the test edits, a cfg file it edits, and a hook in near/__init__.py that
writes which ``near`` a ``near ...`` command imported. The controller (this checkout's editable
install) dispatches; every job must import the snapshot's ``near`` and read the snapshot's cfg/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from near import snapshot
from near.errors import SpecError
from near.sweep.spec import parse_spec
from tests._slurm_helpers import require_cluster

REPO = Path(__file__).resolve().parents[1]
PROBE = """\
import json, os, sys
import near, near._probe as p
from near.training.config import find_cfg_dir
cfg = find_cfg_dir()
json.dump({"value": p.VALUE, "near": near.__file__, "cfg": cfg, "cwd": os.getcwd(),
           "cfg_value": open(os.path.join(cfg, "probe.txt")).read().strip()}, open(sys.argv[1], "w"))
"""
HOOK = """
import os as _os
if _os.environ.get("NEAR_PROBE_OUT"):
    open(_os.environ["NEAR_PROBE_OUT"], "w").write(__file__)
"""


def git(wd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(wd), *args], check=True, capture_output=True)


def live_tree(tmp: Path, spec_extra: str = "") -> Path:
    wd = tmp / "wd"
    shutil.copytree(REPO / "near", wd / "near", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "cfg", wd / "cfg")
    (wd / "near" / "__init__.py").write_text((wd / "near" / "__init__.py").read_text() + HOOK)
    (wd / "near" / "_probe.py").write_text('VALUE = "v1"\n')
    (wd / "cfg" / "probe.txt").write_text("c1\n")
    (wd / "probe.py").write_text(PROBE)
    (wd / ".gitignore").write_text("/experiments/\n__pycache__/\n")
    (wd / "sweeps").mkdir()
    # a edits the live tree while b still waits to be dispatched (same `run`) or queued (SLURM)
    edit = (f"{sys.executable} -c \"import pathlib; w = pathlib.Path('{wd}'); "
            "(w / 'near' / '_probe.py').write_text('VALUE = \\\\'v2\\\\'\\\\n'); "
            "(w / 'cfg' / 'probe.txt').write_text('c2')\"")
    (wd / "sweeps" / "snap.yaml").write_text(f"""name: snap
workdir: ..
{spec_extra}axes:
  seed: [1]
stages:
  - name: a
    command: python probe.py ${{run_dir}}/probe.json && {edit}
  - name: b
    needs: [a]
    command: NEAR_PROBE_OUT=${{run_dir}}/cli.txt near sweep --help > /dev/null && python probe.py ${{run_dir}}/probe.json
""")
    git(wd, "init", "-q")
    git(wd, "add", ".")
    git(wd, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "v1")
    return wd


def near(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "near", *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    if check and p.returncode:
        raise AssertionError(f"near {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def probe(exp: Path, job: str) -> dict:
    return json.loads((exp / "runs" / job / "probe.json").read_text())


def job_ids(exp: Path) -> dict[str, str]:
    from near.jobtable import JobTable

    with JobTable.open(exp) as t:
        return {j.stage: j.job_id for j in t.jobs()}


def assert_ran_snapshot(exp: Path, job: str, value: str, cfg_value: str) -> Path:
    got = probe(exp, job)
    snap = Path(got["cwd"])
    assert snap.parent == exp / "snapshots" and (snap / "probe.py").is_file(), got
    assert got["near"] == str(snap / "near" / "__init__.py"), got          # PYTHONPATH beats the editable install
    assert got["cfg"] == str(snap / "cfg") and (got["value"], got["cfg_value"]) == (value, cfg_value), got
    return snap


def test_local_run_jobs_run_the_snapshot_of_their_dispatch(tmp_path: Path) -> None:
    wd = live_tree(tmp_path)
    near("sweep", "add", wd / "sweeps" / "snap.yaml", cwd=tmp_path)
    exp = tmp_path / "experiments" / "snap"
    out = near("sweep", "run", exp, cwd=tmp_path).stdout
    ids = job_ids(exp)
    assert (wd / "near" / "_probe.py").read_text() == "VALUE = 'v2'\n"   # a edited the live tree
    snap = assert_ran_snapshot(exp, ids["a"], "v1", "c1")
    # b was dispatched after the edit, by the same run: it still runs the code of the run's start
    assert assert_ran_snapshot(exp, ids["b"], "v1", "c1") == snap
    assert (exp / "runs" / ids["b"] / "cli.txt").read_text() == str(snap / "near" / "__init__.py")
    assert f"code snapshot {snap}" in out
    commit = subprocess.run(["git", "-C", str(wd), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    show = near("sweep", "show", exp, ids["b"], cwd=tmp_path).stdout
    assert f"snapshot   {snap} ({commit.strip()[:12]})" in show, show   # clean tree: no "dirty"
    assert not (snap / "near" / "_probe.py").stat().st_mode & 0o222      # frozen read-only
    meta = json.loads((exp / "snapshots" / f"{snap.name}.json").read_text())
    assert meta["commit"] == commit.strip() and meta["dirty"] is False
    assert not any((snap / d).exists() for d in (".git", "experiments"))

    # reset b: a new dispatch takes the edited (dirty) tree as a new snapshot, recorded with its diff
    near("sweep", "reset", exp, "--state", "done", "--job", ids["b"], cwd=tmp_path)
    near("sweep", "run", exp, cwd=tmp_path)
    snap2 = assert_ran_snapshot(exp, ids["b"], "v2", "c2")
    assert snap2 != snap and "dirty" in near("sweep", "show", exp, ids["b"], cwd=tmp_path).stdout
    assert "VALUE = 'v2'" in (exp / "snapshots" / f"{snap2.name}.diff").read_text()
    # an unchanged tree reuses its snapshot
    near("sweep", "reset", exp, "--state", "done", "--job", ids["b"], cwd=tmp_path)
    near("sweep", "run", exp, cwd=tmp_path)
    assert assert_ran_snapshot(exp, ids["b"], "v2", "c2") == snap2
    assert sorted(p.name for p in (exp / "snapshots").iterdir() if p.is_dir()) == sorted([snap.name, snap2.name])


def test_snapshot_false_runs_the_live_tree(tmp_path: Path) -> None:
    wd = live_tree(tmp_path, spec_extra="snapshot: false\n")
    near("sweep", "add", wd / "sweeps" / "snap.yaml", cwd=tmp_path)
    exp = tmp_path / "experiments" / "snap"
    near("sweep", "run", exp, cwd=tmp_path)
    got = probe(exp, job_ids(exp)["b"])
    assert got["cwd"] == str(wd) and got["cfg_value"] == "c2" and not (exp / "snapshots").exists()
    assert "snapshot: false" in near("sweep", "show", exp, job_ids(exp)["b"], cwd=tmp_path).stdout


@pytest.mark.slurm
def test_queued_slurm_jobs_run_the_snapshot_taken_at_submit(tmp_path: Path) -> None:
    require_cluster()
    wd = live_tree(tmp_path)
    near("sweep", "add", wd / "sweeps" / "snap.yaml", cwd=tmp_path)
    exp = tmp_path / "experiments" / "snap"
    near("sweep", "submit", exp, "--profile", REPO / "slurm" / "local.yaml", "--hold", cwd=tmp_path)
    try:
        # edit the live tree while both jobs are queued (held), then let them run
        (wd / "near" / "_probe.py").write_text('VALUE = "edited"\n')
        (wd / "cfg" / "probe.txt").write_text("edited")
        from near.jobtable import JobTable

        with JobTable.open(exp) as t:
            sids = [j.scheduler_id for j in t.jobs()]
        subprocess.run(["scontrol", "release", *sids], check=True, capture_output=True)
        out = near("sweep", "wait", exp, "--profile", REPO / "slurm" / "local.yaml", "--poll", "1",
                   "--timeout", "180", cwd=tmp_path).stdout
        assert "every job is done" in out, out
    finally:
        near("sweep", "cancel", exp, cwd=tmp_path)
    ids = job_ids(exp)
    snap = assert_ran_snapshot(exp, ids["a"], "v1", "c1")
    assert assert_ran_snapshot(exp, ids["b"], "v1", "c1") == snap
    assert (exp / "runs" / ids["b"] / "cli.txt").read_text() == str(snap / "near" / "__init__.py")


def test_spec_snapshot_key_and_size_warning(tmp_path: Path) -> None:
    base = {"axes": {"seed": [1]}, "stages": [{"name": "a", "command": "true"}]}
    assert parse_spec(base, tmp_path / "s.yaml").snapshot is True
    assert parse_spec({**base, "snapshot": False}, tmp_path / "s.yaml").snapshot is False
    with pytest.raises(SpecError, match="snapshot"):
        parse_spec({**base, "snapshot": "no"}, tmp_path / "s.yaml")
    wd = tmp_path / "plain"          # not a git repository: every file but the skipped folders
    (wd / "experiments").mkdir(parents=True)
    (wd / "experiments" / "x").write_text("x")
    (wd / "big.bin").write_bytes(b"\0" * 4096)
    warnings: list[str] = []
    old = snapshot.WARN_BYTES
    snapshot.WARN_BYTES = 1024
    try:
        snap = snapshot.take(tmp_path / "exp", wd, warn=warnings.append)
    finally:
        snapshot.WARN_BYTES = old
    assert len(warnings) == 1 and "snapshot: false" in warnings[0] and str(wd) in warnings[0]
    assert (snap.path / "big.bin").is_file() and not (snap.path / "experiments").exists()
    assert snap.commit is None and snapshot.take(tmp_path / "exp", wd, warn=warnings.append) == snap


@pytest.mark.parametrize("git_repo", [True, False])
def test_snapshots_never_copy_the_experiment_in_use_nor_other_experiments(tmp_path: Path, git_repo: bool) -> None:
    wd = tmp_path / "wd"
    (wd / "pkg").mkdir(parents=True)
    (wd / "pkg" / "code.py").write_text("x = 1\n")
    exp = wd / "results" / "t"            # `--root results` inside the workdir
    other = wd / "old_runs" / "paper"     # another experiment root
    for e in (exp, other):
        (e / "runs" / "j").mkdir(parents=True)
        (e / "jobs.db").write_bytes(b"table")
        (e / "runs" / "j" / "big.bin").write_bytes(b"0" * 4096)
    if git_repo:
        git(wd, "init", "-q")
    sizes = []
    for k in range(3):  # every snapshot lands in the experiment: none may copy the previous ones
        (wd / "pkg" / "code.py").write_text(f"x = {k}\n")
        snap = snapshot.take(exp, wd, warn=lambda m: None)
        files = sorted(p.relative_to(snap.path).as_posix() for p in snap.path.rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts)
        assert files == ["pkg/code.py"], files
        sizes.append(snap.size)
    assert sizes == [6, 6, 6]


def test_motion_data_is_linked_not_copied(tmp_path: Path) -> None:
    wd = tmp_path / "tree"
    data = wd / snapshot.MOTION_DATA
    data.mkdir(parents=True)
    (data / "amp_humanoid_walk.yaml").write_text("motions: []\n")
    (data / "clip.npy").write_bytes(b"\0" * 4096)
    (wd / "code.py").write_text("x = 1\n")
    snap = snapshot.take(tmp_path / "exp", wd, warn=lambda _: None)
    assert snap.size == len("x = 1\n")                       # the data counts for nothing
    linked = snap.path / snapshot.MOTION_DATA
    assert linked.is_symlink() and linked.resolve() == data.resolve()
    assert (linked / "clip.npy").read_bytes() == b"\0" * 4096  # a job still finds the files
    (data / "clip.npy").write_bytes(b"\1")                    # data changes leave the code's digest alone
    assert snapshot.take(tmp_path / "exp", wd, warn=lambda _: None).digest == snap.digest


def test_a_job_stopped_by_ctrl_c_resumes_with_its_snapshot_and_reset_takes_the_tree_anew(tmp_path: Path) -> None:
    """A stopped attempt is refunded (its attempt counter goes back to 0), yet the job resumes its
    checkpoint: it must keep the code that wrote it, however the tree changed meanwhile."""
    import signal
    import time

    wd = tmp_path / "wd"
    (wd / "sweeps").mkdir(parents=True)
    (wd / "code.txt").write_text("v1\n")
    (wd / ".gitignore").write_text("/experiments/\n")
    (wd / "sweeps" / "s.yaml").write_text("""name: s
workdir: ..
axes:
  seed: [1]
stages:
  - name: a
    command: cat code.txt >> ${run_dir}/seen.txt; touch ${run_dir}/started; while [ ! -e ${run_dir}/go ]; do sleep 0.05; done
""")
    git(wd, "init", "-q")
    git(wd, "add", ".")
    git(wd, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "v1")
    near("sweep", "add", "sweeps/s.yaml", "--no-validate", cwd=wd)
    exp = wd / "experiments" / "s"
    run_dir = exp / "runs" / job_ids(exp)["a"]
    ctl = subprocess.Popen([sys.executable, "-m", "near", "sweep", "run", str(exp)], cwd=wd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 60
    while not (run_dir / "started").exists():
        assert ctl.poll() is None and time.monotonic() < end, ctl.communicate()[0]
        time.sleep(0.05)
    ctl.send_signal(signal.SIGINT)
    assert ctl.wait(timeout=60) == 130, ctl.communicate()[0]

    (wd / "code.txt").write_text("v2\n")          # edited while the job waits to resume
    (run_dir / "go").touch()
    near("sweep", "run", exp, cwd=wd)
    assert (run_dir / "seen.txt").read_text() == "v1\nv1\n"
    assert len([p for p in (exp / "snapshots").iterdir() if p.is_dir()]) == 1

    near("sweep", "reset", exp, "--state", "done", cwd=wd)   # a reset runs the tree as it is now
    near("sweep", "run", exp, cwd=wd)
    assert (run_dir / "seen.txt").read_text() == "v1\nv1\nv2\n"


def test_a_file_saved_while_the_snapshot_is_taken_never_lands_under_its_old_digest(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    wd = tmp_path / "tree"
    wd.mkdir()
    (wd / "code.txt").write_text("old\n")
    (wd / "gone.txt").write_text("deleted while the snapshot is taken\n")
    hashed = snapshot.tree_digest

    def then_edit(workdir: Path, rels):   # the tree changes between the digest and the copy
        got = hashed(workdir, rels)
        (wd / "code.txt").write_text("new\n")
        (wd / "gone.txt").unlink()
        return got

    monkeypatch.setattr(snapshot, "tree_digest", then_edit)
    snap = snapshot.take(tmp_path / "exp", wd, warn=lambda _: None)
    monkeypatch.setattr(snapshot, "tree_digest", hashed)
    assert (snap.path / "code.txt").read_text() == "new\n" and not (snap.path / "gone.txt").exists()
    # the snapshot is named by its content: the tree with that content reuses it...
    assert snapshot.take(tmp_path / "exp", wd, warn=lambda _: None) == snap
    # ...and the old content is never served from it
    (wd / "code.txt").write_text("old\n")
    (wd / "gone.txt").write_text("deleted while the snapshot is taken\n")
    old = snapshot.take(tmp_path / "exp", wd, warn=lambda _: None)
    assert old.digest != snap.digest and (old.path / "code.txt").read_text() == "old\n"


def test_a_torn_snapshot_metadata_file_is_written_anew_not_a_traceback(tmp_path: Path) -> None:
    """A dispatcher killed while writing the metadata of a snapshot another one had just made left
    half a JSON file beside a complete snapshot: every later dispatch and `show` must still work."""
    wd = tmp_path / "wd"
    (wd / "sweeps").mkdir(parents=True)
    (wd / "code.txt").write_text("v1\n")
    (wd / "sweeps" / "s.yaml").write_text("name: s\nworkdir: ..\nstages:\n  - name: a\n    command: cat code.txt\n")
    near("sweep", "add", "sweeps/s.yaml", "--no-validate", cwd=wd)
    exp = wd / "experiments" / "s"
    near("sweep", "run", exp, cwd=wd)
    [meta] = (exp / "snapshots").glob("*.json")
    whole = meta.read_text()
    meta.write_text(whole[: len(whole) // 2])
    job = job_ids(exp)["a"]
    show = near("sweep", "show", exp, job, cwd=wd)
    assert "Traceback" not in show.stderr and "snapshot" in show.stdout
    near("sweep", "reset", exp, "--state", "done", cwd=wd)
    r = near("sweep", "run", exp, cwd=wd, check=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(meta.read_text()) == json.loads(whole) | {"created": json.loads(meta.read_text())["created"]}
    assert [p.name for p in (exp / "snapshots").iterdir() if p.name.startswith(".")] == []
