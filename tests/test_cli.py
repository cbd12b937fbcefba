"""The console script is wired up and every command group is reachable."""

import subprocess
import sys


def test_near_help_lists_command_groups():
    out = subprocess.run(
        [sys.executable, "-m", "near", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for group in ("sweep", "train", "report"):
        assert group in out
