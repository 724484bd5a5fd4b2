"""`swm bench bags`: recording throughput and replay-evaluation speed, measured for real.

What it runs (three processes on one machine, DDS over loopback, a private ROS_DOMAIN_ID):

1. a publisher (this module, `--publisher`): the MuJoCo NicoL tabletop with the scripted
   expert on `push`, in simulated time paced at `speed` x real time, publishing /clock,
   224x224 rgb8 images + CameraInfo at 30 Hz (sensor QoS: best effort), /joint_states at
   50 Hz, world_state (privileged) and a one-action ActionChunk per 0.1 s control step and
   task_info at each reset. The env advances per control step, so each step is rendered
   once and that frame is published at the 30 Hz image times of the step;
2. `bag_recorder_node` with use_sim_time, recording those topics;
3. after `sim_seconds`, the publisher writes how many messages it sent per topic and exits;
   the recorder gets SIGINT and finalises the bag.

`recorded`: messages in the bag (read back and counted with BagReader); `dropped`: sent
minus recorded, over all topics (per topic in `topics`). Then `swm bag eval`'s function
runs the world model (`tiny`: the shipped weights, or an untrained tiny model of the same
size when none are shipped; speed does not depend on the weights) on the first
`eval_seconds` of the bag: `replay_eval_speedup` = bag seconds evaluated / wall seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

IMAGE_TOPIC = "/realsense/color/image_raw"
INFO_TOPIC = "/realsense/color/camera_info"
TOPICS = [IMAGE_TOPIC, INFO_TOPIC, "/joint_states", "/world_state", "/action_chunk", "/task_info"]
TICK_HZ = 150          # common multiple of the 30 / 50 / 10 Hz streams: every stream lands on a tick


def run_publisher(sim_seconds: float, speed: float, size: int, image_rate: float, counts_path: str) -> int:
    """The publisher process (imports rclpy: it is a ROS node in all but module location)."""
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from swm_ros.envs import make_env
    from swm_ros.envs.base import ACTION_NAMES
    from swm_ros.msg import ActionChunk, TaskInfo, WorldState
    from swm_ros.policies.scripted import ScriptedExpertPolicy
    from swm_ros.ros import conversions as conv
    from swm_ros.ros import qos

    rclpy.init()
    node = Node("bags_bench_publisher", parameter_overrides=[])
    env = make_env(task="push", image_size=(size, size), cameras=("overhead",), seed=0)
    policy = ScriptedExpertPolicy(env.profile)
    cam = env.profile.cameras["overhead"]
    pubs = {IMAGE_TOPIC: node.create_publisher(Image, IMAGE_TOPIC, qos.SENSOR),
            INFO_TOPIC: node.create_publisher(CameraInfo, INFO_TOPIC, qos.SENSOR),
            "/joint_states": node.create_publisher(JointState, "/joint_states", qos.STATE),
            "/world_state": node.create_publisher(WorldState, "/world_state", qos.STATE),
            "/action_chunk": node.create_publisher(ActionChunk, "/action_chunk", qos.COMMAND),
            "/task_info": node.create_publisher(TaskInfo, "/task_info", qos.LATCHED)}
    clock = node.create_publisher(Clock, "/clock", qos.CLOCK)
    sent = {t: 0 for t in pubs}
    deadline = time.monotonic() + 60
    while any(p.get_subscription_count() < 1 for p in pubs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)          # handshake: the recorder has subscribed to every topic
    time.sleep(0.5)

    def publish(topic: str, msg) -> None:
        pubs[topic].publish(msg)
        sent[topic] += 1

    seed, episode = 0, 0
    obs = env.reset(seed=seed)
    policy.reset(env.task, seed)
    chunk, k_in_chunk, announced = None, 0, False
    img_every, js_every, step_every = TICK_HZ // int(image_rate), TICK_HZ // 50, TICK_HZ // 10
    ticks = int(round(sim_seconds * TICK_HZ))
    wall0 = time.monotonic()
    frame = None
    for k in range(ticks + 1):
        t = k / TICK_HZ
        stamp = conv.to_time(t)
        clock.publish(Clock(clock=stamp))
        if k % step_every == 0:
            if k > 0:            # one control step: the next action of the expert's chunk
                if chunk is None or k_in_chunk >= len(chunk):
                    chunk, k_in_chunk = policy.propose(obs, 1)[0], 0
                action = chunk[k_in_chunk]
                k_in_chunk += 1
                publish("/action_chunk", conv.action_chunk(action[None], ACTION_NAMES, env.control_dt, "scripted",
                                                           env.task.name, stamp))
                obs = env.step(action)
                if env.success() or obs.state.step >= env.task.max_steps:
                    seed, episode = seed + 1, episode + 1
                    obs = env.reset(seed=seed)
                    policy.reset(env.task, seed)
                    chunk = None
                    announced = False
            if not announced:
                publish("/task_info", conv.task_info(env.task, seed, episode, stamp))
                announced = True
            frame = obs.images["overhead"]
            state = env.privileged_state()
            publish("/world_state", conv.world_state(state, env.success(), stamp))
        if k % js_every == 0:
            publish("/joint_states", conv.joint_state(env.joint_names, env.joint_positions(), env.joint_velocities(),
                                                      stamp))
        if k % img_every == 0:
            publish(IMAGE_TOPIC, conv.numpy_to_image(frame, "rgb8", stamp, cam.frame_id))
            publish(INFO_TOPIC, conv.camera_info(size, size, cam.fovy_deg, cam.frame_id, stamp))
        ahead = wall0 + t / speed - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    wall = time.monotonic() - wall0
    time.sleep(1.0)               # let the reliable streams drain before the writers go away
    Path(counts_path).write_text(json.dumps({"sent": sent, "wall_seconds": wall, "sim_seconds": ticks / TICK_HZ,
                                             "episodes": episode + 1}))
    env.close()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", "97")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("RMW_IMPLEMENTATION", None)
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _eval_model(checkpoint: str | None):
    from swm_ros.models.registry import build_world_model, load_world_model
    from swm_ros.resources import config_path

    if checkpoint:
        return load_world_model(checkpoint), checkpoint
    try:
        return load_world_model("tiny"), "tiny (shipped weights)"
    except FileNotFoundError:
        import yaml

        cfg = yaml.safe_load(config_path("models", "tiny.yaml").read_text())
        return build_world_model("tiny", cfg), "tiny, untrained (no shipped weights yet; same compute)"


def run_bench(sim_seconds: float = 300.0, speed: float = 2.0, size: int = 224, image_rate: float = 30.0,
              eval_seconds: float = 60.0, checkpoint: str | None = None, keep: bool = False,
              work: str | Path = "runs/bench", eval_threads: int = 2) -> dict[str, Any]:
    from swm_ros.bags.evaluate import EvalConfig, evaluate_bag
    from swm_ros.bags.reader import BagReader

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    bag = work / "bags_bench_bag"
    shutil.rmtree(bag, ignore_errors=True)
    counts_path = work / "bags_bench_sent.json"
    env = _ros_env()
    logs = work / "bags_bench_logs"
    logs.mkdir(exist_ok=True)
    rec_log = open(logs / "recorder.log", "w")
    recorder = subprocess.Popen(
        [sys.executable, "-m", "swm_ros.ros.bag_recorder_node", "--ros-args", "-p", f"output:={bag}",
         "-p", f"topics:=[{','.join(TOPICS)}]", "-p", "use_sim_time:=true"],
        env=env, stdout=rec_log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    pub_log = open(logs / "publisher.log", "w")
    publisher = subprocess.run(
        [sys.executable, "-m", "swm_ros.benchmarks.bags_bench", "--publisher", str(sim_seconds), str(speed),
         str(size), str(image_rate), str(counts_path)], env=env, stdout=pub_log, stderr=subprocess.STDOUT)
    os.killpg(recorder.pid, signal.SIGINT)
    rc = recorder.wait(timeout=300)
    record_wall = time.monotonic() - t0
    if publisher.returncode != 0 or rc != 0:
        raise RuntimeError(f"publisher exit {publisher.returncode}, recorder exit {rc}; logs in {logs}")
    sent = json.loads(counts_path.read_text())
    reader = BagReader(bag)
    report = reader.count_messages()
    per_topic = {t: {"sent": sent["sent"][t], "recorded": report.counts.get(t, 0),
                     "dropped": sent["sent"][t] - report.counts.get(t, 0)} for t in TOPICS}
    size_bytes = sum(f.stat().st_size for f in bag.iterdir())
    model, model_name = _eval_model(checkpoint)
    # the evaluation runs alone once recording is over: it may use both cores
    ev = evaluate_bag(bag, model=model, cfg=EvalConfig(max_seconds=eval_seconds, threads=eval_threads),
                      progress=False)
    result = {
        "recorded": report.total,
        "dropped": sum(v["dropped"] for v in per_topic.values()),
        "replay_eval_speedup": ev["speedup"],
        "measured": (f"{sent['sim_seconds']:.0f} s of simulated time ({size}x{size} rgb8 images + CameraInfo at "
                     f"{image_rate:g} Hz best-effort, /joint_states 50 Hz, world_state + action chunks 10 Hz), "
                     f"published by a separate process at {speed:g}x real time and recorded by bag_recorder_node "
                     "(use_sim_time) over DDS; recorded = messages read back from the bag; dropped = sent - recorded. "
                     f"replay_eval_speedup = bag seconds / wall seconds of swm bag eval on the first "
                     f"{ev['bag_seconds']:.0f} s of that bag with {model_name}, {eval_threads} torch thread(s)"),
        "topics": per_topic,
        "sim_seconds": sent["sim_seconds"], "publish_wall_seconds": sent["wall_seconds"],
        "achieved_speed": sent["sim_seconds"] / sent["wall_seconds"], "record_wall_seconds": record_wall,
        "episodes": sent["episodes"], "bag_bytes": size_bytes, "bag": str(bag) if keep else None,
        "images_per_s_wall": per_topic[IMAGE_TOPIC]["recorded"] / sent["wall_seconds"],
        "replay_eval": {k: ev[k] for k in ("frames", "questions", "bag_seconds", "wall_seconds", "accuracy",
                                           "majority_baseline")}
                       | {"model": model_name, "latency_ms": {k: v for k, v in ev["latency_ms"].items()
                                                             if k != "per_frame"}},
        "bag_problems": list(reader.problems),
    }
    if not keep:
        shutil.rmtree(bag, ignore_errors=True)
    return result


def cli_bench_bags(args: Any) -> int:
    result = run_bench(args.sim_seconds, args.speed, args.image_size, args.image_rate, args.eval_seconds,
                       args.checkpoint, args.keep, eval_threads=args.eval_threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--publisher":
        raise SystemExit(run_publisher(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                                       float(sys.argv[5]), sys.argv[6]))
    raise SystemExit("usage: swm bench bags (this module's --publisher mode is started by the benchmark)")
