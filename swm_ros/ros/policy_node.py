"""policy_node: observations in, action chunks out, through the core `Policy` interface.

  subscribes <camera.topic>        sensor_msgs/Image (sensor QoS)
             /joint_states         sensor_msgs/JointState (proprioception)
             world_state           swm_ros/WorldState (privileged: scripted experts only)
             task_info             swm_ros/TaskInfo (latched)
             controller_ready      std_msgs/Bool (replan as soon as the arm is idle)
  publishes  action_chunk          swm_ros/ActionChunk (the chunk to execute: proposal 0)
             action_proposals      swm_ros/ActionProposals (all `num_proposals`, for a planner)

Planning runs in its own callback group on a MultiThreadedExecutor, so a slow policy never
blocks the subscriptions; it is triggered by `controller_ready`, a new episode, and a
`replan_period` timer (0: no timer, plans only from an idle arm; what a lockstep simulation
wants, since its time runs while a trajectory does). Inputs older than `max_observation_age`
(by stamp) make it skip, with a warning; a skipped plan is retried every `RETRY_PERIOD` wall
seconds until one goes out, so a `controller_ready` that came before the first image is not lost.
One that never arrived (sent before DDS matched) is repeated by the controller while unanswered.
"""
from __future__ import annotations

import inspect
import threading

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool

from swm_ros.envs.base import ACTION_NAMES, Observation, proprio_vector
from swm_ros.msg import ActionChunk, ActionProposals, TaskInfo, WorldState
from swm_ros.robots.kinematics import ArmKinematics
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import (Param, StartupError, declare_parameters, load_profile, non_negative,
                                    one_of, positive, run_node)

_POLICY_CHECK, _POLICY_RULE = one_of("scripted", "noisy", "random", "learned")

PARAMETERS: dict[str, Param] = {
    "robot": Param("nicol", "robot profile name (config/robots) or path to a profile YAML"),
    "policy": Param("scripted", "base policy", _POLICY_CHECK, _POLICY_RULE),
    "camera": Param("overhead", "profile camera whose image the policy sees"),
    "chunk_length": Param(16, "actions per proposed chunk", positive, "> 0"),
    "num_proposals": Param(1, "chunks proposed per observation (published on action_proposals)", positive, "> 0"),
    "replan_period": Param(0.5, "s between plans while the controller does not report ready; 0 = no timer",
                           non_negative, ">= 0"),
    "replan_on_ready": Param(True, "plan as soon as controller_ready arrives"),
    "max_observation_age": Param(1.0, "s: older inputs are stale and planning is skipped", positive, "> 0"),
    "use_privileged_state": Param(True, "wait for world_state and give it to the policy (scripted experts)"),
    "image_width": Param(0, "expected image width, px; 0 = any", non_negative, ">= 0"),
    "image_height": Param(0, "expected image height, px; 0 = any", non_negative, ">= 0"),
    "stop_on_success": Param(True, "publish nothing once world_state reports success"),
    "seed": Param(0, "policy seed (noisy / random / learned)", non_negative, ">= 0"),
    "checkpoint": Param("", "learned policy: checkpoint directory ('' = the shipped weights)"),
}


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.p = declare_parameters(self, PARAMETERS)
        self.profile = load_profile(self.p.robot, self.p.camera)
        self.policy = self._make_policy()
        self.joint_names = self.profile.joint_names
        self.kin = ArmKinematics(self.profile)
        self._lock = threading.Lock()
        self._image: tuple[float, np.ndarray] | None = None      # (stamp, rgb)
        self._joints: tuple[float, np.ndarray] | None = None
        self._world: tuple[float, WorldState] | None = None
        self._task: TaskInfo | None = None
        self._task_key: tuple | None = None
        self._planning = threading.Lock()
        self.bad_images = 0

        cam = self.profile.cameras[self.p.camera]
        inputs, plan = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, cam.topic, self._on_image, qos.SENSOR, callback_group=inputs)
        self.create_subscription(JointState, self.profile.controller.joint_states_topic, self._on_joints,
                                 qos.STATE, callback_group=inputs)
        self.create_subscription(WorldState, "world_state", self._on_world, qos.STATE, callback_group=inputs)
        self.create_subscription(TaskInfo, "task_info", self._on_task, qos.LATCHED, callback_group=inputs)
        self.create_subscription(Bool, "controller_ready", self._on_ready, qos.COMMAND, callback_group=plan)
        self.pub_chunk = self.create_publisher(ActionChunk, "action_chunk", qos.COMMAND)
        self.pub_props = self.create_publisher(ActionProposals, "action_proposals", qos.COMMAND)
        self.timer = (self.create_timer(self.p.replan_period, self._plan, callback_group=plan)
                      if self.p.replan_period > 0 else None)
        # retries run on wall time: sim time may stand still until a chunk goes out (lockstep)
        self._retry = self.create_timer(self.RETRY_PERIOD, self._plan, callback_group=plan,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME), autostart=False)
        # a new episode starts the loop at once: the controller is idle and sends no "ready"
        # (one-shot, EPISODE_KICK s later, so the new episode's first world_state is in)
        self._kick = self.create_timer(self.EPISODE_KICK, self._on_kick, callback_group=plan)
        self._kick.cancel()
        self.get_logger().info(f"policy {self.p.policy!r}, {self.p.num_proposals} proposal(s), image from "
                               f"{self.resolve_topic_name(cam.topic)}")

    def _make_policy(self):
        from swm_ros.policies.scripted import POLICIES, make_policy

        # Each policy takes the subset of these it understands (a random policy has no profile).
        offered = {"profile": self.profile, "chunk_length": self.p.chunk_length, "seed": self.p.seed,
                   "checkpoint": self.p.checkpoint or None}
        try:
            accepted = inspect.signature(POLICIES[self.p.policy]).parameters
            return make_policy(self.p.policy, **{k: v for k, v in offered.items() if k in accepted})
        except Exception as e:  # noqa: BLE001
            raise StartupError(f"cannot build policy {self.p.policy!r}: {e}") from e

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ inputs

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = conv.image_to_rgb(msg)
            w, h = self.p.image_width, self.p.image_height
            if (w and msg.width != w) or (h and msg.height != h):
                raise conv.ImageError(f"image is {msg.width}x{msg.height}, this policy expects {w or 'any'}x{h or 'any'}")
        except conv.ImageError as e:
            self.bad_images += 1
            self.get_logger().error(f"image dropped: {e}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._image = (conv.to_seconds(msg.header.stamp), rgb)

    def _on_joints(self, msg: JointState) -> None:
        q = conv.joint_positions_in_order(msg, self.joint_names)
        if q is not None:
            with self._lock:
                self._joints = (conv.to_seconds(msg.header.stamp), q)

    def _on_world(self, msg: WorldState) -> None:
        with self._lock:
            self._world = (conv.to_seconds(msg.header.stamp), msg)

    EPISODE_KICK = 0.2
    RETRY_PERIOD = 0.1

    def _on_task(self, msg: TaskInfo) -> None:
        with self._lock:
            new_episode = self._task is not None and self._task.episode != msg.episode
            self._task = msg
        self.get_logger().info(f"task: {msg.instruction} (episode {msg.episode}, seed {msg.seed})")
        if new_episode and self.p.replan_on_ready:
            self._kick.reset()

    def _on_kick(self) -> None:
        self._kick.cancel()
        self._restart_timer()
        self._plan()

    def _on_ready(self, msg: Bool) -> None:
        if msg.data and self.p.replan_on_ready:
            self._restart_timer()
            self._plan()

    def _restart_timer(self) -> None:
        if self.timer is not None:
            self.timer.reset()

    # ------------------------------------------------------------------ planning

    def _stale(self, now: float) -> str:
        """Why the inputs cannot be used now ('' if they can)."""
        need = {"image": self._image, "joint_states": self._joints}
        if self.p.use_privileged_state:
            need["world_state"] = self._world
        for name, item in need.items():
            if item is None:
                return f"no {name} yet"
            age = now - item[0]
            if age > self.p.max_observation_age:
                return f"{name} is {age:.2f} s old (max {self.p.max_observation_age:g} s)"
        if self._task is None:
            return "no task_info yet"
        return ""

    def _plan(self) -> None:
        if not self._planning.acquire(blocking=False):
            return   # a plan is running (timer and ready fired together)
        try:
            if self._plan_once():
                self._retry.cancel()
            elif self._retry.is_canceled():
                self._retry.reset()
        finally:
            self._planning.release()

    def _plan_once(self) -> bool:
        """One plan; False if the inputs were not there or too old (worth retrying soon)."""
        now = self._now()
        with self._lock:
            why = self._stale(now)
            if why:
                self.get_logger().warning(f"skipping plan: {why}", throttle_duration_sec=2.0)
                return False
            image, joints, world, task = self._image[1], self._joints[1], self._world, self._task
        key = (task.episode, task.name, tuple(task.objects), task.seed)
        spec = conv.task_spec(task)
        if key != self._task_key:
            try:
                self.policy.reset(spec, seed=int(task.seed))
            except ValueError as e:    # e.g. a learned policy given a block colour it never saw
                self.get_logger().error(f"policy cannot take task {task.instruction!r}: {e}", throttle_duration_sec=2.0)
                return True
            self._task_key = key
        state = None
        if world is not None:
            if self.p.stop_on_success and world[1].success:
                self.get_logger().info("task reported successful: not planning", throttle_duration_sec=5.0)
                return True
            state = conv.privileged_state(world[1], joints, self.profile.table.height, world[0])
        obs = Observation(images={self.p.camera: image}, proprio=self._proprio(joints, state),
                          step=int(world[1].step) if world else 0, time=now, state=state)
        try:
            proposals = np.asarray(self.policy.propose(obs, self.p.num_proposals), dtype=np.float32)
        except ValueError as e:        # an input the policy cannot use (wrong camera, proprio size): skip
            self.get_logger().error(f"policy refused the observation: {e}", throttle_duration_sec=2.0)
            return True
        if proposals.ndim != 3 or proposals.shape[2] != len(ACTION_NAMES):
            self.get_logger().error(f"policy returned shape {proposals.shape}, expected (n, H, {len(ACTION_NAMES)})")
            return True
        stamp = self.get_clock().now().to_msg()
        chunks = [conv.action_chunk(c, ACTION_NAMES, self.profile.control_dt, self.p.policy, spec.name, stamp)
                  for c in proposals]
        props = ActionProposals(chunks=chunks)
        props.header.stamp = stamp
        self.pub_props.publish(props)
        self.pub_chunk.publish(chunks[0])
        return True

    def _proprio(self, joints: np.ndarray, state) -> np.ndarray:
        """Observation.proprio from the simulator's state, or, on a real robot, from the joints."""
        if state is not None:
            return proprio_vector(joints, state.effector_position, state.effector_yaw, state.gripper_opening)
        pose = self.kin.fk(joints[:-1])
        return proprio_vector(joints, pose.position, pose.yaw, self.profile.gripper.opening(joints[-1]))


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args, threads=2)


if __name__ == "__main__":
    raise SystemExit(main())
