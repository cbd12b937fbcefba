"""Fuzzing the spec loader: no input may end in anything but near's own errors.

    python benchmarks/fuzz_spec.py [--cases 10000] [--seed 0]

Each case is a spec file's bytes, drawn by hypothesis in three ways: a valid spec with its
subtrees replaced, dropped or added (arbitrary YAML values: nested lists and mappings, dates,
unicode and shell metacharacters, huge counts); a valid spec's text with bytes inserted, deleted
or flipped (broken YAML, invalid UTF-8); a valid spec with a YAML alias bomb, a recursive alias
or a NUL (or other control character) at a key; and arbitrary bytes. A case that runs past 5 s
counts as a hang. Every case is loaded, shrunk by a
``--var`` where it has variables, expanded (with a small job limit) and its commands read as
near's validator reads them. An exception that is not a NearError fails the run with the input
that caused it. Prints the number of cases LAST (the tests run a few hundred of the same cases).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE = {
    "name": "fuzz",
    "vars": {"iters": 10, "bundle": "a=1 b=2"},
    "raw": ["bundle"],
    "axes": {
        "algorithm": ["NEAR", "AMP"],
        "seed": {"count": 2, "base": 0},
        "motion": {"values": {"circle": {"vars": {"iters": 20}}, "figure8": ["++x=1"]}},
        "ablation": {"when": {"algorithm": "NEAR"}, "values": ["on", "off"]},
    },
    "exclude": [{"algorithm": "AMP", "motion": "figure8"}],
    "include": [{"algorithm": "AMP", "motion": "circle", "seed": [5, 6]}],
    "stages": [
        {"name": "ncsn", "when": {"algorithm": "NEAR"}, "command": "near train ncsn seed=${seed} run_dir=${run_dir}",
         "overrides": ["++n=${iters}"], "resources": {"cpus": 1, "time": "00:10:00", "slurm": {"qos": "x"}}},
        {"name": "rl", "needs": {"ncsn": {"stage": "ncsn", "with": {"ablation": "on"}}},
         "when": {"algorithm": "NEAR"}, "command": "near train rl m=${motion} ${bundle} ck=${ncsn.run_dir}/c.pth"},
        {"name": "rl", "when": {"algorithm": "AMP"}, "validate": False, "command": "echo '${motion}' \"${seed}\""},
    ],
}
KEYS = ["name", "vars", "raw", "axes", "zip", "include", "exclude", "stages", "resources", "max_attempts",
        "workdir", "description", "values", "when", "unless", "needs", "with", "stage", "command", "overrides",
        "count", "base", "validate", "cpus", "mem", "time", "slurm", "algorithm", "seed", "motion", "x-a", "*"]
WORDS = ["${seed}", "${motion}", "${iters}", "${bundle}", "${run_dir}", "${ncsn.run_dir}", "$${x}", "$(id)", "`id`",
         "a; b", "'", '"', "\\", "\n", "#", "NEAR", "AMP", "on", "2024-01-01", "10000000000", "-1", "~", "null"]

text = st.one_of(st.text(max_size=12), st.sampled_from(WORDS),
                 st.text(alphabet="$`'\"\\;&|<>(){}#*?~ \t\n!%=,.:_aZ09", max_size=12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2, max_value=10**12),
                    st.floats(), text, st.dates(), st.datetimes(), st.binary(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), scalars.filter(lambda v: not isinstance(v, bytes))),
                    inner, max_size=4)), max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_spec(draw) -> bytes:
    """BASE with a few subtrees replaced, dropped or given an extra key, as YAML bytes."""
    import copy

    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if not path:
            if action == "replace":
                doc = draw(values)
            continue
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "drop":
                del parent[path[-1]]
            elif isinstance(parent[path[-1]], dict):
                parent[path[-1]][draw(st.sampled_from(KEYS))] = draw(values)
            elif isinstance(parent[path[-1]], list):
                parent[path[-1]].append(draw(values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation reshaped the document
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False).encode()


@st.composite
def edited_text(draw) -> bytes:
    """BASE's YAML text with bytes inserted, deleted or replaced."""
    raw = bytearray(yaml.safe_dump(BASE, sort_keys=False, default_flow_style=draw(st.booleans())).encode())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup-line"]))
        if op == "insert":
            raw[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=4),
                                        st.sampled_from([b"\n", b":", b"- ", b"{", b"[", b"&a", b"*a", b"'", b"\xff"])))
        elif op == "delete":
            del raw[at:at + draw(st.integers(1, 8))]
        elif op == "replace" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        else:
            lines = bytes(raw).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            raw = bytearray(b"\n".join(lines))
    return bytes(raw)


@st.composite
def shaped_spec(draw) -> bytes:
    """A spec of the right shape whose values, variables and commands are arbitrary text."""
    import shlex

    word = st.one_of(st.sampled_from(WORDS), text)
    words = st.lists(st.one_of(word, word.map(shlex.quote)), max_size=6).map(" ".join)
    axis_values = st.lists(st.one_of(text, st.integers(), st.booleans(), st.none(), st.floats()),
                           min_size=1, max_size=4)
    doc = {
        "name": "shaped",
        "vars": {"iters": draw(st.one_of(text, st.integers())), "bundle": draw(words)},
        "raw": draw(st.sampled_from([[], ["bundle"], ["motion"], ["bundle", "iters"]])),
        "axes": {"motion": (motions := draw(axis_values)), "seed": (seeds := draw(axis_values))},
        "stages": [{"name": "s", "command": "run " + draw(words),
                    "overrides": draw(st.lists(text.map(lambda t: "k=" + t), max_size=2))}],
    }
    if draw(st.booleans()):
        doc["stages"][0]["when"] = {"motion": draw(st.one_of(axis_values, st.sampled_from(motions)))}
    if draw(st.booleans()):
        doc["exclude"] = [{"seed": draw(st.one_of(axis_values, st.sampled_from(seeds)))}]
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()


ALIAS_KEYS = [("description",), ("max_attempts",), ("name",), ("snapshot",), ("workdir",), ("vars", "iters"),
              ("axes", "seed"), ("axes", "motion", "values"), ("stages", 0, "command"), ("stages", 0, "overrides"),
              ("include",), ("resources",)]


@st.composite
def aliased_spec(draw) -> bytes:
    """BASE with a YAML alias bomb (width^depth nodes), a recursive alias or a plain alias at one key."""
    width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 12))
    lines = ["x-0: &l0 " + draw(st.sampled_from(["lol", "'${seed}'", "1", "[a, b]", "{k: v}"]))]
    for i in range(1, depth + 1):
        lines.append(f"x-{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    if draw(st.booleans()):
        lines.append("x-r: &r [a, *r]" if draw(st.booleans()) else "x-r: &r {k: *r}")
    alias = draw(st.sampled_from([f"*l{depth}", f"*l{draw(st.integers(0, depth))}", "*r" if "x-r" in lines[-1] else "*l0"]))
    doc = yaml.safe_dump(BASE, sort_keys=False).splitlines()
    path = draw(st.sampled_from(ALIAS_KEYS))
    # put the alias at the key: rewrite the document through a marker value, then swap in the alias text
    import copy

    tree = copy.deepcopy(BASE)
    node = tree
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = "ALIAS_MARKER"
    doc = yaml.safe_dump(tree, sort_keys=False).replace("ALIAS_MARKER", alias)
    return ("\n".join(lines) + "\n" + doc).encode()


@st.composite
def nul_spec(draw) -> bytes:
    """BASE with a NUL (or another control character) inside a value, a key, a command or a --var."""
    import copy

    tree = copy.deepcopy(BASE)
    path = draw(st.sampled_from(_paths(tree)[1:]))
    bad = draw(st.sampled_from(["\0", "a\0b", "k=a\0k=b", "\x01", "\x7f", "\ud800"]))
    node = tree
    for k in path[:-1]:
        node = node[k]
    if draw(st.booleans()) and isinstance(node, dict):
        node[str(path[-1]) + bad] = node.pop(path[-1])
    else:
        old = node[path[-1]]
        node[path[-1]] = (old + bad) if isinstance(old, str) else bad
    try:
        return yaml.safe_dump(tree, sort_keys=False, allow_unicode=False).encode()
    except (yaml.YAMLError, UnicodeEncodeError):
        return yaml.safe_dump(BASE, sort_keys=False).encode().replace(b"NEAR", b'"NE\\0AR"', 1)


cases = st.one_of(mutated_spec(), shaped_spec(), edited_text(), st.binary(max_size=64), aliased_spec(), nul_spec())
CASE_LIMIT = 5.0  # seconds one case may take before it counts as a hang


class Hang(Exception):
    """A case ran past CASE_LIMIT."""


def _alarm(signum, frame):
    raise Hang()


def check_case(raw: bytes, workdir: Path) -> str:
    """Load, shrink, expand and read one spec; returns how it ended ('ok' or the error's class).
    Raises whatever near raised that is not a NearError."""
    from near.errors import NearError
    from near.sweep.expand import expand
    from near.sweep.spec import spec_from_bytes, with_settings
    from near.sweep.validate import trainer_call

    import signal

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT)
    try:
        spec = spec_from_bytes(raw, workdir / "sweeps" / "fuzz.yaml", max_jobs=2000)
        if spec.vars:
            spec = with_settings(spec, set_vars={next(iter(spec.vars)): "1; touch x"})
        for job in expand(spec, max_jobs=2000).jobs:
            trainer_call(job.command)
    except NearError as err:
        return type(err).__name__
    except Hang:
        return "hang"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return "ok"


def run(n: int, rng_seed: int = 0) -> dict[str, int]:
    """Run ``n`` cases; returns how many ended which way. An unexpected exception propagates (from
    hypothesis, with the input that caused it)."""
    outcomes: dict[str, int] = {}
    workdir = Path(tempfile.mkdtemp(prefix="near-fuzz-"))

    @seed(rng_seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(cases)
    def one(raw: bytes) -> None:
        how = check_case(raw, workdir)
        outcomes[how] = outcomes.get(how, 0) + 1

    one()
    return outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    outcomes = run(args.cases, args.seed)
    total = sum(outcomes.values())
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"FIGURE spec loader fuzz: {total} cases, 0 exceptions other than near's own errors, "
          f"{outcomes.get('hang', 0)} hangs (over {CASE_LIMIT:g} s) ({outcomes.get('ok', 0)} loaded and expanded)")


if __name__ == "__main__":
    main()
