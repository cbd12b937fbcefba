"""The report page EXP/figures/index.html, opened in a real headless Chromium over file://.

Skipped only when /usr/bin/chromium is absent and NEAR_REQUIRE_CHROMIUM is unset (`make test`
installs Chromium and sets it, so CI always runs this).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from near.report.pipeline import Report
from _report_helpers import make_experiment

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1400, 3200)
# Added to a copy of the page: once everything has loaded, record which <img> rendered and where.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var info = imgs.map(function (i) {
    var r = i.getBoundingClientRect();
    return {src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0, x: r.left, y: r.top, w: r.width, h: r.height};
  });
  document.documentElement.setAttribute("data-probe", JSON.stringify(info));
});
</script></body>"""


# Chooses algorithm NEAR in the page's run filter, then records the algorithm of every visible run row.
FILTER_PROBE = """<script>
window.addEventListener("load", function () {
  var sel = document.querySelector(".filters select[name='algorithm']");
  sel.value = "NEAR"; nearFilter();
  var rows = Array.prototype.slice.call(document.querySelectorAll("#runs-table tbody tr")).filter(function (r) {
    return !r.hidden; });
  document.documentElement.setAttribute("data-probe", JSON.stringify(rows.map(function (r) {
    return r.dataset.algorithm; })));
});
</script></body>"""


def _chromium(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           "--virtual-time-budget=10000", *mode, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def chromium():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("NEAR_REQUIRE_CHROMIUM"):
            pytest.fail(f"{CHROMIUM} is missing and NEAR_REQUIRE_CHROMIUM is set (make chromium installs it)")
        pytest.skip(f"{CHROMIUM} is not installed (make chromium)")
    return CHROMIUM


def test_report_page_renders_in_chromium(chromium, tmp_path):
    exp = tmp_path / "demo"
    jobs = make_experiment(exp, algorithms=("NEAR", "AMP"), motions=("circle", "figure8"), seeds=(1, 2), n_steps=12)
    failed_dir = exp / "runs" / "broken"
    failed_dir.mkdir(parents=True)
    (failed_dir / "stderr.log").write_text("step 1\nTraceback (most recent call last):\nRuntimeError: loss is nan\n")
    jobs = pd.concat([jobs, pd.DataFrame([{"job_id": "broken", "stage": "rl", "state": "failed",
                                           "reason": "exit code 1", "run_dir": str(failed_dir),
                                           "algorithm": "PPO", "motion": "circle", "seed": 1}])], ignore_index=True)
    out = exp / "figures"
    rep = Report(exp, None, out, workers=1, jobs=jobs, log=lambda m: None)
    written = rep.run()
    page = out / "index.html"
    assert page in written
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert len(pngs) == 3  # one curve figure per tag

    probe = out / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE))
    dom = _chromium(tmp_path, probe.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    info = json.loads(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert sorted(i["src"].removeprefix("./") for i in info) == pngs and all(i["ok"] for i in info), info
    # the page's content: job states, the failed job with its reason and last log lines, run links
    assert "failed 1" in dom.stdout and "done 8" in dom.stdout
    assert "exit code 1" in dom.stdout and "RuntimeError: loss is nan" in dom.stdout
    assert 'href="../runs/NEAR-circle-1"' in dom.stdout
    assert "<th>algorithm</th>" in dom.stdout and "<th>DTW pose error ↓</th>" in dom.stdout  # plotting/demo.yaml final table

    # the runs table filters by group: choosing NEAR leaves NEAR's runs only
    probe.write_text(page.read_text().replace("</body>", FILTER_PROBE))
    dom = _chromium(tmp_path, probe.as_uri(), "--dump-dom")
    shown = json.loads(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert shown == ["NEAR"] * 4, shown

    shot = tmp_path / "page.png"
    res = _chromium(tmp_path, page.as_uri(), f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    shutil.copy(shot, os.environ.get("NEAR_PAGE_SCREENSHOT", out / "screenshot.png"))  # for a look
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (WINDOW[1], WINDOW[0])
    seen = 0
    for i in info:
        x0, y0 = int(i["x"]), int(i["y"])
        x1, y1 = min(int(i["x"] + i["w"]), WINDOW[0]), min(int(i["y"] + i["h"]), WINDOW[1])
        if y0 >= WINDOW[1]:
            continue
        region = img[y0:y1, x0:x1]
        assert region.size and i["w"] > 300 and i["h"] > 150, i
        ink = (region.min(axis=2) < 0.9).mean()  # drawn (non-white) pixels: axes, curves, text
        colour = (region.max(axis=2) - region.min(axis=2) > 0.3).mean()  # saturated curve pixels
        assert 0.02 < ink < 0.6 and colour > 0.002, (i["src"], ink, colour)
        seen += 1
    assert seen == len(pngs)
    # and the check tells blank from drawn: the page's empty right margin has no ink
    margin = img[: WINDOW[1] // 2, WINDOW[0] - 40 :]
    assert (margin.min(axis=2) < 0.9).mean() < 0.01
