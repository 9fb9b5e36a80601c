"""The rule of ``make test``: a missing prerequisite fails the run; only hardware may skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """
import pytest
from tests.prerequisites import require

needs_nginx = pytest.mark.skipif(True, reason="needs nginx (scripts/setup-system.sh)")

def test_plain():
    assert True

def test_require_missing():
    require(False, "chromium (scripts/setup-system.sh test installs it)")

@needs_nginx
def test_skipif_marker():
    pass

def test_skip_call():
    pytest.skip("needs root")

@pytest.mark.hardware("gpu")
def test_on_a_gpu():
    pytest.skip("no GPU on this machine")
"""

MODULE_SKIP = """
import pytest
pytest.skip("needs a built ecliptic-tunneld (make setup)", allow_module_level=True)
"""


def _run(tmp: Path, strict: bool, only: str = "") -> subprocess.CompletedProcess[str]:
    (tmp / "conftest.py").write_text(
        "from tests.prerequisites import (\n"
        "    pytest_make_collect_report, pytest_runtest_makereport, pytest_terminal_summary)\n"
    )
    (tmp / "test_sample.py").write_text(SAMPLE)
    (tmp / "test_module_skip.py").write_text(MODULE_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "ECLIPTIC_TEST_STRICT"}
    env["PYTHONPATH"] = str(ROOT)
    if strict:
        env["ECLIPTIC_TEST_STRICT"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-o",
            "markers=hardware(kind): test",
            str(tmp / only),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_under_make_test_a_missing_prerequisite_fails_and_is_named(tmp_path: Path) -> None:
    done = _run(tmp_path, strict=True, only="test_sample.py")
    out = done.stdout
    assert done.returncode == 1, out
    assert "2 failed, 1 passed, 1 skipped, 1 error" in out, out
    for named in ("chromium", "needs nginx", "needs root"):
        assert f"missing prerequisite: {named}" in out, (named, out)
    assert "skipped for hardware this machine does not have (gpu: 1)" in out
    # A module that skips as a whole stops the run, naming what it needs.
    module = _run(tmp_path, strict=True, only="test_module_skip.py")
    assert module.returncode != 0
    assert "missing prerequisite: needs a built ecliptic-tunneld" in module.stdout


def test_outside_make_test_a_missing_prerequisite_skips(tmp_path: Path) -> None:
    done = _run(tmp_path, strict=False)
    out = done.stdout
    assert done.returncode == 0, out
    assert "1 passed" in out and "5 skipped" in out, out
    assert "4 skipped for a missing prerequisite" in out, out
