"""Shared fixtures for tests that start ROS 2 nodes.

Isolation: every pytest process (each xdist worker) takes its own ROS_DOMAIN_ID, held by an
flock in /tmp for the whole session, so parallel workers *and* other people's test runs on
the same machine never see each other's topics. Discovery stays on loopback.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
_DOMAIN_LOCK_DIR = Path("/tmp/swm_ros_test_domains")
_DOMAIN_RANGE = range(30, 100)      # stay inside 0..101 (Fast DDS port arithmetic)
_domain_lock = None


def _claim_domain() -> int:
    """The first free domain from 30 + worker index, kept by an flock until the process ends."""
    global _domain_lock
    _DOMAIN_LOCK_DIR.mkdir(exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    start = int(worker[2:]) if worker[2:].isdigit() else 0
    ids = list(_DOMAIN_RANGE)
    for i in range(len(ids)):
        domain = ids[(start + i) % len(ids)]
        f = open(_DOMAIN_LOCK_DIR / f"{domain}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _domain_lock = f          # keep the file (and the lock) open for the session
        return domain
    raise RuntimeError("no free ROS_DOMAIN_ID for this test process")


def _ros_env() -> None:
    if "SWM_TEST_DOMAIN" not in os.environ:
        os.environ["SWM_TEST_DOMAIN"] = str(_claim_domain())
    os.environ["ROS_DOMAIN_ID"] = os.environ["SWM_TEST_DOMAIN"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("RMW_IMPLEMENTATION", None)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ["PYTHONUNBUFFERED"] = "1"


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """The process environment for ROS tests (domain, discovery range, GL)."""
    _ros_env()
    return dict(os.environ)


@pytest.fixture
def rclpy_context(ros_env):
    """A fresh rclpy context for probe nodes created inside a test."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


class NodeProcess:
    """A node started as `python -m swm_ros.ros.<module> --ros-args ...` in its own session."""

    def __init__(self, module: str, ros_args: list[str], env: dict[str, str], log: Path) -> None:
        self.module, self.log = module, log
        self._log_file = open(log, "w")
        cmd = [sys.executable, "-m", f"swm_ros.ros.{module}", "--ros-args", *ros_args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=REPO)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log_file.closed:    # stop() closes it; the log stays readable
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGINT (clean rclpy shutdown), wait; SIGKILL the process group as a last resort."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5.0)
            except ProcessLookupError:
                pass
        self._log_file.close()
        return self.proc.returncode

    def stop_cleanly(self, timeout: float = 5.0) -> None:
        """stop(), and fail with the node's own last output (its traceback) unless it exits 0."""
        alive = self.alive()
        rc = self.stop(timeout)
        assert alive and rc == 0, (f"{self.module} {'exited' if alive else 'had already exited,'} {rc} "
                                   f"on SIGINT\n{self.output()[-3000:]}")


@pytest.fixture
def start_node(ros_env, tmp_path) -> Iterator[Callable[..., NodeProcess]]:
    """start_node("controller_node", "-p", "dry_run:=true", ...) -> NodeProcess; stopped at teardown."""
    procs: list[NodeProcess] = []

    def start(module: str, *ros_args: str, name: str | None = None) -> NodeProcess:
        log = tmp_path / f"{name or module}-{len(procs)}.log"
        p = NodeProcess(module, list(ros_args), ros_env, log)
        procs.append(p)
        return p

    yield start
    for p in reversed(procs):
        p.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    """Poll `predicate` until true or timeout (a probe's executor spins on its own thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class Probe:
    """An in-test rclpy node that collects messages, spun by its own executor on a thread.

    Spinning on a thread rather than only inside `spin`/`wait_for` keeps the probe's timers
    (joint states, clocks) and subscriptions live while the test itself reads logs, asserts or
    waits on a child process: a node under test never sees its inputs pause because the test
    was busy. Subscription callbacks only append to lists, which is safe across threads."""

    def __init__(self, context, name: str = "probe") -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self._thread = threading.Thread(target=self._spin_forever, name=f"{name}-spin", daemon=True)
        self._thread.start()

    def _spin_forever(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def collect(self, msg_type, topic: str, qos_profile, key: str | None = None) -> list:
        """Subscribe and append every message to `self.received[key or topic]`."""
        box = self.received.setdefault(key or topic, [])
        self.node.create_subscription(msg_type, topic, box.append, qos_profile)
        return box

    def spin(self, seconds: float) -> None:
        """Let `seconds` of graph time pass (the executor spins on its own thread)."""
        time.sleep(seconds)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return wait_for(predicate, timeout)

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        assert self.wait_for(client.service_is_ready, timeout), f"service {name} not available"
        future = client.call_async(request)
        assert self.wait_for(future.done, timeout), f"service {name} did not answer"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


@pytest.fixture
def probe(rclpy_context) -> Iterator[Probe]:
    p = Probe(rclpy_context)
    yield p
    p.close()


# ----------------------------------------------------------------------------------------
# control_msgs for the FollowJointTrajectory backend: no PyPI wheel exists, so the tests
# build the interface definitions in test/fixtures/control_msgs with the project's own
# recipe (scikit-build-core + rosidl, like the root package) and hand them to child processes.
# ----------------------------------------------------------------------------------------

CONTROL_MSGS_SRC = REPO / "test" / "fixtures" / "control_msgs"


def _fixture_hash(root: Path) -> str:
    import hashlib

    h = hashlib.sha256(sys.version.encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_control_msgs() -> Path:
    """The install prefix of the fixture control_msgs, built once per content hash (about 1 min)."""
    prefix = REPO / "build" / "test-fixtures" / f"control_msgs-{_fixture_hash(CONTROL_MSGS_SRC)}"
    if (prefix / ".complete").is_file():
        return prefix
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / "control_msgs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # parallel workers: one builds, the others wait
        if (prefix / ".complete").is_file():
            return prefix
        staging = prefix.with_name(prefix.name + ".partial")
        subprocess.run(["rm", "-rf", str(staging)], check=True)
        env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
        out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                              "--prefix", str(staging), str(CONTROL_MSGS_SRC)],
                             env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"building the control_msgs test fixture failed:\n{out.stdout[-3000:]}\n"
                               f"{out.stderr[-3000:]}")
        subprocess.run(["rm", "-rf", str(prefix)], check=True)
        staging.rename(prefix)
        (prefix / ".complete").touch()
    return prefix


def _prepend(env: dict[str, str], key: str, path: Path) -> None:
    env[key] = f"{path}{os.pathsep}{env[key]}" if env.get(key) else str(path)


@pytest.fixture(scope="session")
def control_msgs_env(ros_env) -> dict[str, str]:
    """ros_env for child processes that can import control_msgs (FollowJointTrajectory)."""
    prefix = build_control_msgs()
    env = dict(ros_env)
    _prepend(env, "PYTHONPATH", prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")
    _prepend(env, "LD_LIBRARY_PATH", prefix / "lib")      # the generated type-support libraries
    _prepend(env, "AMENT_PREFIX_PATH", prefix)
    return env


@pytest.fixture
def start_script(tmp_path) -> Iterator[Callable[..., NodeProcess]]:
    """start_script(target, env, "-p", "x:=1") -> NodeProcess with its own environment.

    target: a Path (`python path --ros-args ...`) or a module name (`python -m module --ros-args ...`).
    """
    procs: list[NodeProcess] = []

    def start(target: Path | str, env: dict[str, str], *ros_args: str) -> NodeProcess:
        run = [str(target)] if isinstance(target, Path) else ["-m", target]
        label = target.stem if isinstance(target, Path) else target.rsplit(".", 1)[-1]
        p = NodeProcess.__new__(NodeProcess)
        p.module, p.log = label, tmp_path / f"{label}-{len(procs)}.log"
        p._log_file = open(p.log, "w")
        p.proc = subprocess.Popen([sys.executable, *run, "--ros-args", *ros_args], env=env,
                                  stdout=p._log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        procs.append(p)
        return p

    yield start
    for p in reversed(procs):
        p.stop()


@pytest.fixture(scope="session")
def saqa_file(tmp_path_factory) -> Path:
    """Real (tiny) SAQA data from `swm collect` + `swm saqa`, built once per test process."""
    from swm_cli import collect_small_saqa

    return collect_small_saqa(tmp_path_factory.mktemp("saqa_data") / "c")
