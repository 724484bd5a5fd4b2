"""sim_node: the MuJoCo NicoL tabletop as a ROS 2 robot.

It looks to the rest of the graph like the real robot plus a camera driver:

  publishes  <camera.topic> / <camera.info_topic>   sensor_msgs/Image, CameraInfo (sensor QoS)
             /joint_states                           sensor_msgs/JointState
             task_info                               swm_ros/TaskInfo (latched)
             world_state                             swm_ros/WorldState (privileged, evaluation only)
             /clock                                  rosgraph_msgs/Clock (when publish_clock)
  subscribes <arm_controller>/joint_trajectory       trajectory_msgs/JointTrajectory (JTC semantics)
  services   ~/reset                                 swm_ros/ResetEpisode

Physics runs in its own thread, paced at `real_time_factor` x wall time (0 = as fast as
possible, which only makes sense with publish_clock so that other nodes follow /clock).
Stamps are sim time when publishing /clock, wall (ROS) time otherwise, so they always
agree with the clock the other nodes use.

Lockstep (real_time_factor 0 with `lockstep`): free-running, the simulation would race
ahead of the policy and controller, whose chunks would then be planned from stale images
and stamped in sim time that is already old when they arrive (the controller rejects them
by `max_chunk_age`). So sim time stands still while the other nodes think:

* it advances only while a trajectory runs, plus `lockstep_settle` s after its end (so that
  the controller's sim-time timers see it finish and send controller_ready); then the
  current observations are published once and the simulation waits for the next trajectory;
* it also stops from the moment an `action_chunk` is published (a policy replanning in
  the middle of a trajectory) until the controller's trajectory for it arrives, so the
  chunk is not aged by the controller's IK time.

Every wait is bounded by `lockstep_timeout` wall seconds (a rejected chunk has no
trajectory; nodes still starting, a policy that stopped on success, watchdogs need time to
pass): then sim time moves on by `lockstep_settle` and the simulation waits again.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from swm_ros.msg import ActionChunk, TaskInfo, WorldState
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import (Diagnostics, Param, StartupError, declare_parameters, load_profile,
                                    non_negative, positive, run_node)
from swm_ros.ros.trajectory import TimedTrajectory
from swm_ros.srv import ResetEpisode

PARAMETERS: dict[str, Param] = {
    "robot": Param("nicol", "robot profile name (config/robots) or path to a profile YAML"),
    "task": Param("push", "task family: reach | push | separate | pick | stack"),
    "variant": Param("nominal", "scene variant: nominal | ood_colors | ood_table | ood_distractor"),
    "seed": Param(0, "episode seed of the first episode", non_negative, ">= 0"),
    "image_width": Param(64, "rendered image width, px", positive, "> 0"),
    "image_height": Param(64, "rendered image height, px", positive, "> 0"),
    "cameras": Param(["overhead"], "profile cameras to render and publish"),
    "headless": Param(True, "no viewer window (a viewer is not available in this build)"),
    "real_time_factor": Param(1.0, "sim seconds per wall second; 0 = as fast as possible", non_negative, ">= 0"),
    "physics_step": Param(0.01, "sim seconds advanced per loop iteration (the trajectory sampling period)",
                          lambda x: 0 < x <= 0.1, "in (0, 0.1]"),
    "publish_clock": Param(False, "publish /clock and stamp with sim time (set with use_sim_time)"),
    "camera_rate_hz": Param(10.0, "image + camera info rate, in sim time", positive, "> 0"),
    "joint_state_rate_hz": Param(50.0, "/joint_states rate, in sim time", positive, "> 0"),
    "world_state_rate_hz": Param(10.0, "world_state rate, in sim time", positive, "> 0"),
    "lockstep": Param(True, "with real_time_factor 0: advance only while a trajectory runs, else wait for one"),
    "lockstep_settle": Param(0.1, "s of sim time run past a trajectory's end (and per timed-out wait) in lockstep",
                             positive, "> 0"),
    "lockstep_timeout": Param(0.5, "wall s to wait for a trajectory in lockstep before time moves on anyway",
                              positive, "> 0"),
}


class Rate:
    """Fires every `period` seconds of a given (sim) time; never bursts to catch up."""

    def __init__(self, hz: float) -> None:
        self.period, self.next = 1.0 / hz, 0.0

    def due(self, t: float) -> bool:
        if t + 1e-9 < self.next:
            return False
        self.next = max(self.next + self.period, t)
        return True

    def force(self, t: float) -> bool:
        """Fire now (e.g. before a lockstep pause) and restart the period from `t`."""
        self.next = t + self.period
        return True


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        self.p = declare_parameters(self, PARAMETERS)
        if self.p.real_time_factor == 0 and not self.p.publish_clock:
            raise StartupError("real_time_factor 0 (as fast as possible) needs publish_clock true: "
                               "without /clock, sim time means nothing to the other nodes")
        from swm_ros.envs import make_env

        self._running = threading.Event()

        self.profile = load_profile(self.p.robot)
        unknown = [c for c in self.p.cameras if c not in self.profile.cameras]
        if unknown:
            raise StartupError(f"cameras {unknown} not in profile {self.profile.name!r} "
                               f"(has {sorted(self.profile.cameras)})")
        if not self.p.headless:
            self.get_logger().warning("headless:=false: no viewer in this build; running headless")
        if self.p.real_time_factor not in (0.0, 1.0) and not self.p.publish_clock:
            self.get_logger().warning("real_time_factor != 1 without publish_clock: trajectories are timed "
                                      "in wall time while the physics runs at another speed")
        self._lock = threading.Lock()           # guards the active trajectory and targets
        self._traj: TimedTrajectory | None = None
        self._sim_time = 0.0                     # monotonic across resets: the /clock time
        self._episode_start = 0.0
        self._seed, self._episode = self.p.seed, 0
        self._rng = np.random.default_rng(self.p.seed)
        self._rejected = 0
        self._last_reject = ""
        self._lockstep = self.p.real_time_factor == 0 and self.p.lockstep
        self._command = threading.Event()        # lockstep: a trajectory or a request arrived
        self._run_until = self.p.lockstep_settle  # lockstep: sim time to advance to even without a trajectory
        self._lockstep_waits = self._lockstep_timeouts = 0
        self._chunks_pending = 0                 # lockstep: chunks seen whose trajectory has not arrived
        self._pending_since = 0.0                # wall time of the oldest of them
        self._speed_mark = (time.monotonic(), 0.0)   # (wall, sim) at the last diagnostics: measured speed
        # MuJoCo's EGL context belongs to the thread that made it: the env is built, stepped,
        # rendered and reset only in the physics thread; services hand work to it.
        self._requests: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        ready = threading.Event()
        self._startup_error: Exception | None = None
        self._thread = threading.Thread(target=self._loop, args=(make_env, ready), name="sim_loop", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=120.0):
            self._stop.set()
            raise StartupError("the environment did not come up within 120 s")
        if self._startup_error is not None:
            raise StartupError(f"cannot build the environment: {self._startup_error}") from self._startup_error
        self.joint_names = tuple(self.env.joint_names)
        self._targets = np.asarray(self.env.joint_positions(), dtype=np.float64)

        self.pub_clock = self.create_publisher(Clock, "/clock", qos.CLOCK) if self.p.publish_clock else None
        self.pub_js = self.create_publisher(JointState, "/joint_states", qos.STATE)
        self.pub_task = self.create_publisher(TaskInfo, "task_info", qos.LATCHED)
        self.pub_world = self.create_publisher(WorldState, "world_state", qos.STATE)
        self.cams = {}
        for name in self.p.cameras:
            spec = self.profile.cameras[name]
            self.cams[name] = (spec,
                               self.create_publisher(Image, spec.topic, qos.SENSOR),
                               self.create_publisher(CameraInfo, spec.info_topic, qos.SENSOR))
        cb = MutuallyExclusiveCallbackGroup()
        self.create_subscription(JointTrajectory, f"{self.profile.controller.arm_controller}/joint_trajectory",
                                 self._on_trajectory, qos.COMMAND, callback_group=cb)
        self.create_service(ResetEpisode, "~/reset", self._on_reset, callback_group=cb)
        if self._lockstep:
            self.create_subscription(ActionChunk, "action_chunk", self._on_chunk_seen, qos.COMMAND, callback_group=cb)
        self._diag = Diagnostics(self, "simulation", f"mujoco/{self.profile.name}", self._diagnostics)

        self._publish_task_info()
        self._running.set()       # publishers exist: the physics loop may start stepping
        self.get_logger().info(
            f"{self.profile.name} {self.p.task}/{self.p.variant} seed {self.p.seed}; cameras {list(self.cams)} "
            f"{self.p.image_width}x{self.p.image_height}; real_time_factor {self.p.real_time_factor}"
            f"{' (lockstep)' if self._lockstep else ''}; "
            f"commands on {self.resolve_topic_name(self.profile.controller.arm_controller + '/joint_trajectory')}")

    # ------------------------------------------------------------------ time

    def _stamp(self):
        """Sim time when we are the clock, ROS (wall) time otherwise."""
        if self.p.publish_clock:
            return conv.to_time(self._sim_time)
        return self.get_clock().now().to_msg()

    def _now(self) -> float:
        """The time trajectories are scheduled in: the same clock as the stamps."""
        if self.p.publish_clock:
            return self._sim_time
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ physics loop

    def _loop(self, make_env, ready: threading.Event) -> None:
        try:
            self.env = make_env(robot=self.p.robot, task=self.p.task, variant=self.p.variant,
                                image_size=(self.p.image_height, self.p.image_width),
                                cameras=tuple(self.p.cameras), seed=self.p.seed)
            self.env.reset(seed=self.p.seed, task=self.p.task, variant=self.p.variant)
        except Exception as e:  # noqa: BLE001 - reported by the constructor as a start-up error
            self._startup_error = e
            ready.set()
            return
        ready.set()
        while not self._running.wait(0.1):
            if self._stop.is_set():
                return
        rates = (Rate(self.p.joint_state_rate_hz), Rate(self.p.camera_rate_hz), Rate(self.p.world_state_rate_hz))
        wall0, sim0 = time.monotonic(), self._sim_time
        dt = self.p.physics_step
        paused = False
        while not self._stop.is_set():
            try:
                if self._lockstep:
                    self._command.clear()   # before looking: a command arriving after this wakes the wait
                self._serve_requests()
                if self._lockstep and not self._advancing():
                    if not paused:          # what the policy will plan from: the state sim time stops at
                        self._publish(*rates, force=True)
                        paused = True
                        self._lockstep_waits += 1
                    if not self._command.wait(self.p.lockstep_timeout):
                        self._lockstep_timeouts += 1
                        self._run_until = self._sim_time + self.p.lockstep_settle
                    continue
                paused = False
                with self._lock:
                    self._step(dt)
                self._publish(*rates)
            except Exception as e:  # noqa: BLE001 - on shutdown publishers vanish under us
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return
                self.get_logger().error(f"sim loop: {e!r}", throttle_duration_sec=2.0)
            if self.p.real_time_factor > 0:
                ahead = (self._sim_time - sim0) / self.p.real_time_factor - (time.monotonic() - wall0)
                if ahead > 0:
                    self._stop.wait(ahead)
                elif ahead < -0.5:   # cannot keep up: run behind, do not try to catch up in a burst
                    self.get_logger().warning(f"sim runs {-ahead:.2f} s behind real time",
                                              throttle_duration_sec=5.0)
                    wall0, sim0 = time.monotonic(), self._sim_time
        self.env.close()

    def _advancing(self) -> bool:
        """Lockstep: no chunk awaits its trajectory, and a trajectory is running (or settling)
        or time was told to move on."""
        with self._lock:
            if self._chunks_pending:
                if time.monotonic() - self._pending_since < self.p.lockstep_timeout:
                    return False
                self._chunks_pending = 0     # rejected by the controller, or lost: stop waiting for it
                self._lockstep_timeouts += 1
            end = self._traj.end if self._traj is not None else -1.0
            return self._sim_time + 1e-9 < max(end + self.p.lockstep_settle, self._run_until)

    def _on_chunk_seen(self, _msg: ActionChunk) -> None:
        """Lockstep: a trajectory is on its way; hold time until it arrives."""
        with self._lock:
            if not self._chunks_pending:
                self._pending_since = time.monotonic()
            self._chunks_pending += 1

    def _serve_requests(self) -> None:
        while not self._requests.empty():
            fn, done, box = self._requests.get_nowait()
            try:
                box["result"] = fn()
            except Exception as e:  # noqa: BLE001 - handed back to the caller
                box["error"] = e
            done.set()

    def _in_sim_thread(self, fn, timeout: float = 30.0):
        """Run `fn` in the physics thread between two steps; return its result or raise its error."""
        done, box = threading.Event(), {}
        self._requests.put((fn, done, box))
        self._command.set()     # wake a lockstep wait
        if not done.wait(timeout):
            raise TimeoutError("the physics thread did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _step(self, dt: float) -> None:
        if self._traj is not None:
            self._targets = self._traj.sample(self._now())
        self.env.set_joint_targets(self._targets)
        self.env.advance(dt)
        # rounded to whole nanoseconds: summed 0.01 steps give 2.9999999999..., which
        # conversions.to_time would stamp as 2.0 s (a clock jump backwards)
        self._sim_time = round(self._sim_time + dt, 9)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=conv.to_time(self._sim_time)))

    def _publish(self, js_rate: Rate, cam_rate: Rate, world_rate: Rate, force: bool = False) -> None:
        t = self._sim_time
        stamp = self._stamp()
        if force:
            for rate in (js_rate, cam_rate, world_rate):
                rate.force(t)
        if force or js_rate.due(t):
            self.pub_js.publish(conv.joint_state(self.joint_names, self.env.joint_positions(),
                                                 self.env.joint_velocities(), stamp))
        if force or cam_rate.due(t):
            w, h = self.p.image_width, self.p.image_height
            for name, (spec, pub_img, pub_info) in self.cams.items():
                rgb = self.env.render(name, w, h)
                pub_img.publish(conv.numpy_to_image(rgb, "rgb8", stamp, spec.frame_id))
                pub_info.publish(conv.camera_info(w, h, spec.fovy_deg, spec.frame_id, stamp))
        if force or world_rate.due(t):
            # step = control periods since the episode started (the env's own counter only
            # advances through its action-level `step`, which this node does not use)
            steps = int((t - self._episode_start) / self.env.control_dt + 1e-6)
            state = dataclasses.replace(self.env.privileged_state(), step=steps, time=t - self._episode_start)
            self.pub_world.publish(conv.world_state(state, self.env.success(), stamp))

    # ------------------------------------------------------------------ commands

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            names, times, positions = conv.trajectory_arrays(msg)
            unknown = [n for n in names if n not in self.joint_names]
            if unknown:
                raise ValueError(f"unknown joint(s) {unknown}; this robot has {list(self.joint_names)}")
        except ValueError as e:
            self._rejected += 1
            self._last_reject = str(e)
            self.get_logger().error(f"trajectory rejected, holding the current motion: {e}")
            return
        idx = [self.joint_names.index(n) for n in names]
        with self._lock:
            q_now = self._targets.copy()          # interpolate from the commanded state, as JTC does
            full = np.tile(q_now, (len(times), 1))
            full[:, idx] = positions
            stamp = conv.to_seconds(msg.header.stamp)
            start = stamp if stamp > 0 else self._now()   # stamp 0 = start now
            # a new trajectory replaces the old one ("forgets" it, Jazzy JTC)
            self._traj = TimedTrajectory(start, q_now, times, full)
            self._chunks_pending = max(0, self._chunks_pending - 1)
            self._pending_since = time.monotonic()
        self._command.set()     # lockstep: time may move again

    def _on_reset(self, req: ResetEpisode.Request, res: ResetEpisode.Response) -> ResetEpisode.Response:
        seed = int(req.seed) if req.seed >= 0 else int(self._rng.integers(0, 2**31 - 1))
        def reset() -> None:
            self.env.reset(seed=seed, task=req.task or None, variant=req.variant or None)
            with self._lock:
                self._traj = None
                self._targets = np.asarray(self.env.joint_positions(), dtype=np.float64)
                self._episode_start = self._sim_time
                self._run_until = self._sim_time + self.p.lockstep_settle   # publish the new scene
            self._seed = seed
            self._episode += 1

        try:
            self._in_sim_thread(reset)
        except Exception as e:  # noqa: BLE001 - unknown task / variant: report, keep running
            res.success, res.message = False, f"reset failed: {e}"
            self.get_logger().error(res.message)
            return res
        res.task_info = self._publish_task_info()
        res.success, res.message = True, f"episode {self._episode}: {self.env.task.instruction} (seed {seed})"
        self.get_logger().info(res.message)
        return res

    def _publish_task_info(self) -> TaskInfo:
        msg = conv.task_info(self.env.task, self._seed, self._episode, self._stamp())
        self.pub_task.publish(msg)
        return msg

    def _diagnostics(self):
        wall, sim = time.monotonic(), self._sim_time
        speed = (sim - self._speed_mark[1]) / max(wall - self._speed_mark[0], 1e-9)
        self._speed_mark = (wall, sim)
        values = {"sim_time": f"{self._sim_time:.2f}", "episode": self._episode, "seed": self._seed,
                  "sim_seconds_per_wall_second": f"{speed:.2f}", "lockstep": self._lockstep,
                  "lockstep_waits": self._lockstep_waits, "lockstep_timeouts": self._lockstep_timeouts,
                  "rejected_trajectories": self._rejected, "last_rejection": self._last_reject}
        return Diagnostics.OK, "running", values

    def destroy_node(self) -> None:
        # stop physics before the publishers it uses are destroyed
        if hasattr(self, "_stop"):
            self._stop.set()
            self._command.set()      # wake a lockstep wait now, not after lockstep_timeout
            self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, args, threads=2)


if __name__ == "__main__":
    raise SystemExit(main())
