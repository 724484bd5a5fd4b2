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
import threading
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


BACKGROUND_NODE_SCRIPT = """
import sys, threading, time
from swm_ros.ros.node_utils import BackgroundNode
errors = []
threading.excepthook = lambda args: errors.append(repr(args.exc_value))
for i in range(5):
    bg = BackgroundNode(f"closing_{i}", threads=2)
    ticks = []
    bg.node.create_timer(0.001, lambda: ticks.append(1))
    time.sleep(0.3)
    bg.close()
    assert len(ticks) > 10, len(ticks)
time.sleep(0.2)
print("errors", errors)
sys.exit(1 if errors else 0)
"""


def test_background_node_closes_without_raising_in_its_spin_thread(ros_env) -> None:
    """The demo's supervisor and the bag evaluator spin a node on a thread; closing it while a
    1 kHz timer keeps the executor busy must not leave that thread submitting to a drained pool."""
    r = subprocess.run([sys.executable, "-c", BACKGROUND_NODE_SCRIPT], env=ros_env, capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture
def context():
    """An rclpy context of this test's own, in this process (the executor tests need no other process)."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def test_shutdown_waits_for_a_callback_the_pool_lost_track_of(context) -> None:
    """A SIGINT between a pool worker's start and the pool recording it (the first callback just
    running) leaves a worker that ThreadPoolExecutor.shutdown does not join; the executor still
    waits for it through rclpy's count of callbacks in flight. Here that worker is made by hand:
    a thread inside the count, outside the pool."""
    from swm_ros.ros.node_utils import MultiThreadedExecutor

    for timeout, finished in ((3.0, True), (0.1, False)):
        executor = MultiThreadedExecutor(num_threads=2, context=context)
        inside = threading.Event()

        def callback() -> None:
            with executor._work_tracker:
                inside.set()
                time.sleep(0.5)

        worker = threading.Thread(target=callback)
        worker.start()
        inside.wait(5.0)
        t0 = time.monotonic()
        assert executor.shutdown(timeout_sec=timeout) is finished
        assert (time.monotonic() - t0 >= 0.3) if finished else (time.monotonic() - t0 < 0.4)
        worker.join()


def test_a_timer_cancelled_after_it_was_ready_is_skipped_not_raised(context) -> None:
    """rclpy 7.1 raises out of spin() when another callback cancels a timer the wait set has
    already seen ready (CI saw policy_node exit 1, its retry timer cancelled); ours skips it."""
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import MultiThreadedExecutor as RclpyMultiThreadedExecutor
    from rclpy.node import Node

    from swm_ros.ros.node_utils import MultiThreadedExecutor

    node = Node("cancelled_timer", context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    timer = node.create_timer(0.001, lambda: None)
    time.sleep(0.01)
    timer.cancel()
    with pytest.raises(RCLError, match="timer is canceled"):
        RclpyMultiThreadedExecutor._take_timer(executor, timer)
    assert executor._take_timer(timer) is None
    executor.shutdown(timeout_sec=0)
    node.destroy_node()
