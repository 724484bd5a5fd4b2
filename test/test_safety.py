"""The controller's ROS-free safety layer: every rule on its own, time driven by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from swm_ros.robots import safety
from swm_ros.ros.trajectory import TimedTrajectory

NAMES = ("dx", "dy", "dz", "dyaw", "gripper")
LIMITS = safety.ChunkLimits(NAMES, action_bound=1.0, min_dt=0.02, max_dt=1.0, max_horizon=64)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_valid_chunk_reshaped() -> None:
    a = np.linspace(-1, 1, 8 * 5)
    check = safety.validate_chunk(a, NAMES, 8, 0.1, LIMITS)
    assert check.ok and check.reason == ""
    assert check.actions.shape == (8, 5)
    np.testing.assert_allclose(check.actions.reshape(-1), a)


@pytest.mark.parametrize("mutate, reason", [
    (lambda a, n, h, dt: (a[:-1], n, h, dt), "expected horizon x actions"),
    (lambda a, n, h, dt: (a, n, h + 1, dt), "expected horizon x actions"),
    (lambda a, n, h, dt: (np.where(np.arange(a.size) == 3, np.nan, a), n, h, dt), "non-finite"),
    (lambda a, n, h, dt: (np.where(np.arange(a.size) == 3, np.inf, a), n, h, dt), "non-finite"),
    (lambda a, n, h, dt: (a * 1e6, n, h, dt), "exceeds bound"),
    (lambda a, n, h, dt: (a, ("dx", "dy", "dz", "droll", "gripper"), h, dt), "action names"),
    (lambda a, n, h, dt: (a, n[:4], h, dt), "action names"),
    (lambda a, n, h, dt: (a, n, h, 0.0), "dt"),
    (lambda a, n, h, dt: (a, n, h, 5.0), "dt"),
    (lambda a, n, h, dt: (a, n, h, float("nan")), "dt"),
    (lambda a, n, h, dt: (np.zeros(0), n, 0, dt), "horizon"),
    (lambda a, n, h, dt: (np.zeros(100 * 5), n, 100, dt), "horizon"),
])
def test_bad_chunks_rejected_with_reason(mutate, reason) -> None:
    a = np.full(8 * 5, 0.5)
    args = mutate(a, NAMES, 8, 0.1)
    check = safety.validate_chunk(*args, LIMITS)
    assert not check.ok and check.actions is None
    assert reason in check.reason


def test_configured_bound() -> None:
    limits = safety.ChunkLimits(NAMES, action_bound=2.0)
    assert safety.validate_chunk(np.full(5, 1.5), NAMES, 1, 0.1, limits).ok
    assert not safety.validate_chunk(np.full(5, 2.5), NAMES, 1, 0.1, limits).ok


def test_chunk_limits_validated() -> None:
    with pytest.raises(ValueError):
        safety.ChunkLimits(NAMES, action_bound=0)
    with pytest.raises(ValueError):
        safety.ChunkLimits(NAMES, min_dt=0.5, max_dt=0.1)
    with pytest.raises(ValueError):
        safety.ChunkLimits(())


def test_clamp_positions() -> None:
    lo, hi = np.array([-1.0, 0.0]), np.array([1.0, 2.0])
    q, clamped = safety.clamp_positions(np.array([[2.0, -1.0], [0.5, 1.0]]), lo, hi)
    np.testing.assert_allclose(q, [[1.0, 0.0], [0.5, 1.0]])
    assert clamped
    q, clamped = safety.clamp_positions(np.array([0.0, 1.0]), lo, hi)
    assert not clamped


def test_workspace_clip() -> None:
    p, clipped = safety.clip_to_workspace(np.array([0.0, 0.5, 2.0]), [0.25, -0.5, 0.8], [0.75, 0.1, 1.2])
    np.testing.assert_allclose(p, [0.25, 0.1, 1.2])
    assert clipped
    _, clipped = safety.clip_to_workspace(np.array([0.5, 0.0, 1.0]), [0.25, -0.5, 0.8], [0.75, 0.1, 1.2])
    assert not clipped


def test_time_scale_stretches_only_fast_segments() -> None:
    q0 = np.zeros(2)
    wp = np.array([[0.05, 0.0], [1.05, 0.0], [1.10, 0.2]])   # segment 2 moves 1 rad in 0.1 s
    times = np.array([0.1, 0.2, 0.3])
    vmax = np.array([2.0, 1.0])
    assert safety.max_joint_speed_ratio(q0, wp, times, vmax) > 1
    new = safety.time_scale(q0, wp, times, vmax)
    np.testing.assert_allclose(new, [0.1, 0.1 + 0.5, 0.6 + 0.2])   # 1 rad / 2 rad/s; 0.2 rad / 1 rad/s
    assert safety.max_joint_speed_ratio(q0, wp, new, vmax) <= 1 + 1e-9
    # a slow trajectory keeps its timing exactly
    slow = safety.time_scale(q0, wp * 0.01, times, vmax)
    np.testing.assert_allclose(slow, times)


def test_time_scale_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        safety.time_scale(np.zeros(2), np.zeros((2, 2)), np.array([0.2, 0.1]), np.ones(2))
    with pytest.raises(ValueError):
        safety.time_scale(np.zeros(2), np.zeros((2, 2)), np.array([0.1, 0.2]), np.array([1.0, 0.0]))


def test_command_watchdog_trips_once_and_rearms() -> None:
    clock = FakeClock()
    wd = safety.CommandWatchdog(1.0, clock)
    clock.t += 10
    assert not wd.check(), "never fed: nothing to stop"
    wd.feed()
    clock.t += 0.9
    assert not wd.check()
    clock.t += 0.2
    assert wd.check() and wd.tripped
    clock.t += 5
    assert not wd.check(), "trips once per silence"
    wd.feed()
    assert not wd.tripped
    clock.t += 1.5
    assert wd.check()


def test_freshness_guard_uses_stamp_or_arrival() -> None:
    clock = FakeClock()
    g = safety.FreshnessGuard(0.5, clock)
    assert not g.fresh() and math.isinf(g.age())
    g.update()
    assert g.fresh()
    clock.t += 0.6
    assert not g.fresh()
    g.update(stamp=clock.t - 0.7)       # a frozen sensor: new message, old stamp
    assert not g.fresh()
    g.update(stamp=clock.t - 0.1)
    assert g.fresh() and abs(g.age() - 0.1) < 1e-9


def test_stamp_age() -> None:
    assert safety.stamp_age_ok(9.9, 10.0, 0.5)[0]
    ok, why = safety.stamp_age_ok(8.0, 10.0, 0.5)
    assert not ok and "stale" in why
    ok, why = safety.stamp_age_ok(11.0, 10.0, 0.5)
    assert not ok and "future" in why


def test_estop_latch() -> None:
    e = safety.EStopLatch()
    assert not e.engaged
    assert e.engage("operator")
    assert not e.engage("again"), "already engaged"
    assert e.engaged and e.reason == "again"
    assert e.release() and not e.engaged
    assert not e.release()


def test_timed_trajectory_jtc_semantics() -> None:
    q0 = np.array([0.0, 0.0])
    traj = TimedTrajectory(10.0, q0, np.array([1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(traj.sample(9.0), q0)             # before start: origin
    np.testing.assert_allclose(traj.sample(10.5), [0.5, 1.0])    # interpolate from the origin
    np.testing.assert_allclose(traj.sample(11.5), [2.0, 2.0])
    np.testing.assert_allclose(traj.sample(20.0), [3.0, 2.0])    # hold the last point
    assert traj.end == 12.0
    with pytest.raises(ValueError):
        TimedTrajectory(0.0, q0, np.array([1.0, 1.0]), np.zeros((2, 2)))
