"""Bad specs through `near sweep add`: each ends in `near: error: FILE: KEY: ...` with exit status 2
and leaves the sweep's folder (its job table included) byte for byte as it was."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from near.cli import main
from near.errors import SpecError
from near.sweep.expand import expand
from near.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
GOOD = """
name: t
axes:
  a: [1, 2]
  seed: {count: 3}
stages:
  - name: s
    command: echo a=${a} seed=${seed} > ${run_dir}/out
"""


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch) -> Path:
    """A folder with sweeps/good.yaml added to experiments/t (6 jobs)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "good.yaml").write_text(GOOD)
    assert main(["sweep", "add", "sweeps/good.yaml"]) == 0
    return tmp_path


def add_bad(sweep: Path, body: bytes | str, capsys, *args: str) -> str:
    """`near sweep add sweeps/bad.yaml ARGS` of a spec named t: asserts exit 2, a one-line
    `near: error: sweeps/bad.yaml: ...` and an untouched experiments/t; returns the message."""
    path = sweep / "sweeps" / "bad.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    before = snapshot(sweep / "experiments" / "t")
    capsys.readouterr()
    rc = main(["sweep", "add", "sweeps/bad.yaml", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("near: error: sweeps/bad.yaml: ") and "Traceback" not in err, err
    assert snapshot(sweep / "experiments" / "t") == before
    return err.strip()


STAGE = "stages: [{name: s, command: 'echo ${a}'}]\n"
CASES = {
    "non-UTF-8": (b"name: t\naxes: {a: [caf\xe9]}\n" + STAGE.encode(),
                  "sweeps/bad.yaml: not UTF-8 text: byte 0xe9 at line 2"),
    "include nested list": ("name: t\naxes: {a: [1]}\ninclude: [{a: [[1]]}]\n" + STAGE,
                            "include[0].a[0]: values are scalars, not a list"),
    "include mapping": ("name: t\naxes: {a: [1]}\ninclude: [{a: {x: 1}}]\n" + STAGE,
                        "include[0].a: values are scalars, not a mapping"),
    "NUL in a value": ('name: t\naxes: {a: ["k=a\\0k=b"]}\n' + STAGE,
                       "axes.a[0]: holds a NUL byte (\\0), which no command argument can carry"),
    "NUL in an override": ('name: t\naxes: {a: [1]}\nstages: [{name: s, command: "echo ${a}", overrides: ["k=a\\0k=b"]}]\n',
                           "stages[0].overrides[0]: holds a NUL byte"),
    "NUL in a command": ('name: t\naxes: {a: [1]}\nstages: [{name: s, command: "echo ${a}\\0"}]\n',
                         "stages[0].command: holds a NUL byte"),
    "unpaired surrogate": ('name: t\nvars: {v: "\\ud800"}\naxes: {a: [1]}\n' + STAGE,
                           "vars.v: holds '\\ud800', which is not text"),
    "recursive alias": ("name: t\nx-a: &a [*a]\naxes: {a: [1]}\n" + STAGE,
                        "an alias refers to a node that contains it"),
    "missing workdir": ("name: t\nworkdir: ../does-not-exist\naxes: {a: [1]}\n" + STAGE,
                        "workdir: '../does-not-exist' is "),
    "description not text": ("name: t\ndescription: [a]\naxes: {a: [1]}\n" + STAGE,
                             "description: must be text, not a list"),
    "value in arithmetic": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'echo $(( ${a} + 1 ))'}]\n",
                            "stages[0].command: ${a} stands in an arithmetic expression ($(( ))): bash would "
                            "evaluate its value as code there"),
    "value in a [[ -eq ]] test": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: '[[ ${a} -eq 0 ]]'}]\n",
                                  "${a} stands in a [[ ]] test with an arithmetic operator"),
    "value in let": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'let y=${a}'}]\n",
                     "${a} stands in the arguments of let"),
    "value in an array subscript": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'x[${a}]=1'}]\n",
                                    "${a} stands in an array subscript"),
    "value as a parameter name": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'echo ${#${a}}'}]\n",
                                  "${a} stands in the name of a parameter expansion"),
    "run dir in arithmetic": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'echo ${a} $((${run_dir}))'}]\n",
                              "${run_dir} stands in an arithmetic expression"),
    "quotes inside a parameter expansion": (
        "name: t\naxes: {a: [1]}\nstages: [{name: s, command: \"echo ${X:-'${a}'}\"}]\n",
        "${a} stands in quotes inside a parameter expansion"),
    "duplicate key": ("name: t\naxes: {a: [1]}\n" + STAGE + "axes: {a: [2]}\n",
                      "malformed YAML: line 4, column 1: duplicate key 'axes' (first at line 2)"),
    "duplicate nested key": ("name: t\naxes:\n  a: [1]\n  a: [2]\n" + STAGE,
                             "malformed YAML: line 4, column 3: duplicate key 'a' (first at line 3)"),
    "when matches no value": ("name: t\naxes: {a: [1, 2]}\nstages: [{name: s, when: {a: 3}, command: 'echo ${a}'}]\n",
                              "stages[0].when.a: '3' is not a value of 'a', so this matches nothing (values: 1, 2)"),
    "axis when matches no value": ("name: t\naxes: {a: [x], b: {values: [1], when: {a: y}}}\n" + STAGE,
                                   "axes.b.when.a: 'y' is not a value of 'a'"),
    "zero jobs, no points": ("name: t\naxes: {a: [1, 2]}\nexclude: [{a: [1, 2]}]\n" + STAGE,
                             "exclude: removes every grid point, so the spec gives 0 jobs"),
    "zero jobs, no stage runs": ("name: t\naxes: {a: [1, 2]}\nexclude: [{a: 2}]\n"
                                 "stages: [{name: s, when: {a: 2}, command: 'echo ${a}'}]\n",
                                 "stages: none runs at any of the 1 grid points"),
    "validate not boolean": ("name: t\naxes: {a: [1]}\nstages: [{name: s, validate: 'no', command: 'echo ${a}'}]\n",
                             "stages[0].validate: must be true or false, not 'no'"),
    "sweep name with newline": ('name: "t\\n"\naxes: {a: [1]}\n' + STAGE,
                                "name: 't\\n' is not a valid sweep name"),
    "axis name with newline": ('name: t\naxes: {"a\\n": [1]}\n' + STAGE, "axis names are identifiers"),
    "stage name with newline": ("name: t\naxes: {a: [1]}\nstages: [{name: \"s\\n\", command: 'echo ${a}'}]\n",
                                "stages[0]: stage name 's\\n' must be an identifier"),
    "time with newline": ('name: t\naxes: {a: [1]}\nresources: {time: "00:10:00\\n"}\n' + STAGE,
                          "resources.time: '00:10:00\\n' is not a time limit"),
    # sbatch refuses each of these (--cpus-per-task=0, --mem=4.5G, '4 G', 4B) once the jobs are added
    "zero cpus": ("name: t\naxes: {a: [1]}\nresources: {cpus: 0}\n" + STAGE,
                  "resources.cpus: must be a positive integer, not 0"),
    "fractional mem": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'echo ${a}', resources: {mem: 4.5G}}]\n",
                       "stages[0].resources.mem: '4.5G' is not a memory size"),
    "mem with a blank": ("name: t\naxes: {a: [1]}\nresources: {mem: 4 G}\n" + STAGE,
                         "resources.mem: '4 G' is not a memory size"),
    "mem in bytes": ("name: t\naxes: {a: [1]}\nresources: {mem: 4B}\n" + STAGE,
                     "resources.mem: '4B' is not a memory size"),
    # extra sbatch options replace near's own lines of the script (sbatch also takes a prefix: --arr)
    "sbatch signal": ("name: t\naxes: {a: [1]}\nresources: {slurm: {signal: USR1@30}}\n" + STAGE,
                      "resources.slurm.signal: near sets sbatch's --signal itself"),
    "sbatch array prefix": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'echo ${a}', "
                            "resources: {slurm: {arr: 0-9}}}]\n",
                            "stages[0].resources.slurm.arr: near sets sbatch's --array itself"),
    "sbatch time": ("name: t\naxes: {a: [1]}\nresources: {slurm: {time: 5}}\n" + STAGE,
                    "resources.slurm.time: sbatch's --time comes from resources.time; set that instead"),
    "sbatch cpus": ("name: t\naxes: {a: [1]}\nresources: {slurm: {cpus_per_task: 8}}\n" + STAGE,
                    "resources.slurm.cpus_per_task: sbatch's --cpus-per-task comes from resources.cpus"),
    "zipped axes with different when": (
        "name: t\naxes: {x: [1, 2], a: [p, q], b: {values: [r, s], when: {x: 1}}}\nzip: [[a, b]]\n"
        "stages: [{name: s, command: 'echo ${a}'}]\n",
        "zip[0]: zipped axes vary together, so they need the same 'when': a: none, b: x=1"),
    "huge seed count": ("name: t\naxes: {seed: {count: 10000000000}}\n" + STAGE.replace("${a}", "${seed}"),
                        "axes.seed.count: 10,000,000,000 values is more than the limit of 1,000,000 jobs"),
    "10^7-point grid": ("name: t\naxes: {" + ", ".join(f"a{i}: [0,1,2,3,4,5,6,7,8,9]" for i in range(7))
                        + "}\nstages: [{name: s, command: 'echo ${a0}'}]\n",
                        "axes: a0 (10) x a1 (10) x a2 (10) x a3 (10) x a4 (10) x a5 (10) x a6 (10) make "
                        "10,000,000 grid points and up to 10,000,000 jobs, more than the limit of 1,000,000"),
    "slurm value with newline": ('name: t\naxes: {a: [1]}\nresources: {slurm: {comment: "x\\nrm -rf ~"}}\n' + STAGE,
                                 "resources.slurm.comment: sbatch option values are one line"),
    "raw variable with an operator": ("name: t\nraw: [b]\nvars: {b: 'x; touch y'}\naxes: {a: [1]}\n"
                                      "stages: [{name: s, command: 'echo ${b}'}]\n",
                                      "stages[0].command: ${b} = 'x; touch y' is raw shell text (raw: in the spec)"
                                      " but holds the shell operator ';'; a raw variable holds shell words only "
                                      "(at grid point a=1)"),
    "raw variable with a command substitution": (
        "name: t\nraw: [b]\nvars: {b: 'x=$(id)'}\naxes: {a: [1]}\nstages: [{name: s, command: 'echo ${b}'}]\n",
        "holds a command substitution ('$(')"),
    "raw variable inside quotes": ("name: t\nraw: [b]\nvars: {b: 'x y'}\naxes: {a: [1]}\n"
                                   "stages: [{name: s, command: 'echo \"${b}\"'}]\n",
                                   "${b} is raw shell text (raw: in the spec) but stands inside quotes"),
    "raw names nothing": ("name: t\nraw: [bundle]\naxes: {a: [1]}\n" + STAGE,
                          "raw[0]: 'bundle' is not a variable or axis of this spec (a)"),
    "unclosed quote": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: \"echo '${a}\"}]\n",
                       "stages[0].command: the shell cannot read this command: it ends with an unclosed ' quote"),
    "backslash before a value": ("name: t\naxes: {a: [1]}\nstages: [{name: s, command: 'echo \\${a}'}]\n",
                                 "${a} right after a backslash"),
    "value running into a brace": ("name: t\naxes: {a: ['x$']}\nstages: [{name: s, command: echo, overrides: ['k=${a}{b}']}]\n",
                                   "stages[0].overrides: a value ending in '$' runs into '{' and forms ${b}"),
    "variables in a cycle": ("name: t\nvars: {p: '${q}', q: 'x${p}'}\naxes: {a: [1]}\n"
                             "stages: [{name: s, command: 'echo ${p}'}]\n",
                             "stages[0].command: variables refer to each other in a cycle: ${p} -> ${q} -> ${p}"),
    "variables that repeat each other": (
        "name: t\nvars: {" + ", ".join(f"v{i}: '" + f"${{v{i + 1}}}" * 10 + "'" for i in range(8)) + ", v8: x}\n"
        "axes: {a: [1]}\nstages: [{name: s, command: 'echo ${v0}'}]\n",
        "renders to 10,000,000 characters (more than 1,000,000"),
    "equal values written differently": ("name: t\naxes: {a: [1, true]}\n" + STAGE,
                                         "axes.a: values 1 and True are equal to YAML"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_is_refused_naming_file_and_key_and_writes_nothing(sweep, capsys, case):
    body, message = CASES[case]
    err = add_bad(sweep, body, capsys)
    assert message in err, err


def test_a_raw_variable_forced_by_var_is_checked_too(sweep, capsys):
    body = ("name: t\nraw: [b]\nvars: {b: 'x=1 y=2'}\naxes: {a: [1]}\n"
            "stages: [{name: s, command: 'echo ${b} > ${run_dir}/out'}]\n")
    err = add_bad(sweep, body, capsys, "--var", "b=x=1 ; touch /tmp/pwned")
    assert "${b} = 'x=1 ; touch /tmp/pwned' is raw shell text" in err


LAUGHS = "".join(f"x-{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))


@pytest.mark.parametrize("key", ["description", "max_attempts", "name", "snapshot"])
def test_a_billion_laughs_is_refused_fast(sweep, capsys, key):
    """9^9 aliased nodes: refused while composing, before anything repr()s the value."""
    body = "x-0: &l0 lol\n" + LAUGHS + f"{key}: *l9\naxes: {{a: [1]}}\n" + STAGE
    t0 = time.perf_counter()
    err = add_bad(sweep, body, capsys)
    assert time.perf_counter() - t0 < 5
    assert "malformed YAML" in err and "aliases expand this document to more than 100,000 nodes" in err, err


def test_a_var_with_a_nul_is_refused(sweep, capsys):
    err = add_bad(sweep, GOOD.replace("name: t", "name: t\nvars: {v: x}"), capsys, "--var", "v=a\0b")
    assert "--var v: holds a NUL byte" in err


def test_yaml_reads_scalars_as_yaml_1_2(tmp_path):
    """Only true/false are booleans (Norway stays NO), 10:00 is text, 0o17 is octal, 017 decimal."""
    path = tmp_path / "x.yaml"
    path.write_text("axes: {country: [NO, SE, yes, on], t: [10:00, 2024-01-01], n: [0o17, 017, 1e3, true]}\n"
                    "stages: {s: 'echo ${country} ${t} ${n}'}\n")
    assert [a.values for a in load_spec(path).axes] == [["NO", "SE", "yes", "on"], ["10:00", "2024-01-01"],
                                                        [15, 17, 1000.0, True]]


def test_max_jobs_is_the_limit_and_can_be_raised(sweep, capsys):
    err = add_bad(sweep, GOOD.replace("seed: {count: 3}", "seed: {count: 30}"), capsys, "--max-jobs", "50")
    assert "make 60 grid points and up to 60 jobs, more than the limit of 50 jobs" in err
    assert main(["sweep", "add", "sweeps/bad.yaml", "--max-jobs", "60"]) == 0
    assert "60 jobs: 54 new, 6 existing" in capsys.readouterr().out


def test_dry_run_refuses_the_same(sweep, capsys):
    (sweep / "sweeps" / "bad.yaml").write_text(CASES["10^7-point grid"][0])
    assert main(["sweep", "add", "--dry-run", "sweeps/bad.yaml"]) == 2
    assert "10,000,000 grid points" in capsys.readouterr().err


def test_the_cli_process_exits_2_without_a_traceback(sweep):
    (sweep / "sweeps" / "bad.yaml").write_bytes(CASES["non-UTF-8"][0])
    before = snapshot(sweep / "experiments" / "t")
    r = subprocess.run([sys.executable, "-m", "near", "sweep", "add", "sweeps/bad.yaml"], cwd=sweep,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("near: error: sweeps/bad.yaml: not UTF-8 text")
    assert "Traceback" not in r.stderr and snapshot(sweep / "experiments" / "t") == before


def test_seed_count_limit_follows_max_jobs(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("axes: {seed: {count: 5000}}\nstages: {s: 'echo ${seed}'}\n")
    with pytest.raises(SpecError, match="axes.seed.count: 5,000 values is more than the limit of 1,000 jobs"):
        load_spec(path, max_jobs=1000)
    assert len(expand(load_spec(path, max_jobs=5000), max_jobs=5000).jobs) == 5000


def _fuzz_module():
    spec_ = importlib.util.spec_from_file_location("fuzz_spec", REPO / "benchmarks" / "fuzz_spec.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    return mod


def test_spec_loader_fuzz_raises_only_near_errors():
    """A few hundred of benchmarks/fuzz_spec.py's cases (the script runs 10,000)."""
    outcomes = _fuzz_module().run(300, rng_seed=1)
    assert sum(outcomes.values()) >= 300 and set(outcomes) <= {"ok", "SpecError"}, outcomes
    assert outcomes.get("ok", 0) > 10  # the cases reach expansion, not only the parser


def test_extra_sbatch_options_near_does_not_write_are_kept():
    from near.sweep.spec import spec_from_bytes

    text = ("name: t\naxes: {a: [1]}\nresources: {slurm: {partition: gpu, constraint: a100, qos: high, "
            "comment: x, mail-type: END, gres: 'gpu:1'}}\n" + STAGE)
    spec = spec_from_bytes(text.encode(), REPO / "sweeps" / "ok.yaml")
    assert spec.resources["slurm"] == {"partition": "gpu", "constraint": "a100", "qos": "high", "comment": "x",
                                       "mail-type": "END", "gres": "gpu:1"}
