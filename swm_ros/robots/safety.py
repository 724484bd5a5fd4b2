"""The controller's safety layer, free of ROS so that every rule is unit-tested on its own.

Nothing here trusts its input: an action chunk from a model is checked for shape, names,
finiteness, magnitude and timing before anything is computed from it; joint targets are
clamped to the robot profile's limits; trajectories are slowed down (never reshaped) until
no segment exceeds the velocity limits; effector targets are clipped to the workspace box.
The watchdogs take a clock function, so tests drive time by hand and the ROS node passes
its own (sim-time aware) clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Clock = Callable[[], float]   # returns seconds (monotonic within one source)


# ----------------------------------------------------------------------------------------
# Action chunks
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChunkLimits:
    """What a valid action chunk looks like."""

    action_names: tuple[str, ...]
    action_bound: float = 1.0        # |a| <= bound for every entry
    min_dt: float = 0.01             # seconds between actions
    max_dt: float = 1.0
    max_horizon: int = 256

    def __post_init__(self) -> None:
        if not self.action_names:
            raise ValueError("ChunkLimits needs at least one action name")
        if not (self.action_bound > 0 and math.isfinite(self.action_bound)):
            raise ValueError(f"action_bound must be positive and finite, got {self.action_bound}")
        if not (0 < self.min_dt <= self.max_dt):
            raise ValueError(f"need 0 < min_dt <= max_dt, got {self.min_dt}, {self.max_dt}")
        if self.max_horizon < 1:
            raise ValueError(f"max_horizon must be >= 1, got {self.max_horizon}")


@dataclass(frozen=True)
class ChunkCheck:
    """Result of `validate_chunk`: `actions` is (H, D) when ok, `reason` says why not."""

    ok: bool
    reason: str = ""
    actions: np.ndarray | None = None


def validate_chunk(actions: Sequence[float] | np.ndarray, action_names: Sequence[str],
                   horizon: int, dt: float, limits: ChunkLimits) -> ChunkCheck:
    """Check a flat (row-major) or (H, D) chunk; reject with a reason, never repair it."""
    names = tuple(action_names)
    if names != limits.action_names:
        return ChunkCheck(False, f"action names {list(names)} != expected {list(limits.action_names)}")
    d = len(names)
    if not (isinstance(horizon, (int, np.integer)) and 1 <= horizon <= limits.max_horizon):
        return ChunkCheck(False, f"horizon {horizon} outside [1, {limits.max_horizon}]")
    a = np.asarray(actions, dtype=np.float64)
    if a.size != horizon * d:
        return ChunkCheck(False, f"{a.size} values, expected horizon x actions = {horizon} x {d} = {horizon * d}")
    a = a.reshape(horizon, d)
    if not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        return ChunkCheck(False, f"{bad} non-finite value(s) (NaN/inf)")
    peak = float(np.max(np.abs(a)))
    if peak > limits.action_bound + 1e-6:
        return ChunkCheck(False, f"|action| {peak:.4g} exceeds bound {limits.action_bound:g}")
    if not (math.isfinite(dt) and limits.min_dt <= dt <= limits.max_dt):
        return ChunkCheck(False, f"dt {dt:.4g} s outside [{limits.min_dt:g}, {limits.max_dt:g}]")
    return ChunkCheck(True, "", a)


# ----------------------------------------------------------------------------------------
# Joint and workspace limits
# ----------------------------------------------------------------------------------------

def clamp_positions(q: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, bool]:
    """Clamp joint positions (any leading shape) to [lower, upper]; also says whether it had to."""
    q = np.asarray(q, dtype=np.float64)
    out = np.clip(q, lower, upper)
    return out, bool(np.any(out != q))


def clip_to_workspace(p: np.ndarray, lower: Sequence[float], upper: Sequence[float]) -> tuple[np.ndarray, bool]:
    """Clip an effector target to the workspace box; also says whether it had to."""
    p = np.asarray(p, dtype=np.float64)
    out = np.clip(p, lower, upper)
    return out, bool(np.any(out != p))


def time_scale(q_start: np.ndarray, waypoints: np.ndarray, times: np.ndarray,
               velocity_limits: np.ndarray) -> np.ndarray:
    """Stretch a trajectory's timing so that no segment is faster than the velocity limits.

    q_start (J,) is where the robot is at t=0; waypoints (N, J) are reached at `times` (N,),
    strictly increasing, > 0. Each segment keeps its nominal duration unless a joint would
    exceed its limit, in which case that segment (and only it) is lengthened. The path is
    never changed: a velocity-limited robot follows the same positions, just slower.
    Returns the new times (N,).
    """
    q_start = np.asarray(q_start, dtype=np.float64)
    waypoints = np.asarray(waypoints, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    vmax = np.asarray(velocity_limits, dtype=np.float64)
    if waypoints.ndim != 2 or waypoints.shape[1] != q_start.shape[0] or times.shape != (waypoints.shape[0],):
        raise ValueError(f"shape mismatch: q_start {q_start.shape}, waypoints {waypoints.shape}, times {times.shape}")
    if vmax.shape != q_start.shape or np.any(vmax <= 0):
        raise ValueError("velocity limits must be positive, one per joint")
    nominal = np.diff(np.concatenate([[0.0], times]))
    if np.any(nominal <= 0):
        raise ValueError("times must be strictly increasing and positive")
    prev = np.vstack([q_start, waypoints[:-1]])
    needed = np.max(np.abs(waypoints - prev) / vmax, axis=1)
    return np.cumsum(np.maximum(nominal, needed))


def max_joint_speed_ratio(q_start: np.ndarray, waypoints: np.ndarray, times: np.ndarray,
                          velocity_limits: np.ndarray) -> float:
    """Largest |dq/dt| / limit over all segments (<= 1 means within limits); for checks and tests."""
    prev = np.vstack([q_start, waypoints[:-1]])
    dts = np.diff(np.concatenate([[0.0], times]))
    return float(np.max(np.abs(waypoints - prev) / dts[:, None] / velocity_limits))


# ----------------------------------------------------------------------------------------
# Watchdogs and the e-stop latch
# ----------------------------------------------------------------------------------------

class CommandWatchdog:
    """Trips once when no valid command arrived for `timeout` seconds.

    `check()` returns True exactly once per silence, so the caller sends one hold command
    instead of flooding the arm; a new `feed()` re-arms it. Not armed until the first feed:
    a controller that never received a command has nothing to stop.
    """

    def __init__(self, timeout: float, clock: Clock) -> None:
        if not timeout > 0:
            raise ValueError(f"command timeout must be > 0, got {timeout}")
        self.timeout = timeout
        self._clock = clock
        self._last: float | None = None
        self._tripped = False

    def feed(self) -> None:
        self._last = self._clock()
        self._tripped = False

    def age(self) -> float:
        return math.inf if self._last is None else self._clock() - self._last

    def check(self) -> bool:
        if self._last is None or self._tripped:
            return False
        if self.age() > self.timeout:
            self._tripped = True
            return True
        return False

    @property
    def tripped(self) -> bool:
        return self._tripped


class FreshnessGuard:
    """Says whether an input stream is fresh: updated within `max_age` seconds.

    Uses the message stamp when one is given (catches a sensor that keeps publishing a
    frozen stamp), otherwise the arrival time. Never fresh before the first update.
    """

    def __init__(self, max_age: float, clock: Clock) -> None:
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0, got {max_age}")
        self.max_age = max_age
        self._clock = clock
        self._last: float | None = None

    def update(self, stamp: float | None = None) -> None:
        self._last = self._clock() if stamp is None else stamp

    def age(self) -> float:
        return math.inf if self._last is None else self._clock() - self._last

    def fresh(self) -> bool:
        return self.age() <= self.max_age


def stamp_age_ok(stamp: float, now: float, max_age: float, max_future: float = 0.05) -> tuple[bool, str]:
    """A command stamped `stamp` is usable at `now` if neither too old nor from the future."""
    age = now - stamp
    if age > max_age:
        return False, f"stale: stamp is {age:.3f} s old (max {max_age:g} s)"
    if age < -max_future:
        return False, f"stamp is {-age:.3f} s in the future"
    return True, ""


class EStopLatch:
    """Once engaged, stays engaged until explicitly released (never by a new command)."""

    def __init__(self) -> None:
        self._engaged = False
        self.reason = ""

    def engage(self, reason: str = "e-stop") -> bool:
        """Returns True if this call changed the state."""
        changed = not self._engaged
        self._engaged, self.reason = True, reason
        return changed

    def release(self) -> bool:
        changed = self._engaged
        self._engaged, self.reason = False, ""
        return changed

    @property
    def engaged(self) -> bool:
        return self._engaged
