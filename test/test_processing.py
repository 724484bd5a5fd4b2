"""Image processor (crop + resize) and the camera geometry that places its region."""
from __future__ import annotations

import numpy as np
import pytest

from swm_ros.envs import make_env
from swm_ros.envs.camera_geometry import region_roi
from swm_ros.models.checkpoint import load_checkpoint, save_checkpoint
from swm_ros.models.tiny import TinyConfig, TinyWorldModel
from swm_ros.processing.image import ImageProcessingError, ImageProcessor, ImageProcessorConfig
from swm_ros.robots.profile import load_robot_profile


def test_crop_then_resize_keeps_the_region_and_nothing_else():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[120:240, 160:320] = 255                      # the lower-right quarter is white
    out = ImageProcessor(ImageProcessorConfig(roi=(0.5, 0.5, 1.0, 1.0), size=32))(frame)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out.min() == 255                            # only the white region survives
    whole = ImageProcessor(ImageProcessorConfig(roi=None, size=32))(frame)
    assert 0 < whole.mean() < 255


@pytest.mark.parametrize("frame, match", [
    (np.zeros((64, 64), np.uint8), "RGB"),
    (np.zeros((64, 64, 4), np.uint8), "RGB"),
    (np.zeros((64, 64, 3), np.float32), "uint8"),
])
def test_bad_frames_are_refused(frame, match):
    with pytest.raises(ImageProcessingError, match=match):
        ImageProcessor(ImageProcessorConfig(size=16))(frame)


@pytest.mark.parametrize("roi", [(0.5, 0.5, 0.4, 1.0), (0.0, 0.0, 1.2, 1.0), (0.1, 0.2, 0.3)])
def test_bad_roi_is_refused(roi):
    with pytest.raises(ValueError, match="roi"):
        ImageProcessorConfig(roi=roi)


def test_projection_matches_the_rendered_image():
    """The projected corners of a block bound its rendered pixels (within 3 px of 640)."""
    env = make_env(task="push", image_size=(480, 640), seed=0)
    try:
        env.reset(seed=0)
        objects = env.privileged_state().objects
        name, *others = list(objects)
        for i, other in enumerate(others):          # out of the way, along the far table edge
            env.place_object(other, np.array([0.72, -0.5 + 0.08 * i, objects[other].position[2]]))
        env.place_object(name, np.array([0.5, -0.25, objects[name].position[2]]))
        env.advance(0.05)
        obj = env.privileged_state().objects[name]
        h = obj.half_size
        corners = obj.position + h * np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
        uv = env.project_to_image("overhead", corners, 480, 640)
        img = env.render("overhead").astype(int)
        sat = img.max(-1) - img.min(-1)             # a saturated block on a grey table
        ys, xs = np.nonzero(sat > 60)
        cu, cv = uv.mean(axis=0)
        near = (np.abs(xs - cu) < 40) & (np.abs(ys - cv) < 40)
        assert near.sum() > 100, "no block pixels near the projected block"
        np.testing.assert_allclose([xs[near].min(), xs[near].max()], [uv[:, 0].min(), uv[:, 0].max()], atol=3.0)
        np.testing.assert_allclose([ys[near].min(), ys[near].max()], [uv[:, 1].min(), uv[:, 1].max()], atol=3.0)
    finally:
        env.close()


def test_profile_roi_covers_the_spawn_region():
    profile = load_robot_profile("nicol")
    env = make_env(task="push", image_size=(480, 640), seed=0)
    try:
        env.reset(seed=0)
        lower, upper = _spawn_box(profile)
        tight = region_roi(env, "overhead", lower, upper, (480, 640), margin=0.0)
        roi = profile.cameras["overhead"].roi
        assert roi is not None
        assert roi[0] <= tight[0] + 1e-3 and roi[1] <= tight[1] + 1e-3
        assert roi[2] >= tight[2] - 1e-3 and roi[3] >= tight[3] - 1e-3
        # and it is square in pixels, so resizing keeps the aspect
        assert abs((roi[2] - roi[0]) * 640 - (roi[3] - roi[1]) * 480) < 2
    finally:
        env.close()


def _spawn_box(profile):
    lo, hi, z = profile.table.spawn_lower_xy, profile.table.spawn_upper_xy, profile.table.height
    return (lo[0], lo[1], z), (hi[0], hi[1], z + 0.15)


def test_checkpoint_carries_the_processor(tmp_path):
    model = TinyWorldModel(TinyConfig())
    model.image_processor = ImageProcessor(ImageProcessorConfig(roi=(0.5, 0.25, 1.0, 0.9), size=64))
    save_checkpoint(model, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert back.image_processor is not None and back.image_processor.config == model.image_processor.config
    frames = np.random.default_rng(0).integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    x = back.process_frames(frames)
    assert x.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(x[1], model.image_processor(frames[1]))
