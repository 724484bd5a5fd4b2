"""Reading rosbag2 bags (MCAP storage) without ROS, seeing every message or saying why not.

    with BagReader("runs/bags/demo") as bag:          # a rosbag2 directory, or one .mcap file
        bag.topics                                     # name -> TopicInfo (type, count, QoS, hash)
        for m in bag.messages(["/joint_states"]):      # BagMessage(topic, msgtype, log_time, data)
            js = bag.decode(m)                         # a rosbags message object
    bag.partial, bag.problems                          # after reading: was anything missing?

Raw records come from the `mcap` library (Foxglove's reader), types and CDR decoding from
`rosbags`. rosbags' own directory reader is not used for messages: it matches a file's
channels to metadata.yaml topics by their QoS, and a bag whose two QoS copies differ (the
rosbag2 test suite's `talker` bag: Foxy-era infinite durations) silently yields nothing.

Every read is checked against the counts metadata.yaml promises (per topic): fewer or more
messages is an error (`BagCountError`), as is a truncated or corrupt file (`BagCorruptError`),
raised after the messages that could be read. With `allow_partial=True` these become entries
in `problems` and `partial` is set instead, so a caller can keep what was read and mark it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader, SeekingReader
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from swm_ros.bags.typestore import UnknownMessageType, ensure_type, jazzy_typestore

SUPPORTED_METADATA_VERSIONS = range(4, 10)     # rosbag2 Foxy (4) .. Jazzy / Kilted (9)


class BagError(Exception):
    """A bag that cannot be read as asked; the message says what and where."""


class BagMetadataError(BagError):
    """metadata.yaml is missing, unreadable, or describes files that are not there."""


class BagCorruptError(BagError):
    """A storage file is truncated or damaged; `read` messages came out before the damage."""

    def __init__(self, message: str, read: int = 0) -> None:
        super().__init__(message)
        self.read = read


class BagCountError(BagError):
    """The messages read differ from the counts in metadata.yaml."""


class BagTopicsError(BagError):
    """The bag lacks topics a caller needs; the message lists the topics it has."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int | None                  # messages promised (metadata.yaml, else MCAP statistics)
    serialization_format: str = "cdr"
    offered_qos_profiles: tuple[dict[str, Any], ...] = ()
    type_hash: str = ""
    definition: str | None = None      # the schema text stored in the MCAP file
    definition_encoding: str = ""


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time: int          # ns: when the recorder received it (rosbag2's timestamp)
    publish_time: int      # ns
    data: bytes            # CDR, exactly as recorded


@dataclass
class ReadReport:
    """What one pass over the messages saw, per topic."""

    counts: Counter = field(default_factory=Counter)
    expected: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        return not self.problems


def _qos_dicts(raw: Any) -> tuple[dict[str, Any], ...]:
    """offered_qos_profiles of any metadata version (v4-8: a YAML string; v9: a list) as dicts."""
    from rosbags.rosbag2.metadata import parse_qos

    if not raw:
        return ()
    out = []
    for q in parse_qos(raw):
        out.append({"history": q.history.name.lower(), "depth": q.depth,
                    "reliability": q.reliability.name.lower(), "durability": q.durability.name.lower(),
                    "deadline": {"sec": q.deadline.sec, "nsec": q.deadline.nsec},
                    "lifespan": {"sec": q.lifespan.sec, "nsec": q.lifespan.nsec},
                    "liveliness": q.liveliness.name.lower(),
                    "liveliness_lease_duration": {"sec": q.liveliness_lease_duration.sec,
                                                  "nsec": q.liveliness_lease_duration.nsec},
                    "avoid_ros_namespace_conventions": bool(q.avoid_ros_namespace_conventions)})
    return tuple(out)


class BagReader:
    """One rosbag2 bag (directory with metadata.yaml) or a single MCAP file, read-only."""

    def __init__(self, path: str | Path, allow_partial: bool = False) -> None:
        self.path = Path(path)
        self.allow_partial = allow_partial
        self.problems: list[str] = []     # something is missing or damaged: results are partial
        self.notes: list[str] = []        # worth knowing, but nothing is missing
        self.metadata: dict[str, Any] | None = None
        self.version: int | None = None
        self.files: list[Path] = []
        self.topics: dict[str, TopicInfo] = {}
        self.store = jazzy_typestore()
        self._files = []
        self._start_ns: int | None = None     # first message's log time, from the files' statistics
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag (directory or .mcap file)")
        if self.path.is_dir():
            self._open_directory()
        elif self.path.suffix == ".mcap":
            self.files = [self.path]
            self.notes.append(f"{self.path.name}: read without metadata.yaml: message counts come from "
                                 "the file itself and cannot be cross-checked")
        else:
            raise BagError(f"{self.path}: not a rosbag2 directory or .mcap file")
        self._scan_files()

    # ------------------------------------------------------------------ opening

    def _open_directory(self) -> None:
        meta_path = self.path / "metadata.yaml"
        if not meta_path.is_file():
            mcaps = sorted(p.name for p in self.path.glob("*.mcap"))
            hint = (f"; it holds {mcaps}: the recording was not finalised (killed?). Read the file itself "
                    f"(`swm bag info {self.path / mcaps[0]}`) to recover what it holds, marked partial"
                    if mcaps else f"; it holds {sorted(p.name for p in self.path.iterdir())[:10]}")
            raise BagMetadataError(f"{self.path}: no metadata.yaml, so this is not a complete rosbag2 bag{hint}")
        try:
            doc = YAML(typ="safe").load(meta_path.read_text())
            info = doc["rosbag2_bagfile_information"]
            self.version = int(info["version"])
        except (OSError, YAMLError, KeyError, TypeError, ValueError) as e:
            raise BagMetadataError(f"{meta_path}: not a rosbag2 metadata file: {type(e).__name__}: {e}") from e
        if self.version not in SUPPORTED_METADATA_VERSIONS:
            raise BagMetadataError(f"{meta_path}: metadata version {self.version} is not supported "
                                   f"(supported: {SUPPORTED_METADATA_VERSIONS.start}-{SUPPORTED_METADATA_VERSIONS.stop - 1})")
        self.metadata = info
        storage = info.get("storage_identifier", "")
        if storage != "mcap":
            raise BagMetadataError(f"{meta_path}: storage {storage!r} is not supported, only mcap "
                                   "(convert with `ros2 bag convert` on a ROS 2 install)")
        if info.get("compression_mode") or info.get("compression_format"):
            raise BagMetadataError(f"{meta_path}: rosbag2 file/message compression "
                                   f"({info.get('compression_mode')}/{info.get('compression_format')}) is not supported; "
                                   "MCAP chunk compression is")
        try:
            names = [Path(p).name for p in info["relative_file_paths"]]
            topics = info["topics_with_message_count"] or []
            for t in topics:
                tm = t["topic_metadata"]
                self.topics[tm["name"]] = TopicInfo(
                    name=tm["name"], msgtype=tm["type"], count=int(t["message_count"]),
                    serialization_format=tm.get("serialization_format", "cdr"),
                    offered_qos_profiles=_qos_dicts(tm.get("offered_qos_profiles")),
                    type_hash=tm.get("type_description_hash", "") or "")
        except (KeyError, TypeError, ValueError) as e:
            raise BagMetadataError(f"{meta_path}: malformed topic list: {type(e).__name__}: {e}") from e
        missing = [n for n in names if not (self.path / n).is_file()]
        if missing:
            raise BagMetadataError(f"{meta_path}: storage file(s) {missing} listed but not present")
        self.files = [self.path / n for n in names]
        total = int(info.get("message_count", 0))
        if total != sum(t.count or 0 for t in self.topics.values()):
            self.problems.append(f"metadata.yaml: message_count {total} differs from the per-topic counts' "
                                 f"sum {sum(t.count or 0 for t in self.topics.values())}")

    def _scan_files(self) -> None:
        """Schemas, channels and statistics from each file's summary (or a scan if it has none)."""
        stats: Counter = Counter()
        have_stats = True
        for f in self.files:
            try:
                with open(f, "rb") as fh:
                    summary = SeekingReader(fh).get_summary()
            except Exception as e:  # noqa: BLE001 - mcap raises McapError, struct.error, ValueError...
                summary = None
                self.problems.append(f"{f.name}: no readable summary section ({type(e).__name__}: {e}); "
                                     "the file is unfinished or truncated")
            if summary is None:
                have_stats = False
                channels, schemas = self._scan_stream(f)
            else:
                channels, schemas = summary.channels, summary.schemas
                if summary.statistics is not None:
                    for cid, n in summary.statistics.channel_message_counts.items():
                        stats[channels[cid].topic] += n
                    if summary.statistics.message_count:
                        first = summary.statistics.message_start_time
                        self._start_ns = first if self._start_ns is None else min(self._start_ns, first)
                else:
                    have_stats = False
            for ch in channels.values():
                schema = schemas.get(ch.schema_id)
                definition = schema.data.decode("utf-8", "replace") if schema is not None else None
                enc = schema.encoding if schema is not None else ""
                known = self.topics.get(ch.topic)
                if known is None:
                    if self.metadata is not None:
                        self.problems.append(f"{f.name}: channel {ch.topic!r} is not in metadata.yaml")
                    qos = _qos_dicts(ch.metadata.get("offered_qos_profiles"))
                    self.topics[ch.topic] = TopicInfo(
                        ch.topic, schema.name if schema is not None else "", None, ch.message_encoding, qos,
                        ch.metadata.get("topic_type_hash", ""), definition, enc)
                elif known.definition is None:
                    self.topics[ch.topic] = TopicInfo(known.name, known.msgtype, known.count, known.serialization_format,
                                                      known.offered_qos_profiles, known.type_hash, definition, enc)
        if self.metadata is None and have_stats:
            self.topics = {k: _with_count(v, stats.get(k, 0)) for k, v in self.topics.items()}

    def _scan_stream(self, f: Path) -> tuple[dict, dict]:
        channels, schemas = {}, {}
        with open(f, "rb") as fh:
            reader = NonSeekingReader(fh)
            try:
                for schema, channel, _msg in reader.iter_messages(log_time_order=False):
                    channels[channel.id] = channel
                    if schema is not None:
                        schemas[schema.id] = schema
            except Exception:  # noqa: BLE001 - the damage itself is reported when messages are read
                pass
        return channels, schemas

    # ------------------------------------------------------------------ reading

    @property
    def partial(self) -> bool:
        """True once anything (a missing summary, a short read, bad metadata) was found wrong."""
        return bool(self.problems)

    @property
    def message_count(self) -> int | None:
        counts = [t.count for t in self.topics.values()]
        return None if any(c is None for c in counts) else sum(counts)

    def require_topics(self, needed: Iterable[str], what: str = "this operation") -> None:
        missing = [t for t in needed if t not in self.topics]
        if missing:
            raise BagTopicsError(f"{self.path}: {what} needs topic(s) {missing}; the bag has: "
                                 + ", ".join(f"{t.name} [{t.msgtype}]" for t in self.topics.values()))

    @property
    def start_ns(self) -> int | None:
        """Log time of the bag's first message, or None when no file has statistics (unfinished)."""
        return self._start_ns

    def messages(self, topics: Iterable[str] | None = None, report: ReadReport | None = None,
                 end_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages in log-time order (file order for an unfinished file), checked against the counts.

        `topics` selects (None: all). Unknown topic names are an error listing the bag's topics.
        `end_ns`: only messages logged before it (a prefix of the bag: the MCAP chunk index skips
        the rest unread); the counts then cannot be checked against the metadata's.
        """
        wanted = None if topics is None else list(topics)
        if wanted is not None:
            self.require_topics(wanted, "reading")
        report = report if report is not None else ReadReport()
        report.expected = {t: self.topics[t].count for t in (wanted or self.topics)}
        for f in self.files:
            yield from self._file_messages(f, wanted, report, end_ns)
        if end_ns is None:
            self._check_counts(report)

    def _file_messages(self, f: Path, wanted: list[str] | None, report: ReadReport,
                       end_ns: int | None = None) -> Iterator[BagMessage]:
        fh = open(f, "rb")
        try:
            try:
                reader = SeekingReader(fh, validate_crcs=True)
                ordered = reader.get_summary() is not None
            except Exception:  # noqa: BLE001 - no footer / summary: read the records front to back
                ordered = False
            if ordered:
                it = reader.iter_messages(topics=wanted, log_time_order=True, end_time=end_ns)
            else:
                fh.seek(0)
                it = NonSeekingReader(fh, validate_crcs=True).iter_messages(topics=wanted, log_time_order=False)
            while True:
                try:
                    schema, channel, msg = next(it)
                except StopIteration:
                    break
                except (McapError, Exception) as e:  # noqa: BLE001 - struct/zstd/lz4 errors on damage too
                    text = (f"{f.name}: damaged after {report.total} message(s) "
                            f"({type(e).__name__}: {e or 'truncated'})")
                    if not self.allow_partial:
                        raise BagCorruptError(f"{self.path}: {text}; the messages before it were read; "
                                              "pass allow_partial (--allow-partial) to keep them, marked partial",
                                              read=report.total) from e
                    report.problems.append(text)
                    self.problems.append(text)
                    return
                if end_ns is not None and msg.log_time >= end_ns:      # unordered file: filter here
                    continue
                msgtype = schema.name if schema is not None else self.topics.get(channel.topic, TopicInfo("", "", 0)).msgtype
                report.counts[channel.topic] += 1
                yield BagMessage(channel.topic, msgtype, msg.log_time, msg.publish_time, msg.data)
        finally:
            fh.close()

    def _check_counts(self, report: ReadReport) -> None:
        wrong = [f"{t}: read {report.counts.get(t, 0)}, metadata says {n}"
                 for t, n in report.expected.items() if n is not None and report.counts.get(t, 0) != n]
        if not wrong:
            return
        text = "message counts differ from the bag's metadata: " + "; ".join(wrong)
        if not self.allow_partial:
            raise BagCountError(f"{self.path}: {text}")
        report.problems.append(text)
        self.problems.append(text)

    def count_messages(self, topics: Iterable[str] | None = None) -> ReadReport:
        """Read every message once (no decoding) and return the per-topic counts."""
        report = ReadReport()
        for _ in self.messages(topics, report):
            pass
        return report

    # ------------------------------------------------------------------ decoding

    def can_decode(self, topic: str) -> bool:
        t = self.topics[topic]
        try:
            ensure_type(self.store, t.msgtype, t.definition if t.definition_encoding in ("ros2msg", "") else None)
            return True
        except (UnknownMessageType, Exception):  # noqa: BLE001 - a malformed stored definition
            return False

    def decode(self, message: BagMessage) -> Any:
        """The rosbags message object of a raw message (UnknownMessageType if it cannot be)."""
        t = self.topics.get(message.topic)
        definition = t.definition if t is not None and t.definition_encoding in ("ros2msg", "") else None
        ensure_type(self.store, message.msgtype, definition)
        return self.store.deserialize_cdr(message.data, message.msgtype)

    # ------------------------------------------------------------------ context manager

    def close(self) -> None:
        pass

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (what `swm bag info` prints)."""
        return {
            "path": str(self.path), "metadata_version": self.version,
            "ros_distro": (self.metadata or {}).get("ros_distro"),
            "files": [f.name for f in self.files],
            "duration_s": ((self.metadata or {}).get("duration", {}).get("nanoseconds", 0)) / 1e9,
            "message_count": self.message_count,
            "topics": [{"name": t.name, "type": t.msgtype, "count": t.count, "type_hash": t.type_hash,
                        "decodable": self.can_decode(t.name),
                        "qos": [f"{q['reliability']}/{q['durability']}/{q['history']}:{q['depth']}"
                                for q in t.offered_qos_profiles]}
                       for t in self.topics.values()],
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def _with_count(t: TopicInfo, n: int) -> TopicInfo:
    return TopicInfo(t.name, t.msgtype, n, t.serialization_format, t.offered_qos_profiles, t.type_hash,
                     t.definition, t.definition_encoding)
