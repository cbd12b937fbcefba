"""`near report`: specs, figures, tables and the command, on small real experiments."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from near.errors import SpecError
from near.report import figures, spec as specmod, stats
from near.report.pipeline import Report
from _report_helpers import make_experiment, write_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp") / "demo"
    jobs = make_experiment(exp, algorithms=("NEAR", "AMP", "PPO"), motions=("circle", "figure8"), seeds=(1, 2, 3))
    return exp, jobs


def test_shipped_specs_validate():
    for path in sorted((REPO / "plotting").glob("*.yaml")):
        spec = specmod.load(path)
        assert spec.tags, path


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: x\nfigures:\n  - kind: curves\n    hue2: algorithm\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: unknown key 'figures\[0\]\.hue2'"):
        specmod.load(bad)
    bad.write_text("tags:\n  r: {labl: R}\n")
    with pytest.raises(SpecError, match=r"unknown key 'tags\.r\.labl'"):
        specmod.load(bad)
    bad.write_text("smoothing: 1.5\n")
    with pytest.raises(SpecError, match="smoothing"):
        specmod.load(bad)
    bad.write_text("ci: {level: high}\n")
    with pytest.raises(SpecError, match=r"'ci\.level' must be float"):
        specmod.load(bad)


def test_palette_is_fixed_per_algorithm():
    assert figures.color_for("NEAR") == figures.color_for("NEAR") != figures.color_for("AMP")
    assert figures.color_for("MyNewAlgo") == figures.color_for("MyNewAlgo")
    assert figures.color_for("NEAR", {"NEAR": "#123456"}) == "#123456"


def test_demo_spec_report_writes_figures_and_tables(demo, tmp_path):
    exp, jobs = demo
    out = tmp_path / "figs"
    rep = Report(exp, REPO / "plotting" / "demo.yaml", out, workers=1, jobs=jobs, log=lambda m: None)
    written = rep.run()
    names = sorted(p.name for p in written)
    for stem in ("comparison_dtw_error_step", "comparison_sparc_step", "own_reward_rewards_step"):
        assert f"{stem}.pdf" in names and f"{stem}.png" in names
    for ext in ("md", "tex", "csv"):
        assert f"final_performance.{ext}" in names
    for p in written:
        assert p.stat().st_size > 200, p
    assert (out / "comparison_dtw_error_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "comparison_dtw_error_step.pdf").read_bytes()[:5] == b"%PDF-"
    # the table agrees with statistics computed directly from the event data
    csv = pd.read_csv(out / "final_performance.csv")
    row = csv[(csv.algorithm == "NEAR") & (csv.motion == "circle") & (csv.tag == "dtw_error/step")].iloc[0]
    ids = jobs[(jobs.algorithm == "NEAR") & (jobs.motion == "circle")].job_id
    data = rep.frame[(rep.frame.tag == "dtw_error/step") & rep.frame.run.isin(ids)]
    finals = stats.final_values(data, window=10)
    assert row["n"] == 3 and row["mean"] == pytest.approx(finals.mean())
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    md = (out / "final_performance.md").read_text()
    assert "| algorithm | motion | DTW pose error ↓ | SPARC smoothness → expert | runs |" in md
    assert f"{row['mean']:.2f} [" in md
    tex = (out / "final_performance.tex").read_text()
    assert r"\toprule" in tex and "NEAR" in tex


def test_default_spec_from_data_and_selection_errors(demo, tmp_path):
    exp, jobs = demo
    rep = Report(exp, None, tmp_path / "d", workers=1, jobs=jobs, log=lambda m: None)
    rep.load()
    from near.report.pipeline import default_group_by

    spec = specmod.default_spec(rep.data.tags(), default_group_by(rep.data, print))
    assert set(spec.tags) == {"rewards/step", "dtw_error/step", "sparc/step"}
    assert spec.group_by == ["algorithm", "motion"]
    bad = tmp_path / "s.yaml"
    bad.write_text("select: {colour: red}\ntags: [rewards/step]\n")
    with pytest.raises(SpecError, match=r"s\.yaml: key 'select\.colour' is not a column"):
        Report(exp, bad, tmp_path / "d", workers=1, jobs=jobs, log=lambda m: None).run()


def test_ablation_figure_and_expert_lines(tmp_path):
    exp = tmp_path / "paper_ablations"
    jobs = make_experiment(exp, algorithms=("NEAR",), motions=("circle",), seeds=(1, 2), n_steps=12,
                           ablations=("anneal", "sigma5"))
    spec = tmp_path / "abl.yaml"
    spec.write_text(
        "select: {algorithm: NEAR}\n"
        "tags:\n  dtw_error/step: {label: Pose error, expert: {circle: 1.5}}\n"
        "figures:\n  - {kind: ablation, name: abl, hue: ablation, facet: motion}\n"
        "tables:\n  - {name: t, by: [ablation, motion], window: 3}\n")
    rep = Report(exp, spec, tmp_path / "out", workers=1, jobs=jobs, log=lambda m: None)
    names = {p.name for p in rep.run()}
    assert {"abl_dtw_error_step.png", "abl_dtw_error_step.pdf", "t.csv"} <= names
    t = pd.read_csv(tmp_path / "out" / "t.csv")
    assert sorted(t.ablation) == ["anneal", "sigma5"] and (t.n == 2).all()


def _drawn(monkeypatch, panels, colours=None, **kw):
    """The matplotlib figure curves_figure builds (captured before it is saved and closed)."""
    captured = []
    monkeypatch.setattr(figures, "_save", lambda fig, out_base, formats, **kw: captured.append(fig) or [])
    figures.curves_figure(panels, Path("unused"), "T", "frames", "error",
                          colours or {"NEAR": "#d62728", "PPO": "#ff7f0e"}, **kw)
    return captured[0]


def test_curves_figure_draws_expert_line_and_end_labels(monkeypatch):
    grid = np.arange(10.0)
    def curve(end):
        c = np.linspace(2.0, end, 10)
        return stats.Curve(grid, c, c - 0.1, c + 0.1, np.full(10, 3), ["a", "b", "c"])
    panels = [{"title": "circle", "curves": {"NEAR": curve(0.25), "PPO": curve(1.75)}, "expert": 3.5}]
    fig = _drawn(monkeypatch, panels)
    ax = fig.axes[0]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [3.5, 3.5]
    lo, hi = ax.get_ylim()
    assert lo < 3.5 < hi  # the expert line is above every curve but still inside the panel
    labels = {t.get_text(): t for t in ax.texts}
    assert set(labels) == {"0.25", "1.75", "expert\n3.5"}  # the expert line carries its value
    labels.pop("expert\n3.5")
    x0, x1 = ax.get_xlim()
    for text in labels.values():  # end labels sit right of the curves' last point, inside the axes
        x, y = text.get_position()
        assert 9.0 < x < x1 and lo < y < hi
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["NEAR", "PPO", "Expert"]

    bare = _drawn(monkeypatch, [dict(panels[0], expert=None)], annotate_end=False).axes[0]
    assert not bare.texts and all(ln.get_linestyle() != "--" for ln in bare.lines)


def test_legend_option_is_drawn_or_refused(monkeypatch):
    grid = np.arange(5.0)
    c = np.linspace(1.0, 2.0, 5)
    panels = [{"title": "walk", "curves": {"NEAR": stats.Curve(grid, c, c, c, np.full(5, 1), ["a"])}}]
    assert _drawn(monkeypatch, panels).legends
    assert not _drawn(monkeypatch, panels, legend=False).legends
    assert specmod.validate({"figures": [{"kind": "curves", "legend": "none"}]}).figures[0].legend == "none"
    with pytest.raises(SpecError, match=r"s\.yaml: key 'figures\[0\]\.legend' must be one of below, none"):
        specmod.validate({"figures": [{"kind": "curves", "legend": "right"}]}, "s.yaml")


def test_broken_run_does_not_stop_the_report(tmp_path):
    exp = tmp_path / "demo"
    jobs = make_experiment(exp, algorithms=("NEAR", "AMP"), motions=("circle",), seeds=(1, 2), n_steps=10)
    victim = next((exp / "runs" / "AMP-circle-2" / "summaries").glob("events*"))
    victim.write_bytes(victim.read_bytes()[:-9])  # cut off mid-record, like a killed writer
    empty = exp / "runs" / "NEAR-circle-2" / "summaries" / "events.out.tfevents.0.empty"
    empty.write_bytes(b"")
    seen = []
    rep = Report(exp, None, tmp_path / "out", workers=1, jobs=jobs, log=seen.append)
    written = rep.run()
    assert any(str(victim) in w and "mid-record" in w for w in rep.warnings)
    assert any(p.suffix == ".png" for p in written)
    assert any("wrote" in m for m in seen)


def test_real_job_table_and_cli(tmp_path):
    """End to end: a real jobs.db (near.jobtable), real event files, `near report` as a subprocess."""
    from near.jobtable import JobSpec, JobTable

    exp = tmp_path / "renamed_copy"  # the spec is found by the job table's sweep name, not the folder's
    table = JobTable.create(exp / "jobs.db", sweep="demo")
    specs = []
    for alg in ("NEAR", "PPO"):
        for seed in (1, 2):
            specs.append(JobSpec(job_id=f"{alg.lower()}{seed}", stage="rl", command="true",
                                 params={"algorithm": alg, "motion": "circle", "seed": seed}, sweep="demo"))
    table.add(specs, axes=["algorithm", "motion", "seed"])
    frame = table.to_frame()
    table.close()
    for _, job in frame.iterrows():
        steps = np.arange(8) * 10
        curve = (steps * (2 if job.algorithm == "NEAR" else 1)).tolist()
        tags = {"dtw_error/step": (steps.tolist(), curve)}
        if job.seed == 1:  # the other demo tags, in one run per algorithm only
            tags.update({"sparc/step": (steps.tolist(), curve), "rewards/step": (steps.tolist(), curve)})
        write_run(Path(job.run_dir), tags)
    out = tmp_path / "figs"
    cmd = [sys.executable, "-m", "near", "report", str(exp), "--spec", str(REPO / "plotting" / "demo.yaml"),
           "--out", str(out), "--workers", "1"]
    proc = subprocess.run(cmd + ["--check"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"wrote {out / 'comparison_dtw_error_step.png'}" in proc.stdout
    assert "check passed: 10/10 expected file(s)" in proc.stdout  # 3 figures x png/pdf + 3 table files + page
    assert "4 event file(s) in 4 job(s)" in proc.stdout
    csv = pd.read_csv(out / "final_performance.csv")
    csv = csv[csv.tag == "dtw_error/step"]
    assert sorted(csv.algorithm) == ["NEAR", "PPO"]
    near_final = csv[csv.algorithm == "NEAR"]["mean"].iloc[0]
    assert near_final == pytest.approx(np.mean([140.0, 120.0, 100.0, 80.0, 60.0, 40.0, 20.0, 0.0]))
    # second run: nothing changed -> nothing redrawn
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "up to date" in proc.stdout and "wrote" not in proc.stdout
    # --force redraws, reading every point from the scalar cache
    proc = subprocess.run(cmd + ["--force"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "(0 read, 4 from cache)" in proc.stdout and "wrote" in proc.stdout
    # one run logs more: the report is stale again and decodes only that file
    write_run(Path(frame.run_dir.iloc[0]), {"dtw_error/step": ([100], [1.0])})
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "(1 read, 4 from cache)" in proc.stdout
    # without --spec: plotting/demo.yaml is picked because the table's sweep is "demo"
    proc = subprocess.run([sys.executable, "-m", "near", "report", str(exp), "--out", str(tmp_path / "auto")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and re.search(r"spec \S*plotting/demo\.yaml", proc.stdout), proc.stdout + proc.stderr
    assert (tmp_path / "auto" / "comparison_dtw_error_step.png").is_file()
    # --check fails when a promised figure cannot be drawn (a spec tag no run logged)
    strict = tmp_path / "strict.yaml"
    strict.write_text((REPO / "plotting" / "demo.yaml").read_text().replace(
        "  rewards/step: {label: Episode return (own reward), direction: higher, comparable: false}",
        "  rewards/step: {label: R}\n  never/logged: {label: N}")
        .replace("tags: [rewards/step]", "tags: [rewards/step, never/logged]"))
    proc = subprocess.run(cmd[:5] + ["--spec", str(strict), "--out", str(tmp_path / "strict"), "--check"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "missing or empty" in proc.stdout and "own_reward_never_logged.png" in proc.stdout
    assert "check FAILED" in proc.stdout, proc.stdout
    # a bad spec is a clean error (exit 2) naming the file
    bad = tmp_path / "bad.yaml"
    bad.write_text("tagz: []\n")
    proc = subprocess.run([sys.executable, "-m", "near", "report", str(exp), "--spec", str(bad)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "bad.yaml: unknown key 'tagz'" in proc.stderr


def test_report_all_pairs_every_sweep_with_its_specs(tmp_path):
    """`near report --all` (make figures): a sweep with a matching plotting/ spec, one without."""
    from near.jobtable import JobSpec, JobTable

    root = tmp_path / "experiments"
    for sweep in ("demo", "mystery"):
        with JobTable.create(root / sweep / "jobs.db", sweep=sweep) as table:
            table.add([JobSpec(job_id=f"{sweep}{s}", stage="rl", command="true", sweep=sweep,
                               params={"algorithm": "NEAR", "motion": "circle", "seed": s}) for s in (1, 2)],
                      axes=["algorithm", "motion", "seed"])
            for job in table.jobs():
                steps = list(range(0, 80, 10))
                write_run(Path(job.run_dir), {t: (steps, [float(s) for s in steps])
                                              for t in ("dtw_error/step", "sparc/step", "rewards/step")})
    proc = subprocess.run([sys.executable, "-m", "near", "report", "--all", "--root", str(root), "--workers", "1"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"== {root / 'demo'} (" in proc.stdout and "plotting/demo.yaml)" in proc.stdout
    assert (root / "demo" / "figures" / "comparison_dtw_error_step.png").stat().st_size > 0
    assert f"== {root / 'mystery'} (default spec)" in proc.stdout
    assert list((root / "mystery" / "figures").glob("*.png"))
    bad = subprocess.run([sys.executable, "-m", "near", "report", "--all", str(root / "demo")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "--all takes no EXP" in bad.stderr


def test_markdown_table_cells_keep_their_columns():
    """A run or tag name holding '|' or a newline (both legal in folder names and tags) stays one cell:
    otherwise every later cell of its row moves one column to the right, under another heading."""
    from near.report.tables import to_markdown

    table = pd.DataFrame({"algorithm": ["NEAR|v2", "AMP\nold"], "a|b": ["1.50", "3.50"], "runs": [1, 2]})
    lines = to_markdown(table).splitlines()
    assert lines[0] == r"| algorithm | a\|b | runs |"
    assert lines[2] == r"| NEAR\|v2 | 1.50 | 1 |" and lines[3] == "| AMP old | 3.50 | 2 |"
    assert all(len(line.replace("\\|", "").split("|")) == 5 for line in lines)


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path, monkeypatch):
    """'$' in a run or tag name is text, not matplotlib's math: parsed as math, '$\\frac{' stops the
    report with a traceback and 'A$x$MP' is drawn as 'A' + italic x + 'MP'."""
    root = tmp_path / "runs"
    write_run(root / "NE$\\frac{AR_walk_1", {"rewards/step": ([0, 1], [1.0, 2.0]), "x$^$/y": ([0, 1], [1.0, 2.0])})
    write_run(root / "A$x$MP_walk_1", {"rewards/step": ([0, 1], [3.0, 4.0]), "x$^$/y": ([0, 1], [1.0, 2.0])})
    texts = []
    save = figures._save

    def capture(fig, out_base, formats, **kw):
        texts.extend(t for t in fig.findobj(lambda a: hasattr(a, "get_parse_math")) if t.get_text())
        return save(fig, out_base, formats, **kw)

    monkeypatch.setattr(figures, "_save", capture)
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern="{algorithm}_{motion}_{seed}")
    written = rep.run()
    assert sum(p.suffix == ".png" for p in written) == 2
    shown = {t.get_text() for t in texts}
    assert {"NE$\\frac{AR", "A$x$MP"} <= shown
    assert not any(t.get_parse_math() for t in texts if "$" in t.get_text())


def test_latex_cells_spell_angle_brackets_and_bars():
    """In LaTeX's default font encoding '<', '>' and '|' typed as text print as '¡', '¿' and '—': a name
    holding them is written with the text commands that print them."""
    from near.report.tables import to_latex

    tex = to_latex(pd.DataFrame({"algorithm": ["A<B>|C"], "runs": [1]}))
    assert r"A\textless{}B\textgreater{}\textbar{}C & 1 \\" in tex


def test_tags_in_epochs_and_seconds_get_their_own_x_label(tmp_path, monkeypatch):
    """rl-games (and near's trainer) log each reward three times: per frame (/step), per epoch (/iter) and
    per second of training (/time); a spec-wide 'Environment frames' fits only the first."""
    write_run(tmp_path / "runs" / "NEAR_walk_1", {t: ([0, 1, 2], [1.0, 2.0, 3.0]) for t in
                                                  ("rewards/step", "rewards/iter", "rewards/time")})
    spec = tmp_path / "spec.yaml"
    spec.write_text("x_label: Environment frames\n")
    labels = {}
    save = figures._save

    def capture(fig, out_base, formats, **kw):
        labels[out_base.name] = {ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()}
        return save(fig, out_base, formats, **kw)

    monkeypatch.setattr(figures, "_save", capture)
    rep = Report(tmp_path / "runs", spec, tmp_path / "out", workers=1, log=lambda m: None,
                 pattern="{algorithm}_{motion}_{seed}")
    rep.run()
    assert labels == {"curves_rewards_step": {"Environment frames"}, "curves_rewards_iter": {"Epoch"},
                      "curves_rewards_time": {"Training time (s)"}}
    assert "over training time (s)" in rep.captions["curves_rewards_time"]


def test_table_cell_over_fewer_runs_than_its_row_says_so(tmp_path):
    """A run that never logged a tag (it crashed before its first episode ended) leaves that tag's cell
    over fewer runs than the row's 'runs' column: the cell names its own count."""
    root = tmp_path / "runs"
    for seed, tags in ((1, {"loss": 1.0, "rewards/step": 1.0}), (2, {"loss": 1.0, "rewards/step": 3.0}),
                       (3, {"loss": 1.0})):
        write_run(root / f"NEAR_walk_{seed}", {t: ([0, 1, 2], [v] * 3) for t, v in tags.items()})
    Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern="{algorithm}_{motion}_{seed}").run()
    md = (tmp_path / "out" / "final.md").read_text()
    assert "| NEAR | 1.00 [1.00, 1.00] | 2.00 [1.00, 3.00] (2 runs) | 3 |" in md, md


def test_select_that_keeps_no_run_says_so(tmp_path):
    """A spec whose select matches none of the runs is a warning about the select (naming the values
    there are), not a claim that the event files hold no data."""
    write_run(tmp_path / "runs" / "NEAR_walk_1", {"loss": ([0, 1], [1.0, 0.5])})
    spec = tmp_path / "spec.yaml"
    spec.write_text("select: {algorithm: NAER}\nruns: {pattern: '{algorithm}_{motion}_{seed}'}\n")
    rep = Report(tmp_path / "runs", spec, tmp_path / "out", workers=1, log=lambda m: None)
    rep.run()
    assert any("select" in w and "NAER" in w and "1 run(s)" in w and "algorithm: NEAR" in w for w in rep.warnings), \
        rep.warnings
    assert not any("no scalar data in any event file" in w for w in rep.warnings)


def test_curves_beyond_the_palette_stay_distinguishable(monkeypatch):
    """Past the palette's 19 colours, curves of one figure repeated colours: two curves (and their
    legend entries) looked the same. A curve whose colour an earlier one has gets its own line style."""
    grid = np.arange(4.0)
    names = [f"run_{k:02d}" for k in range(40)]
    curves = {n: stats.Curve(grid, grid + k, grid + k, grid + k, np.full(4, 1), [n]) for k, n in enumerate(names)}
    colours = figures.distinct_colours(names)
    assert len(set(colours.values())) < len(names)
    fig = _drawn(monkeypatch, [{"title": "all", "curves": curves}], colours=colours)
    drawn = [(ln.get_color(), ln.get_linestyle()) for ln in fig.axes[0].lines]
    assert len(drawn) == 40 and len(set(drawn)) == 40
    handles = fig.legends[0].legend_handles
    assert len({(h.get_color(), h.get_linestyle()) for h in handles}) == 40
