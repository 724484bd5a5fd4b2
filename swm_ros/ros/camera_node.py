"""camera_node: Image + CameraInfo from a camera, a video file or an image folder.

  publishes image_raw     sensor_msgs/Image (sensor QoS)   -- remap to e.g. realsense/color/image_raw
            camera_info   sensor_msgs/CameraInfo

`source`: an OpenCV device ("0", "device:0", "/dev/video0"), a video file, or a folder of
images (played in name order). A source that cannot be opened is a start-up error (exit 2);
a finished file or folder without `loop` ends the node with exit code 0.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image

from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import Param, StartupError, declare_parameters, non_negative, one_of, positive, run_node

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
_ENC_CHECK, _ENC_RULE = one_of("rgb8", "bgr8", "mono8")

PARAMETERS: dict[str, Param] = {
    "source": Param("device:0", "device index / path, video file, or image folder", dynamic_typing=True),
    "rate_hz": Param(10.0, "publish rate", positive, "> 0"),
    "loop": Param(False, "restart a file or folder at its end (otherwise the node exits 0)"),
    "width": Param(0, "resize to this width, px; 0 = keep", non_negative, ">= 0"),
    "height": Param(0, "resize to this height, px; 0 = keep", non_negative, ">= 0"),
    "frame_id": Param("camera_color_optical_frame", "header.frame_id"),
    "encoding": Param("rgb8", "published encoding", _ENC_CHECK, _ENC_RULE),
    "wait_for_subscribers": Param(False, "hold the first frame until image_raw has a subscriber (file replay)"),
    "fovy_deg": Param(0.0, "vertical field of view for CameraInfo; 0 = uncalibrated (K all zero)",
                      non_negative, ">= 0"),
}


class FrameSource:
    """Frames as BGR uint8 arrays, from OpenCV capture or a sorted image folder."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.files: list[Path] = []
        self.cap: cv2.VideoCapture | None = None
        self.index = 0
        src = source[len("device:"):] if source.startswith("device:") else source
        path = Path(src)
        if src.isdigit():
            self.kind = "device"
            self.cap = cv2.VideoCapture(int(src))
        elif path.is_dir():
            self.kind = "folder"
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise StartupError(f"image folder {path} has no images ({sorted(IMAGE_SUFFIXES)})")
            return
        elif path.exists():
            self.kind = "device" if str(path).startswith("/dev/") else "video"
            self.cap = cv2.VideoCapture(str(path))
        else:
            raise StartupError(f"camera source {source!r} does not exist (device index, device path, "
                               "video file or image folder expected)")
        if not self.cap.isOpened():
            raise StartupError(f"cannot open {self.kind} {source!r} with OpenCV")

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of a file or folder."""
        if self.kind == "folder":
            if self.index >= len(self.files):
                return None
            frame = cv2.imread(str(self.files[self.index]), cv2.IMREAD_COLOR)
            self.index += 1
            if frame is None:
                raise StartupError(f"cannot read image {self.files[self.index - 1]}")
            return frame
        ok, frame = self.cap.read()
        return frame if ok else None

    def rewind(self) -> bool:
        if self.kind == "folder":
            self.index = 0
            return True
        if self.kind == "video":
            return bool(self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0))
        return False

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_node")
        self.p = declare_parameters(self, PARAMETERS)
        if bool(self.p.width) != bool(self.p.height):
            raise StartupError("give both width and height to resize, or neither")
        self.src = FrameSource(str(self.p.source))
        self.done = Future()
        self.published = 0
        self.pub_img = self.create_publisher(Image, "image_raw", qos.SENSOR)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos.SENSOR)
        self.timer = self.create_timer(1.0 / self.p.rate_hz, self._tick)
        self.get_logger().info(f"{self.src.kind} {self.p.source!r} -> {self.resolve_topic_name('image_raw')} "
                               f"at {self.p.rate_hz:g} Hz")

    def _tick(self) -> None:
        if self.p.wait_for_subscribers and self.published == 0 and self.pub_img.get_subscription_count() == 0:
            return
        try:
            frame = self.src.read()
            if frame is None and self.p.loop and self.src.rewind():
                frame = self.src.read()
        except StartupError as e:
            self.get_logger().error(str(e))
            self.done.set_result(1)
            return
        if frame is None:
            what = "device stopped delivering frames" if self.src.kind == "device" else "end of source"
            self.get_logger().info(f"{what} after {self.published} frames")
            self.timer.cancel()
            self.done.set_result(1 if self.src.kind == "device" else 0)
            return
        if self.p.width and self.p.height:
            frame = cv2.resize(frame, (self.p.width, self.p.height), interpolation=cv2.INTER_AREA)
        if self.p.encoding == "rgb8":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        elif self.p.encoding == "mono8":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        stamp = self.get_clock().now().to_msg()
        h, w = frame.shape[:2]
        self.pub_img.publish(conv.numpy_to_image(frame, self.p.encoding, stamp, self.p.frame_id))
        self.pub_info.publish(conv.camera_info(w, h, self.p.fovy_deg, self.p.frame_id, stamp))
        self.published += 1

    def destroy_node(self) -> None:
        if hasattr(self, "src"):
            self.src.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
