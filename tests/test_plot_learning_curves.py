"""The learning check's curve figure: which rows are drawn, and bad input."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import plot_learning_curves as plc  # noqa: E402

HEADER = "run,frames,episode_length,mean_dtw_pose_error\n"


def test_a_run_in_a_later_file_replaces_its_earlier_rows_and_the_figure_is_written(tmp_path):
    first = tmp_path / "a.csv"
    first.write_text(HEADER + "walk/AMP0,100,10,0.2\nwalk/AMP0,200,20,0.3\nwalk/NEAR0,100,11,0.2\n")
    second = tmp_path / "b.csv"
    second.write_text(HEADER + "walk/NEAR0,100,12,0.25\nwalk/NEAR0,300,40,0.3\n")
    curves = plc.load_curves([str(first), str(second)])
    assert sorted(curves.groupby("run").size().items()) == [("walk/AMP0", 2), ("walk/NEAR0", 2)]
    assert curves[curves.run == "walk/NEAR0"].episode_length.tolist() == [12, 40]
    out = tmp_path / "fig.png"
    assert plc.main([str(first), str(second), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_without_the_columns_is_refused_naming_it(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("run,frames\nwalk/AMP0,100\n")
    with pytest.raises(SystemExit, match=r"bad\.csv: missing column\(s\) episode_length, mean_dtw_pose_error"):
        plc.load_curves([str(bad)])
