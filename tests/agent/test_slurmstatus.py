"""The Slurm status page, with stand-in ``sinfo`` and ``squeue`` on PATH that answer in the
formats the page asks for (no controller runs on one test machine)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent.conftest import Agent, start_agent

SINFO = """\
c1|debug*|idle|0/4/0/4|3900|none
c2|debug*|allocated|4/0/0/4|3900|none
c3|debug*|drained|0/0/4/4|3900|disk <script>alert(1)</script> | full
"""
SQUEUE = """\
7|debug|alice|RUNNING|1:02|1|c2|train
8|debug|bob|PENDING|0:00|2|(Resources)|<script>alert("x")</script>|a&b
"""


def _command(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def slurm_status(tmp_path: Path) -> Iterator[Callable[[str, str], Agent]]:
    """Start ``ecliptic agent slurm-status`` with ``sinfo`` and ``squeue`` as shell bodies."""
    started: list[Agent] = []

    def start(sinfo: str, squeue: str) -> Agent:
        bin_dir = tmp_path / f"bin{len(started)}"
        bin_dir.mkdir()
        _command(bin_dir, "sinfo", sinfo)
        _command(bin_dir, "squeue", squeue)
        path = f"{bin_dir}:{os.environ['PATH']}"
        agent = start_agent(tmp_path, "slurm-status", env={"PATH": path})
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def _cat(text: str) -> str:
    return f"cat <<'EOF'\n{text}EOF"


def test_the_page_lists_nodes_and_jobs_escaped(slurm_status: Callable[[str, str], Agent]) -> None:
    agent = slurm_status(_cat(SINFO), _cat(SQUEUE))
    page = httpx.get(agent.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    text = page.text
    assert '<meta http-equiv="refresh" content="5">' in text
    assert "<td>c2</td><td>debug*</td><td>allocated</td><td>4/0/0/4</td>" in text
    assert "<td>7</td><td>debug</td><td>alice</td><td>RUNNING</td>" in text
    assert "<script>" not in text
    assert "disk &lt;script&gt;alert(1)&lt;/script&gt; | full" in text
    # The job's name holds the separator: it comes whole, escaped.
    assert "<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;|a&amp;b</td>" in text


def test_the_api_answers_the_same_as_json(slurm_status: Callable[[str, str], Agent]) -> None:
    agent = slurm_status(_cat(SINFO), _cat(SQUEUE))
    status = httpx.get(agent.url + "/api/status").json()
    assert [n["name"] for n in status["nodes"]] == ["c1", "c2", "c3"]
    assert status["nodes"][2]["reason"] == "disk <script>alert(1)</script> | full"
    assert status["jobs"][1] == {
        "id": "8",
        "partition": "debug",
        "user": "bob",
        "state": "PENDING",
        "time": "0:00",
        "nodes": "2",
        "where": "(Resources)",
        "name": '<script>alert("x")</script>|a&b',
    }
    assert status["nodes_error"] is None and status["jobs_error"] is None


def test_a_failing_sinfo_is_a_message_not_a_500(
    slurm_status: Callable[[str, str], Agent],
) -> None:
    fail = (
        "echo 'slurm_load_partitions: Unable to contact slurm controller "
        "(connect failure) <b>' >&2; exit 1"
    )
    agent = slurm_status(fail, fail.replace("partitions", "jobs"))
    page = httpx.get(agent.url + "/")
    assert page.status_code == 200
    assert "sinfo failed (exit 1): slurm_load_partitions: Unable to contact" in page.text
    assert "squeue failed (exit 1): slurm_load_jobs" in page.text
    assert "<b>" not in page.text and "&lt;b&gt;" in page.text
    status = httpx.get(agent.url + "/api/status").json()
    assert status["nodes"] == [] and "Unable to contact" in status["nodes_error"]
    assert httpx.get(agent.url + "/healthz").text == "ok\n"


def test_health_and_unknown_paths(slurm_status: Callable[[str, str], Agent]) -> None:
    agent = slurm_status(_cat(""), _cat(""))
    health = httpx.get(agent.url + "/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert httpx.get(agent.url + "/nope").status_code == 404
    page = httpx.get(agent.url + "/").text
    assert "No nodes." in page and "No jobs." in page
