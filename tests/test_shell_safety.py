"""Values never run as shell code: every axis value, variable and --var value reaches the command
as exactly one argument, byte for byte, wherever its placeholder stands; only variables the spec
names in ``raw:`` are spliced as shell words, and those must be words only."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from near.errors import ConfigError, SpecError
from near.sweep.expand import expand
from near.jobtable import JobTable, resolve_command
from near.sweep.spec import load_spec, spec_from_bytes, with_settings
from near.sweep.validate import trainer_call, validate_jobs

REPO = Path(__file__).resolve().parents[1]

# every quoting context a placeholder can stand in: bare, glued to text, '...', "...", $'...',
# "$(...)", `...` (their output gets a '.' so that trailing newlines survive), and a raw bundle of
# words around values
PROBE = ("printf '%s\\0' ${a} x${a}y '${a}' \"${a}\" $'-${a}-' \"$(printf %s. \"${a}\")\" \"`printf %s. ${a}`\" "
         "${v} \"<${v}>\" ${w} ${bundle}")


def expected(a: str, v: str, w: str) -> list[str]:
    return [a, f"x{a}y", a, a, f"-{a}-", f"{a}.", f"{a}.", v, f"<{v}>", w, "k=1", v, "two words"]


def run_probe(command: str, tmp: Path) -> list[bytes]:
    r = subprocess.run(["bash", "-c", command], capture_output=True, cwd=tmp, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split(b"\0")[:-1]


def write_spec(tmp: Path, doc: dict) -> Path:
    path = tmp / "sweeps" / "probe.yaml"
    path.parent.mkdir(exist_ok=True)
    # non-ASCII as escapes: PyYAML writes a raw NEL or U+2028 into a quoted scalar and then reads
    # it back as a line break
    path.write_text(yaml.safe_dump(doc, allow_unicode=False, sort_keys=False))
    return path


values = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=16),
    st.text(alphabet="$`'\"\\;&|<>(){}[]#*?~! \t\n%=,.:^-", max_size=16),
    st.sampled_from(["$(touch pwned)", "`touch pwned`", "a; touch pwned", "${run_dir}", "$${x}", "x$", "'", "",
                     "--help", "-n", "\\", "${a}", "!!", "*"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(axis=st.lists(values, min_size=1, max_size=3, unique=True), var=values, forced=values)
def test_each_value_reaches_the_command_as_one_argument_byte_for_byte(tmp_path, axis, var, forced):
    # a spec's variables are templates: ${ written as $${ is a literal ${
    doc = {"name": "probe", "raw": ["bundle"],
           "vars": {"v": var.replace("${", "$${"), "w": "default", "bundle": "k=1 ${v} 'two words'"},
           "axes": {"a": axis}, "stages": [{"name": "probe", "command": PROBE}]}
    spec = load_spec(write_spec(tmp_path, doc))
    assert spec.axes[0].values == axis  # YAML kept the text as it was
    spec = with_settings(spec, set_vars={"w": forced})
    jobs = expand(spec).jobs
    assert len(jobs) == len(axis)
    for job in jobs:
        command = resolve_command(job.command, job.job_id, tmp_path / "exp", job.deps)
        want = [x.encode() for x in expected(job.params["a"], var, forced)]
        assert run_probe(command, tmp_path) == want, command
    assert not list(tmp_path.glob("pwned"))


def test_the_reported_injections_run_nothing_through_the_local_executor(tmp_path):
    """The spec and --var of the report, run for real by `near sweep run`."""
    marks = [tmp_path / n for n in ("x", "y", "z", "v")]
    doc = {"name": "t", "vars": {"num_envs": 4},
           "axes": {"tag": [f"a; touch {marks[0]}", f"$(touch {marks[1]})", f"`touch {marks[2]}`",
                            "it's \"quoted\"", "two\nlines"]},
           "stages": [{"name": "echo", "command": "printf '%s\\0' tag=${tag} num_envs=${num_envs} > ${run_dir}/args"}]}
    write_spec(tmp_path, doc)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    add = subprocess.run([sys.executable, "-m", "near", "sweep", "add", "sweeps/probe.yaml", "--var",
                          f"num_envs=16 ; touch {marks[3]} ;"], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=60)
    assert add.returncode == 0, add.stderr
    run = subprocess.run([sys.executable, "-m", "near", "sweep", "run", "experiments/t", "--workers", "2"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    table = JobTable.open(tmp_path / "experiments" / "t")
    jobs = table.jobs()
    assert len(jobs) == 5 and {j.state for j in jobs} == {"done"}
    for j in jobs:
        args = (Path(j.run_dir) / "args").read_bytes().split(b"\0")[:-1]
        assert args == [f"tag={j.params['tag']}".encode(), f"num_envs=16 ; touch {marks[3]} ;".encode()]
    assert not [m for m in marks if m.exists()]


def spec_of(tmp: Path, text: str):
    return spec_from_bytes(text.encode(), tmp / "sweeps" / "x.yaml")


def test_raw_variables_are_spliced_as_words_and_plain_ones_quoted(tmp_path):
    s = spec_of(tmp_path, """
raw: [extra]
vars: {extra: "++a=1 '++b=[x, y]'", opts: "++a=1 ++c=2"}
axes: {seed: [1]}
stages: {s: "near train rl seed=${seed} ${extra} opts=${opts}"}
""")
    command = expand(s).jobs[0].command
    assert command == "near train rl seed=1 ++a=1 '++b=[x, y]' opts='++a=1 ++c=2'"
    assert shlex.split(command)[4:] == ["++a=1", "++b=[x, y]", "opts=++a=1 ++c=2"]


def test_plain_values_keep_their_commands_and_ids(tmp_path):
    """Values that need no quoting read as before: the shipped paper grids keep their job ids."""
    s = spec_of(tmp_path, "axes: {m: [walk, a-b.c/d:e@f%g+h=i]}\nstages: {s: 'run --m=${m} ${m}'}\n")
    assert [j.command for j in expand(s).jobs] == ["run --m=walk walk", "run --m=a-b.c/d:e@f%g+h=i a-b.c/d:e@f%g+h=i"]
    abl = expand(load_spec(REPO / "sweeps" / "paper_ablations.yaml"))
    ncsn = next(j for j in abl.jobs if j.stage == "ncsn")
    # the ncsnv2 bundle is a raw variable: four overrides, not one quoted word
    assert " ++train.params.config.near_config.model.ncsnv2=True ++train.params.config.near_config.model" \
           ".sigma_begin=20 " in ncsn.command and "'" not in ncsn.command


def test_a_dollar_brace_in_a_value_stays_literal_and_the_escape_still_works(tmp_path):
    s = spec_of(tmp_path, "axes: {v: ['${job_id}']}\nstages: {s: 'printf %s\\\\0 ${v} $${HOME} ''$(literal)'''}\n")
    job = expand(s).jobs[0]
    out = run_probe(resolve_command(job.command, job.job_id, tmp_path, {}), tmp_path)
    assert out == [b"${job_id}", os.environ["HOME"].encode(), b"$(literal)"]


def test_validation_reads_the_command_as_the_shell_splits_it():
    assert trainer_call("near train rl a=1;touch x b=2") == ("rl", ["a=1"])
    assert trainer_call("near train rl 'a=1;touch x' b=2") == ("rl", ["a=1;touch x", "b=2"])
    assert trainer_call("near train rl a=1&&b=2") == ("rl", ["a=1"])
    assert trainer_call("near train rl a=1 2>&1 | tee log") == ("rl", ["a=1"])


def test_a_var_with_shell_code_cannot_cut_the_trainer_overrides(tmp_path):
    """The report's `--var 'num_envs=16 ; touch /tmp/v ;'` on the demo sweep: the value is one
    override, which hydra refuses, instead of a `;` that silently dropped the overrides after it."""
    spec = with_settings(load_spec(REPO / "sweeps" / "demo.yaml"), set_vars={"num_envs": "16 ; touch /tmp/v ;"})
    jobs = expand(spec).jobs
    kind, overrides = trainer_call(next(j for j in jobs if j.stage == "rl" and j.deps).command)
    assert "num_envs=16 ; touch /tmp/v ;" in overrides and "max_iterations=150" in overrides
    assert any(o.startswith("++train.params.config.near_config.inference.eb_model_checkpoint=") for o in overrides)
    with pytest.raises(ConfigError, match=r"sweeps/demo.yaml: job \w+ \(.*\).*num_envs"):
        validate_jobs(jobs, "sweeps/demo.yaml")


@pytest.mark.parametrize("command", ["echo ${a}\\", "echo \"${a}", "echo $(date ${a}"])
def test_commands_the_shell_cannot_read_are_refused(tmp_path, command):
    with pytest.raises(SpecError, match="stages.s.command: the shell cannot read this command"):
        spec_of(tmp_path, yaml.safe_dump({"axes": {"a": [1]}, "stages": {"s": command}}))


# bash's own parameter expansions around values: X is unset, Y=abc; each word's expected text
NESTED = [
    ('"${X:-${a}}"', "{a}"), ("${X:-${a}}", "{a}"), ('"${Y:+${a}}"', "{a}"), ('"${X:+${a}}"', ""),
    ('"${Y/b/${a}}"', "a{a}c"), ('"${Y//b/${a}}"', "a{a}c"), ('"${Y/#a/${a}}"', "{a}bc"),
    ('"${Y:-"${a}"}"', "abc"), ('"${X:-"<${a}>"}"', "<{a}>"), ('"${Z:=${a}}"', "{a}"),
    ('"${#Y}:${a}"', "3:{a}"), ('"${X:-${Y:+${a}}}"', "{a}"), ('"`printf %s. ${X:-${a}}`"', "{a}."),
    ('"$(printf %s. "${X:-${a}}")"', "{a}."), ('"${X:-${Y/b/${a}}}"', "a{a}c"),
]
ARITH = ["echo $(( ${a} + 1 ))", "(( ${a} > 0 ))", "[[ ${a} -eq 0 ]]", "[[ 1 -lt ${a} ]]", "let y=${a}",
         "x[${a}]=1", "echo ${Y[${a}]}", "echo ${Y:${a}}", "echo ${Y:0:${a}}", "declare -i n=${a}",
         "declare -i n; n=${a}", "echo $[${a}]", "for ((i=0; i<${a}; i++)); do :; done", "echo ${#${a}}"]


def nested_probe(words: list[str]) -> str:
    return "Y=abc; printf '%s\\0' " + " ".join(words)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values, picks=st.lists(st.sampled_from(range(len(NESTED))), min_size=1, max_size=5))
def test_values_in_nested_parameter_expansions_are_their_bytes(tmp_path, value, picks):
    words = [NESTED[i] for i in picks]
    doc = {"name": "probe", "axes": {"a": [value]},
           "stages": [{"name": "probe", "command": nested_probe([w for w, _ in words])}]}
    job = expand(load_spec(write_spec(tmp_path, doc))).jobs[0]
    out = run_probe(resolve_command(job.command, job.job_id, tmp_path / "exp", job.deps), tmp_path)
    assert out == [want.replace("{a}", value).encode() for _, want in words], job.command
    assert not list(tmp_path.glob("pwned"))


@pytest.mark.parametrize("command", ARITH)
def test_a_value_where_bash_evaluates_arithmetic_is_refused(tmp_path, command):
    doc = {"name": "probe", "axes": {"a": ["a[$(touch pwned)]"]}, "stages": [{"name": "s", "command": command}]}
    with pytest.raises(SpecError, match=r"stages\[0\]\.command: \$\{a\} stands in .*bash would evaluate"):
        expand(load_spec(write_spec(tmp_path, doc)))
    assert not list(tmp_path.glob("pwned"))


ROOTS = ["my exps", "r$(touch {mark})", "q'uo\"te`touch {mark}`", "d$${x} ${HOME} \\n"]


def test_paths_reach_the_command_byte_for_byte_through_near_sweep_run(tmp_path):
    """Experiment roots with blanks, quotes and command substitutions, nested expansions around
    values and paths, all through `near sweep add --root` and `near sweep run`."""
    mark = tmp_path / "marker"
    nasty = ["$(touch {mark})", "a&b \\ 'c\"", "*"]
    words = [w for w, _ in NESTED[:12]] + ['${run_dir}', '"${run_dir}"', "'${run_dir}'", '"${X:-${run_dir}}"',
                                          '"${Y/b/${exp_dir}}"', "${exp_dir}"]
    doc = {"name": "t", "axes": {"a": [v.replace("{mark}", str(mark)) for v in nasty]},
           "stages": [{"name": "s", "command": nested_probe(words) + " > ${run_dir}/args"}]}
    write_spec(tmp_path, doc)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for root in ROOTS:
        root = str(tmp_path / "roots" / root.replace("{mark}", str(mark)))
        Path(root).mkdir(parents=True)
        add = subprocess.run([sys.executable, "-m", "near", "sweep", "add", "sweeps/probe.yaml", "--root", root],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
        assert add.returncode == 0, add.stderr
        exp = os.path.join(root, "t")
        run = subprocess.run([sys.executable, "-m", "near", "sweep", "run", exp, "--workers", "2"],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        jobs = JobTable.open(exp).jobs()
        assert len(jobs) == 3 and {j.state for j in jobs} == {"done"}
        for j in jobs:
            run_dir = os.path.join(exp, "runs", j.job_id)
            a = j.params["a"]
            want = [w.replace("{a}", a) for _, w in NESTED[:12]] + [run_dir] * 4 + [f"a{exp}c", exp]
            assert (Path(run_dir) / "args").read_bytes().split(b"\0")[:-1] == [w.encode() for w in want]
    assert not mark.exists()


def test_a_run_dir_linked_out_of_the_experiment_is_refused(tmp_path):
    doc = {"name": "t", "axes": {"a": [1]}, "stages": [{"name": "s", "command": "echo ${a} > ${run_dir}/out"}]}
    write_spec(tmp_path, doc)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    add = subprocess.run([sys.executable, "-m", "near", "sweep", "add", "sweeps/probe.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=60)
    assert add.returncode == 0, add.stderr
    exp = tmp_path / "experiments" / "t"
    job = JobTable.open(exp).jobs()[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (exp / "runs").mkdir(exist_ok=True)
    (exp / "runs" / job.job_id).symlink_to(outside, target_is_directory=True)
    with pytest.raises(Exception, match=r"leads to .*outside, out of the experiment"):
        job.command
    assert not list(outside.iterdir())
    # the supervisor's own check (a SLURM node gets a task, not the table): the same rule
    from near.executors import runner

    task = runner.Task(job.job_id, "t", "s", "echo x", job.run_dir, str(tmp_path), {}, {})
    with pytest.raises(OSError, match=rf"run dir .*{job.job_id} is a link to .*outside"):
        runner.prepare(task)
    assert not list(outside.iterdir())
    (exp / "runs" / job.job_id).unlink()
    assert runner.prepare(task) == Path(job.run_dir) and (Path(job.run_dir) / "command.sh").is_file()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(axis=st.lists(values, min_size=1, max_size=3, unique=True), var=values)
def test_validation_reads_the_arguments_bash_passes(tmp_path, axis, var):
    """The trainer call parsed from the template at add time holds exactly the arguments bash
    gives the trainer: the same command with `near train rl` swapped for printf prints them."""
    template = "near train rl k=${a} 'q=${a}' \"r=${v}\" ${bundle} x${a}y=1 s=${v}\\ t"
    doc = {"name": "probe", "raw": ["bundle"],
           "vars": {"v": var.replace("${", "$${"), "bundle": "k=1 ${v} 'two words' run_dir=${run_dir}"},
           "axes": {"a": axis}, "stages": [{"name": "probe", "command": template,
                                          "overrides": ["o=${a}"], "validate": False}]}
    for job in expand(load_spec(write_spec(tmp_path, doc))).jobs:
        kind, words = job.call
        command = resolve_command(job.command, job.job_id, "/tmp/near-validate", job.deps)
        printed = run_probe(command.replace("near train rl", "printf '%s\\0'", 1), tmp_path)
        run_dir = f"/tmp/near-validate/runs/{job.job_id}".encode()
        assert kind == "rl" and [w.encode() for w in words] == [p.replace(run_dir, b"/tmp/near-validate/run_dir")
                                                               for p in printed]


def test_a_command_of_several_lines_keeps_them(tmp_path):
    """A first line that is a comment stays a comment line: the commands after it run."""
    doc = {"name": "t", "axes": {"a": ["x  y"]},
           "stages": [{"name": "s", "command": "# writes the value\nprintf '%s\\0'   ${a} 'p  q' > out\n  # done"}]}
    job = expand(load_spec(write_spec(tmp_path, doc))).jobs[0]
    assert job.command == "# writes the value\nprintf '%s\\0' 'x  y' 'p  q' > out\n# done"
    run_probe(resolve_command(job.command, job.job_id, tmp_path / "exp", job.deps), tmp_path)
    assert (tmp_path / "out").read_bytes() == b"x  y\0p  q\0"


# trainer arguments as a spec's own command may write them: bash changes some before the trainer
# reads them (brace expansion splits NEAR's unquoted checkpoint dicts into two overrides; $${X}
# is bash's ${X}, not a hydra interpolation), others it passes as written
OWN_WORDS = ["k={a.yaml:x/c.pth,b.yaml:y/c.pth}", "'k={a.yaml:x/c.pth,b.yaml:y/c.pth}'", "k=$${HOME}",
             "'k=$${HOME}'", "\"k=$${HOME}\"", "k=$HOME", "k=`echo 1`", "k=$(echo 1)", "k={1..3}", "k=\\{a,b}",
             "k=[a,b]", "k={a:1}", "'k=$x'", "k=$'a\\tb'", "k=${seed}{a,b}", "k=x$"]


@pytest.mark.parametrize("word", OWN_WORDS)
def test_a_validated_trainer_call_reads_what_bash_passes_or_is_refused(tmp_path, word):
    """Validation reads the trainer's arguments from the parsed template: a word of the command
    that bash expands (so validation would check other arguments than the trainer gets) is
    refused at load, naming the stage's command; every other word is read as bash passes it."""
    template = f"near train rl seed=${{seed}} {word}"
    doc = {"name": "probe", "axes": {"seed": [1]}, "stages": [{"name": "rl", "command": template}]}
    path = write_spec(tmp_path, doc)
    env_home = {**os.environ, "HOME": "/home/probe"}
    job_cmd = template.replace("${seed}", "1").replace("$${", "${").replace("near train rl", "printf '%s\\0'", 1)
    printed = subprocess.run(["bash", "-c", job_cmd], capture_output=True, cwd=tmp_path, env=env_home,
                             timeout=30).stdout.split(b"\0")[:-1]
    try:
        spec = load_spec(path)
    except SpecError as err:
        assert "stages[0].command: bash changes the trainer argument" in str(err)
        assert printed != [b"seed=1", shlex.split(word.replace("$${", "${"))[0].encode()], \
            f"{word} was refused, but bash passes it as written"
        return
    kind, words = expand(spec).jobs[0].call
    assert [w.encode() for w in words] == printed, f"validation reads {words}, bash passes {printed}"


def test_a_raw_bundle_that_bash_expands_is_refused_where_it_is_validated(tmp_path):
    """A raw bundle is split as written for validation: a brace expansion or a $ expansion in it
    would give the trainer other arguments; outside a validated trainer call it is the spec's
    own shell code."""
    bundle = "num_envs=8 '++x={a:1,b:2}' ++y={a:1,b:2}"
    text = ("raw: [bundle]\nvars: {bundle: \"%s\"}\naxes: {seed: [1]}\n"
            "stages: [{name: rl, command: 'near train rl seed=${seed} ${bundle}'%s}]\n")
    with pytest.raises(SpecError, match=r"stages\[0\]\.command: \$\{bundle\} = .* holds a brace expansion "
                                        r"\('\{a:1,b:2\}'.* \(at grid point seed=1\)"):
        expand(spec_of(tmp_path, text % (bundle, "")))
    with pytest.raises(SpecError, match=r"holds a parameter expansion"):
        expand(spec_of(tmp_path, text % ("k=$${HOME}", "")))
    quoted = expand(spec_of(tmp_path, text % ("num_envs=8 '++x={a:1,b:2}'", ""))).jobs[0]
    assert quoted.call == ("rl", ("seed=1", "num_envs=8", "++x={a:1,b:2}"))
    unchecked = expand(spec_of(tmp_path, text % (bundle, ", validate: false"))).jobs[0]
    assert unchecked.command == f"near train rl seed=1 {bundle}"
    other = spec_of(tmp_path, text.replace("near train rl", "echo") % (bundle, ""))
    assert expand(other).jobs[0].command == f"echo seed=1 {bundle}"
