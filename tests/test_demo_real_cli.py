"""``faust-hpc demo`` refuses the real-data options without ``--real``, and
bad values with it: one line, exit 2, before anything is prepared or written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, message", [
    (["--imsize", "64"], "--imsize applies to real data only: add --real"),
    (["--band", "full"], "--band applies to real data only: add --real"),
    (["--real", "--imsize", "4"], "--imsize must be >= 16 pixels, or 0 for the data's own size (got 4)"),
    (["--real", "--nchunks", "0"], "--nchunks must be >= 1 (got 0)"),
    (["--real", "--cell-arcsec", "-1"], "--cell-arcsec must be > 0 (got -1.0)"),
])
def test_bad_demo_options_stop_before_any_work(tmp_path, args, message):
    target = tmp_path / "demo-dir"
    res = subprocess.run([sys.executable, "-m", "faust_hpc", "demo", str(target), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    assert not target.exists()
