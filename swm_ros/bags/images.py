"""sensor_msgs/Image (a rosbags message object) -> RGB numpy, without ROS.

The same rules as swm_ros.ros.conversions (which works on rclpy messages): rgb8, bgr8,
rgba8, bgra8 and mono8, `step` padding honoured; anything else is a clear error that names
where the image came from.
"""
from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ImageEncodingError(ValueError):
    """An image this project cannot turn into RGB (encoding or size)."""


def image_to_rgb(msg, where: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from a decoded sensor_msgs/msg/Image."""
    enc = msg.encoding
    if enc not in CHANNELS:
        raise ImageEncodingError(f"{where}: unsupported image encoding {enc!r}; supported: {sorted(CHANNELS)}")
    ch = CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if h == 0 or w == 0 or step < w * ch or data.size != step * h:
        raise ImageEncodingError(f"{where}: inconsistent {enc} image {w}x{h}, step {step}, {data.size} bytes")
    a = data.reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc == "bgr8":
        a = a[..., ::-1]
    elif enc == "rgba8":
        a = a[..., :3]
    elif enc == "bgra8":
        a = a[..., 2::-1]
    elif enc == "mono8":
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)
