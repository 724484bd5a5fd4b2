"""The message types bags are written and read with: rosbags' Jazzy store + this project's.

`jazzy_typestore()` is rosbags' ROS 2 Jazzy type store with the project's own interfaces
(swm_ros/msg/*.msg) registered from their .msg files, so a bag carries them with the same
definitions and RIHS01 type hashes that rosidl generates for the nodes. Types outside both
(test_msgs, rosbag2_interfaces, a lab's own packages) are registered on demand from a .msg
file in an installed `share/<pkg>/msg/` directory or from the definition stored in a bag.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PROJECT_PACKAGE = "swm_ros"


class UnknownMessageType(KeyError):
    """A message type that is neither in the type store, nor installed, nor defined in the bag."""

    def __str__(self) -> str:   # KeyError quotes its argument; say it plainly
        return str(self.args[0])


def project_msg_dir() -> Path:
    """The project's msg/ directory: the source tree, or share/swm_ros/msg of an install."""
    from swm_ros.resources import share_dir

    for d in (share_dir() / "msg", Path(sys.prefix) / "share" / PROJECT_PACKAGE / "msg"):
        if d.is_dir() and any(d.glob("*.msg")):
            return d
    raise FileNotFoundError(f"no {PROJECT_PACKAGE} msg/*.msg files found (looked in {share_dir() / 'msg'})")


def _share_dirs() -> list[Path]:
    dirs = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(sys.prefix) / "share")
    return dirs


def installed_msg_file(msgtype: str) -> Path | None:
    """share/<pkg>/msg/<Name>.msg for `pkg/msg/Name`, if some install has it."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    pkg, kind, name = parts
    for share in _share_dirs():
        f = share / pkg / kind / f"{name}.msg"
        if f.is_file():
            return f
    return None


def register_msg_text(store: Typestore, msgtype: str, text: str) -> list[str]:
    """Register a ROS 2 .msg definition (a single file or a bag's concatenated `MSG:` form).

    Returns the newly registered type names. Types already in the store are kept as they are.
    """
    if "/srv/" in msgtype and msgtype.endswith("_Event") and "\n---\n" in f"\n{text}\n":
        types = _service_event_types(msgtype, text)
    else:
        types = get_types_from_msg(text, msgtype)
    new = {k: v for k, v in types.items() if k not in store.fielddefs}
    if new:
        store.register(new)
    return sorted(new)


def _service_event_types(msgtype: str, srv_text: str) -> dict:
    """pkg/srv/X_Event from a .srv text (how Iron/Jazzy rosbag2 stores a service event's schema).

    The event message is fixed by rosidl: `service_msgs/ServiceEventInfo info`,
    `X_Request[<=1] request`, `X_Response[<=1] response`.
    """
    request, _, response = f"\n{srv_text}\n".partition("\n---\n")
    base = msgtype[: -len("_Event")]
    types: dict = {}
    types.update(get_types_from_msg(request, f"{base}_Request"))
    types.update(get_types_from_msg(response, f"{base}_Response"))
    types.update(get_types_from_msg(f"service_msgs/msg/ServiceEventInfo info\n{base}_Request[<=1] request\n"
                                    f"{base}_Response[<=1] response\n", msgtype))
    # rosbags files every parsed type under <pkg>/msg/: move these back to <pkg>/srv/
    pkg = msgtype.split("/")[0]
    wrong, right = f"{pkg}/srv/msg/", f"{pkg}/srv/"
    return {k.replace(wrong, right): _rename_refs(v, wrong, right) for k, v in types.items()}


def _rename_refs(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, tuple):
        renamed = tuple(_rename_refs(v, old, new) for v in value)
        return type(value)(*renamed) if hasattr(value, "_fields") else renamed
    if isinstance(value, list):
        return [_rename_refs(v, old, new) for v in value]
    return value


def ensure_type(store: Typestore, msgtype: str, definition: str | None = None) -> None:
    """Make `msgtype` known to `store`: already there, from a bag's definition, or installed.

    Raises UnknownMessageType naming where it looked.
    """
    if msgtype in store.fielddefs:
        return
    if definition:
        register_msg_text(store, msgtype, definition)
        if msgtype in store.fielddefs:
            return
    f = installed_msg_file(msgtype)
    if f is not None:
        _register_file_with_dependencies(store, msgtype, f)
        if msgtype in store.fielddefs:
            return
    raise UnknownMessageType(
        f"unknown message type {msgtype!r}: not in the ROS 2 Jazzy type store, no definition stored in the bag, "
        f"and no share/<pkg>/msg/*.msg installed for it (looked in {[str(d) for d in _share_dirs()]})")


def _register_file_with_dependencies(store: Typestore, msgtype: str, path: Path, depth: int = 0) -> None:
    # A .msg file names its nested types but does not define them: register those first.
    types = get_types_from_msg(path.read_text(), msgtype)
    for fields in types.values():
        for dep in _nested_types(fields):
            if dep not in store.fielddefs and dep not in types and depth < 16:
                f = installed_msg_file(dep)
                if f is not None:
                    _register_file_with_dependencies(store, dep, f, depth + 1)
    store.register({k: v for k, v in types.items() if k not in store.fielddefs})


def _nested_types(fielddef) -> Iterable[str]:
    _consts, fields = fielddef
    for _name, (kind, detail) in fields:
        # kind: 1 base, 2 name (nested), 3 array, 4 sequence (rosbags Nodetype values)
        if int(kind) == 2:
            yield detail
        elif int(kind) in (3, 4):
            inner_kind, inner = detail[0]
            if int(inner_kind) == 2:
                yield inner


@lru_cache(maxsize=1)
def _project_definitions() -> dict[str, str]:
    d = project_msg_dir()
    return {f"{PROJECT_PACKAGE}/msg/{f.stem}": f.read_text() for f in sorted(d.glob("*.msg"))}


def jazzy_typestore() -> Typestore:
    """A fresh Jazzy type store with swm_ros/msg/* registered (fresh: callers may add types)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in _project_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


PROJECT_TYPES = ("ActionChunk", "ActionProposals", "PlanResult", "TaskInfo", "WorldState")
