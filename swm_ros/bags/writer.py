"""Writing rosbag2 bags: a directory with metadata.yaml (version 9) and one MCAP file.

`BagWriter` wraps rosbags' writer (the layout Jazzy's rosbag2 MCAP plugin writes: profile
`ros2`, `ros2msg` schemas, `offered_qos_profiles` channel metadata, a `rosbag2` metadata
record) with the project's Jazzy type store, so swm_ros/* messages carry their definitions.

Messages are written as raw CDR exactly as received; nothing is re-serialised. `close()`
finalises the MCAP summary and writes metadata.yaml; until then a crash leaves an MCAP file
without metadata that `BagReader` can still read up to the damage, marked partial.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from swm_ros.bags.typestore import ensure_type, jazzy_typestore

METADATA_VERSION = 9                  # Jazzy and Kilted rosbag2 write and read version 9
INFINITE = {"sec": 9223372036, "nsec": 854775807}   # RMW_DURATION_INFINITE, as rosbag2 writes it


def qos_from_dict(d: Mapping[str, Any]) -> Qos:
    """A rosbags Qos from the plain dict form (enum names, {sec, nsec} durations)."""
    def t(v: Mapping[str, int] | None) -> QosTime:
        v = v or INFINITE
        return QosTime(int(v["sec"]), int(v["nsec"]))

    return Qos(QosHistory[str(d.get("history", "keep_last")).upper()], int(d.get("depth", 0)),
               QosReliability[str(d.get("reliability", "reliable")).upper()],
               QosDurability[str(d.get("durability", "volatile")).upper()],
               t(d.get("deadline")), t(d.get("lifespan")),
               QosLiveliness[str(d.get("liveliness", "automatic")).upper()],
               t(d.get("liveliness_lease_duration")), bool(d.get("avoid_ros_namespace_conventions", False)))


class BagWriter:
    """Open with a path that does not exist yet; add topics; write raw messages; close."""

    def __init__(self, path: str | Path, custom_data: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.store = jazzy_typestore()
        self._writer = Writer(self.path, version=METADATA_VERSION, storage_plugin=StoragePlugin.MCAP)
        for k, v in (custom_data or {}).items():
            self._writer.set_custom_data(str(k), str(v))
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[Mapping[str, Any] | Qos] = (),
                  definition: str | None = None, type_hash: str | None = None) -> None:
        """Register a topic before writing to it. `offered_qos`: the publishers' real profiles."""
        if topic in self._connections:
            return
        ensure_type(self.store, msgtype, definition)
        qos = [q if isinstance(q, Qos) else qos_from_dict(q) for q in offered_qos]
        msgdef, _ = self.store.generate_msgdef(msgtype, ros_version=2)
        rihs01 = type_hash or self.store.hash_rihs01(msgtype)
        self._connections[topic] = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=rihs01,
                                                               offered_qos_profiles=qos)
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic], int(timestamp_ns), data)
        self.counts[topic] += 1

    def write_message(self, topic: str, timestamp_ns: int, message: Any, msgtype: str) -> None:
        """Serialise a rosbags message object (conversion from episodes) and write it."""
        self.write(topic, timestamp_ns, self.store.serialize_cdr(message, msgtype))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, *exc: Any) -> None:
        # Even on an exception, finalise: what was written stays readable.
        self.close()
