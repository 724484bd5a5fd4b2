"""`swm bag ...`: record, replay, eval, info, to-episodes, from-episodes (arguments in cli_args)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from swm_ros.bags.reader import BagError


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _ros_list(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def cli_bag_record(args: Any) -> int:
    from swm_ros.ros.bag_recorder_node import main

    ros = ["--ros-args", "-p", f"output:={args.out}", "-p", f"robot:={args.robot}",
           "-p", f"max_duration:={float(args.duration or 0.0)}", "-p", f"all_topics:={str(args.all).lower()}",
           "-p", f"use_sim_time:={str(args.use_sim_time).lower()}"]
    if args.topics:
        ros += ["-p", f"topics:={_ros_list(_split(args.topics))}"]
    if args.exclude:
        ros += ["-p", f"exclude:={_ros_list(_split(args.exclude))}"]
    if args.namespace:
        ros += ["-r", f"__ns:=/{args.namespace.strip('/')}"]
    return main(ros)


def cli_bag_replay(args: Any) -> int:
    from swm_ros.ros.bag_player_node import main

    ros = ["--ros-args", "-p", f"bag:={args.bag}", "-p", f"rate:={float(args.rate)}",
           "-p", f"publish_clock:={str(not args.no_clock).lower()}",
           "-p", f"min_subscribers:={args.min_subscribers}", "-p", f"wait_timeout:={float(args.wait_timeout)}",
           "-p", f"allow_partial:={str(args.allow_partial).lower()}"]
    if args.topics:
        ros += ["-p", f"topics:={_ros_list(_split(args.topics))}"]
    for rule in args.remap or []:
        ros += ["-r", rule]
    return main(ros)


def cli_bag_info(args: Any) -> int:
    from swm_ros.bags.reader import BagReader

    try:
        bag = BagReader(args.bag, allow_partial=args.allow_partial)
        report = bag.count_messages() if args.count else None
        info = bag.describe()
    except BagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if report is not None:
        info["read"] = dict(report.counts)
        info["problems"] = list(bag.problems)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bag {info['path']}  (metadata version {info['metadata_version']}, files {info['files']})")
    print(f"duration {info['duration_s']:.3f} s, {info['message_count']} messages")
    for t in info["topics"]:
        read = f", read {info['read'].get(t['name'], 0)}" if report is not None else ""
        dec = "" if t["decodable"] else "  [type cannot be decoded here]"
        print(f"  {t['name']:45s} {t['type']:40s} {t['count']}{read}  {' '.join(t['qos'])}{dec}")
    for p in info["problems"]:
        print(f"PARTIAL: {p}")
    for n in info["notes"]:
        print(f"note: {n}")
    return 1 if info["problems"] and not args.allow_partial else 0


def _topics(args: Any):
    from swm_ros.bags.episodes import BagTopics

    t = BagTopics.for_robot(args.robot, args.camera, getattr(args, "namespace", "") or "")
    overrides = {k: getattr(args, f"{k}_topic") for k in ("image", "world_state", "action_chunk", "joint_states",
                                                          "task_info") if getattr(args, f"{k}_topic", None)}
    return BagTopics(**{**t.__dict__, **overrides})


def cli_bag_to_episodes(args: Any) -> int:
    from swm_ros.bags.episodes import bag_to_episodes

    try:
        result = bag_to_episodes(args.bag, args.out, args.robot, _topics(args), compression=args.compression)
    except (BagError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def cli_bag_from_episodes(args: Any) -> int:
    from swm_ros.bags.episodes import episodes_to_bag, list_episode_files

    try:
        result = episodes_to_bag(list_episode_files(args.episodes), args.out, args.robot, _topics(args))
    except (BagError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _json_stdout() -> TextIO:
    """A stream on the real stdout for the one JSON document, with file descriptor 1 itself sent
    to stderr: DDS libraries in this process write their own diagnostics to fd 1 (Fast DDS's
    "[RTPS_TRANSPORT_SHM Error] ..." when a shared-memory port is busy), which broke
    `--json | jq` and a test that parses the output."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return real


def cli_bag_eval(args: Any) -> int:
    from swm_ros.bags.evaluate import EvalConfig, evaluate_bag, write_report
    from swm_ros.bags.graph_eval import GraphEvalConfig, evaluate_bag_in_graph
    from swm_ros.bags.plan_agreement import AgreementConfig

    json_out = _json_stdout() if args.json and args.graph else sys.stdout
    cfg = EvalConfig(horizons_per_start=args.horizons_per_start, max_horizon=args.max_horizon,
                     start_stride=args.stride, seed=args.seed, max_frames=args.max_frames,
                     max_seconds=args.max_seconds)
    try:
        agreement = (AgreementConfig(planner=args.planner, policy=args.policy, proposals=args.proposals,
                                     plan_every=args.plan_every, camera=args.camera, seed=args.seed)
                     if args.planner and not args.graph else None)
        result = evaluate_bag(args.bag, args.checkpoint, args.robot, _topics(args), cfg, progress=not args.json,
                              agreement=agreement)
        if args.graph:
            gcfg = GraphEvalConfig(planner=args.planner or "grad", policy=args.policy, proposals=args.proposals,
                                   execute_steps=args.execute_steps, rate=args.rate,
                                   world_model=args.checkpoint or "tiny", log_dir=f"{args.out}/logs")
            result["graph"] = evaluate_bag_in_graph(args.bag, args.robot, _topics(args), gcfg,
                                                    progress=not args.json)
    except (BagError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    paths = write_report(result, args.out)
    if args.json:
        summary = {k: v for k, v in result.items() if k not in ("latency_ms", "graph")}
        summary["latency_ms"] = {k: v for k, v in result["latency_ms"].items() if k != "per_frame"}
        if "graph" in result:
            summary["graph"] = {k: v for k, v in result["graph"].items() if k != "rows"}
        print(json.dumps(summary), file=json_out, flush=True)
    else:
        print(paths["md"].read_text())
    return 0
