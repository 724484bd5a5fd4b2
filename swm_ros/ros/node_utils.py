"""What every node shares: parameter tables, the run/shutdown loop, a /diagnostics publisher.

Parameters are declared from a module-level table (`PARAMETERS`), so a node's parameters
are readable without starting it: the graph tests check every launch override against it.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.executors import MultiThreadedExecutor as _RclpyMultiThreadedExecutor
from rclpy.node import Node

from swm_ros.ros import qos


class StartupError(RuntimeError):
    """A node cannot start (bad parameter, missing device or file): exit non-zero, say why."""


@dataclass(frozen=True)
class Param:
    default: Any
    description: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""                  # what `check` demands, for the error message
    dynamic_typing: bool = False    # e.g. a camera source that may be given as 0 or as a path


def positive(x: Any) -> bool:
    return x > 0


def non_negative(x: Any) -> bool:
    return x >= 0


def one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda x: x in choices), f"one of {list(choices)}"


_ARRAY_TYPES = {str: ParameterType.PARAMETER_STRING_ARRAY, float: ParameterType.PARAMETER_DOUBLE_ARRAY,
                int: ParameterType.PARAMETER_INTEGER_ARRAY, bool: ParameterType.PARAMETER_BOOL_ARRAY}


def load_profile(robot: str, camera: str | None = None):
    """The robot profile a node runs with (and, if given, a camera it must have); anything
    wrong is a StartupError, so the node exits with the reason instead of a traceback."""
    from swm_ros.robots.profile import load_robot_profile

    try:
        profile = load_robot_profile(robot)
    except Exception as e:  # noqa: BLE001 - ConfigError and friends: report, exit non-zero
        raise StartupError(f"robot profile: {e}") from e
    if camera is not None and camera not in profile.cameras:
        raise StartupError(f"camera {camera!r} not in profile (has {sorted(profile.cameras)})")
    return profile


def declare_parameters(node: Node, table: dict[str, Param]) -> SimpleNamespace:
    """Declare every parameter with its default, read them back, and validate all at once."""
    values, errors = {}, []
    for name, p in table.items():
        # A float parameter also takes an integer (`rate_hz:=10`), which rclpy would refuse
        # as a type mismatch: declare it dynamically typed and check the type ourselves.
        is_float = isinstance(p.default, float)
        desc = ParameterDescriptor(description=p.description, dynamic_typing=p.dynamic_typing or is_float)
        if isinstance(p.default, list):
            # an empty list has no inferable type; declare the array type explicitly
            desc.type = _ARRAY_TYPES[type(p.default[0]) if p.default else str]
        try:
            values[name] = node.declare_parameter(name, p.default, desc).value
        except Exception as e:  # noqa: BLE001 - rclpy raises several types for a bad override
            errors.append(f"{name}: {e}")
            continue
        if is_float:
            if isinstance(values[name], bool) or not isinstance(values[name], (int, float)):
                errors.append(f"{name}={values[name]!r} is invalid: must be a number")
                continue
            values[name] = float(values[name])
        if p.check is not None and not p.check(values[name]):
            errors.append(f"{name}={values[name]!r} is invalid: must be {p.rule or 'valid'}")
    if errors:
        raise StartupError("bad parameter(s): " + "; ".join(errors))
    return SimpleNamespace(**values)


SHUTDOWN_TIMEOUT_S = 3.0


class MultiThreadedExecutor(_RclpyMultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor with a shutdown() that waits for the callbacks in flight.

    rclpy 7.1 (Jazzy) sets `_is_shutdown` before the check that would wait for running work,
    so its shutdown() returns at once, and it never stops its worker pool (fixed upstream in
    ros2/rclpy#1309, not in the Jazzy wheels). A node destroyed while a worker is still inside
    one of its callbacks crashes the process (ros2/rclpy#663; CI saw policy_node exit -11 on
    SIGINT). Here callbacks queued but not started are dropped and running ones are joined,
    up to the timeout, before rclpy's own clean-up.
    """

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        deadline = None if timeout_sec is None or timeout_sec < 0 else time.monotonic() + timeout_sec

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        pool = self._executor     # rclpy's ThreadPoolExecutor: no public handle on it
        # ThreadPoolExecutor.shutdown(wait=True) joins its workers but takes no timeout
        joiner = threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                                  name="executor-drain", daemon=True)
        joiner.start()
        joiner.join(left())
        # The pool joins only the workers it has recorded, and it records a new one after starting
        # it: a SIGINT in between (the pool's first callback is just running) leaves that worker
        # unjoined. rclpy's own count of callbacks in flight still holds it.
        idle = self._work_tracker.wait(left())
        return super().shutdown(timeout_sec=0) and not joiner.is_alive() and idle

    def _take_timer(self, tmr):
        # A timer cancelled by another callback after the wait set saw it ready makes rclpy 7.1's
        # call_timer raise "timer is canceled" out of spin(), ending the node (ros2/rclpy#1485,
        # fixed upstream in #1487, not in the Jazzy wheels): that timer has no work this time.
        try:
            return super()._take_timer(tmr)
        except RCLError as e:
            if "timer is canceled" in str(e):
                return None
            raise


def run_node(factory: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> int:
    """init -> build -> spin -> clean shutdown (research/ros2-pip.md §5.7). Returns the exit code.

    spin() (not a spin_once loop) inside try/except, so SIGINT and SIGTERM end with 0. A node
    may set `node.done` (an rclpy Future) to end the spin itself, e.g. a finished file player.
    """
    rclpy.init(args=args)
    node = None
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    rc = 0
    try:
        node = factory()
        executor.add_node(node)
        done = getattr(node, "done", None)
        if done is not None:
            executor.spin_until_future_complete(done)
            rc = int(done.result() or 0) if done.done() else 0
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGINT can land in a finaliser (Future.__del__), which swallows the KeyboardInterrupt;
        # the executor then builds its next wait set on the context the signal handler has
        # already shut down. That is a clean stop; an RCLError with the context alive is not.
        if rclpy.ok():
            raise
    except StartupError as e:
        rclpy.logging.get_logger("swm_ros").fatal(str(e))
        print(f"error: {e}", file=sys.stderr, flush=True)
        rc = 2
    finally:
        # callbacks still running finish first (a callback stuck past the timeout does not
        # hold the stop): destroying a node under a running callback crashes the process
        drained = executor.shutdown(timeout_sec=SHUTDOWN_TIMEOUT_S)
        if node is not None and drained:
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


class BackgroundNode:
    """A node in its own rclpy context, spun on a daemon thread, for a program that is not a
    node itself (the demo's supervisor, the bag evaluator's listener): it watches and calls
    the graph while the program's own thread waits on what it collects."""

    def __init__(self, name: str, threads: int = 1) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = (MultiThreadedExecutor(num_threads=threads, context=self.context) if threads > 1
                         else SingleThreadedExecutor(context=self.context))
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # executor.spin() would still be dispatching when close() drains the worker pool, and
        # its next submit raises "cannot schedule new futures after shutdown" in this thread
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        """Stop dispatching, wait for the spin thread, then drain and destroy, in that order."""
        self._stop.set()
        self.executor.wake()
        self._thread.join(SHUTDOWN_TIMEOUT_S)
        self.executor.shutdown(timeout_sec=SHUTDOWN_TIMEOUT_S)
        self.node.destroy_node()
        self.context.try_shutdown()


class Diagnostics:
    """A small periodic /diagnostics publisher (diagnostic_updater is not on PyPI).

    `fn()` returns (level, message, {key: value}); level is a DiagnosticStatus constant (bytes).
    """

    OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE

    def __init__(self, node: Node, task: str, hardware_id: str,
                 fn: Callable[[], tuple[int, str, dict[str, Any]]], period: float = 1.0,
                 callback_group=None) -> None:
        self._node, self._fn = node, fn
        self._name = f"{node.get_name()}: {task}"
        self._hw = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self._lock = threading.Lock()
        self._timer = node.create_timer(period, self.publish, callback_group=callback_group)

    def publish(self) -> None:
        with self._lock:
            level, message, values = self._fn()
            status = DiagnosticStatus(level=level, name=self._name, message=message, hardware_id=self._hw,
                                      values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
            msg = DiagnosticArray(status=[status])
            msg.header.stamp = self._node.get_clock().now().to_msg()
            self._pub.publish(msg)
