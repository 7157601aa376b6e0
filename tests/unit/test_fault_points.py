"""The fault points: inert without the environment variable, SIGKILL at the chosen pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

SCRIPT = """
import sys
from {package}.faults import fault_point
for i in range(5):
    fault_point("other")
    fault_point({point!r})
    print(i, flush=True)
"""


def run(package: str, point: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRAINER_FAULT_")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(package=package, point=point)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("package", "point"),
    [("target_batched_postgres", "after_kafka_ack"), ("tap_redis_stream", "between_reads")],
)
def test_kills_at_the_chosen_pass_of_the_chosen_point(package, point):
    result = run(package, point, {"DRAINER_FAULT_POINT": point, "DRAINER_FAULT_AFTER": "3"})
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == ["0", "1"]
    assert f"fault point {point!r} reached (3)" in result.stderr


@pytest.mark.parametrize("package", ["target_batched_postgres", "tap_redis_stream"])
def test_inert_when_unset_or_another_point(package):
    assert run(package, "before_state", {}).stdout.split() == ["0", "1", "2", "3", "4"]
    other = run(package, "before_state", {"DRAINER_FAULT_POINT": "no_such_point"})
    assert other.returncode == 0
