"""A node's stop (SIGINT) waits for the callbacks it is running before it destroys the node.

rclpy's own MultiThreadedExecutor (Jazzy) does not: the node is destroyed under a running
callback, which raises in the callback or, inside a C call, crashes the process (CI saw
policy_node exit -11). Real process, real signal, real executor.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.ros

FIXTURE = REPO / "test" / "fixtures" / "slow_callback_node.py"


def test_sigint_waits_for_the_callback_in_flight(ros_env, tmp_path) -> None:
    log = tmp_path / "slow_callback_node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(FIXTURE)], env=ros_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        try:
            deadline = time.monotonic() + 30.0
            while "started" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.02)
            assert "started" in log.read_text(), "the timer callback never ran"
            os.killpg(proc.pid, signal.SIGINT)        # the callback is 1 s into its sleep at most
            rc = proc.wait(timeout=15.0)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert rc == 0, text
    assert text.rstrip().endswith("finished as slow_callback_node"), text   # ran to its end, node alive
    assert "never retrieved" not in text and "Destroyable" not in text, text
