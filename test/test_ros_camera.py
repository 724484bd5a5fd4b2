"""camera_node from an image folder and a video file; a missing source is a clear error."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from swm_ros.ros import conversions as conv
from swm_ros.ros import qos

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _frame(i: int) -> np.ndarray:
    """BGR frame whose blue channel encodes its index (what OpenCV writes and reads)."""
    f = np.zeros((48, 64, 3), np.uint8)
    f[..., 0] = 40 * (i + 1)
    f[..., 2] = 10
    return f


def test_image_folder_published_in_order_then_exits_0(start_node, probe, tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), _frame(i))
    (folder / "notes.txt").write_text("ignored")
    images = probe.collect(Image, "/cam/image_raw", qos.SENSOR)
    infos = probe.collect(CameraInfo, "/cam/camera_info", qos.SENSOR)
    proc = start_node("camera_node", "-r", "__ns:=/cam", "-p", f"source:={folder}", "-p", "rate_hz:=5.0",
                      "-p", "width:=32", "-p", "height:=24", "-p", "fovy_deg:=60.0", "-p", "wait_for_subscribers:=true")
    assert probe.wait_for(lambda: not proc.alive(), 30), proc.output()
    probe.spin(0.3)
    assert proc.wait(5) == 0, proc.output()
    assert len(images) == 3, proc.output()
    rgb = [conv.image_to_numpy(m) for m in images]
    assert all(m.encoding == "rgb8" and m.width == 32 and m.height == 24 for m in images)
    blues = [int(a[0, 0, 2]) for a in rgb]          # rgb8: blue is channel 2
    assert blues == [40, 80, 120]
    assert infos and infos[-1].k[0] > 0 and infos[-1].width == 32
    assert "end of source after 3 frames" in proc.output()


def test_video_file_loops(start_node, probe, tmp_path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(4):
        writer.write(_frame(i))
    writer.release()
    images = probe.collect(Image, "/image_raw", qos.SENSOR)
    proc = start_node("camera_node", "-p", f"source:={video}", "-p", "rate_hz:=20.0", "-p", "loop:=true",
                      "-p", "encoding:=mono8")
    assert probe.wait_for(lambda: len(images) >= 8, 20), proc.output()    # > 4 frames: it looped
    assert images[-1].encoding == "mono8" and (images[-1].width, images[-1].height) == (64, 48)
    proc.stop_cleanly()


@pytest.mark.parametrize("source, message", [
    ("device:57", "cannot open device"),
    ("/no/such/video.mp4", "does not exist"),
])
def test_missing_source_exits_nonzero_with_a_clear_message(start_node, tmp_path, source, message) -> None:
    proc = start_node("camera_node", "-p", f"source:={source}")
    assert proc.wait(30) != 0
    assert message in proc.output(), proc.output()


def test_empty_folder_is_an_error(start_node, tmp_path) -> None:
    proc = start_node("camera_node", "-p", f"source:={tmp_path}")
    assert proc.wait(30) != 0
    assert "has no images" in proc.output()
