"""NicolTabletopEnv: determinism, rendering, variants, action checks, privileged state."""
from __future__ import annotations

import numpy as np
import pytest

from swm_ros.envs import make_env
from swm_ros.envs.base import GRIPPER, TABLE, Env
from swm_ros.envs.nicol_tabletop import NicolTabletopEnv
from swm_ros.envs.tasks import TASKS, task_success
from swm_ros.envs.variants import VARIANTS

ACTIONS = np.random.default_rng(3).uniform(-1, 1, (8, 5))


@pytest.fixture(scope="module")
def env() -> NicolTabletopEnv:
    e = NicolTabletopEnv(task="push", cameras=("overhead",), image_size=(64, 64))
    yield e
    e.close()


def _episode(seed: int):
    e = make_env(task="pick", cameras=("overhead", "head"), image_size=(64, 64))
    obs = [e.reset(seed=seed)]
    obs += [e.step(a) for a in ACTIONS]
    e.close()
    return obs


def test_protocol_and_names(env):
    assert isinstance(env, Env)
    assert env.joint_names == (*env.profile.arm.joints, "r_gripper")
    assert env.joint_positions().shape == env.joint_velocities().shape == (9,)
    assert env.control_dt == pytest.approx(0.1)


def test_same_seed_same_episode_different_seed_differs():
    a, b, c = _episode(7), _episode(7), _episode(8)
    for oa, ob in zip(a, b):
        for cam in ("overhead", "head"):
            np.testing.assert_array_equal(oa.images[cam], ob.images[cam])
        np.testing.assert_array_equal(oa.proprio, ob.proprio)
        for name in oa.state.objects:
            np.testing.assert_array_equal(oa.state.objects[name].position, ob.state.objects[name].position)
        assert oa.state.contacts == ob.state.contacts
    pos = lambda o: np.stack([x.position for x in o.state.objects.values()])  # noqa: E731
    assert not np.allclose(pos(a[0]), pos(c[0]))
    assert not np.array_equal(a[-1].images["overhead"], c[-1].images["overhead"])


def test_render_shapes(env):
    assert env.render("overhead").shape == (64, 64, 3)
    img = env.render("overhead", 224, 224)
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    assert img.std() > 5          # not a blank frame
    with pytest.raises(ValueError):
        env.render("nope")


def test_observation_layout(env):
    obs = env.reset(seed=1)
    assert set(obs.images) == {"overhead"}
    assert obs.proprio.dtype == np.float32 and obs.proprio.shape == (14,)
    assert obs.state is not None and obs.state.step == 0
    assert obs.state.gripper_opening == pytest.approx(1.0)
    assert all((name, TABLE) in obs.state.contacts or (TABLE, name) in obs.state.contacts
               for name in obs.state.objects)


def _snapshot_key(env) -> np.ndarray:
    s = env.privileged_state()
    return np.concatenate([s.effector_position, s.joint_positions, *(o.position for o in s.objects.values())])


def test_snapshot_restore_repeats_the_future_bit_for_bit(env):
    env.reset(seed=4)
    for a in ACTIONS[:3]:
        env.step(a)
    snap = env.snapshot()
    setpoint = snap.setpoint.copy()
    first = env.step(ACTIONS[3])
    for a in ACTIONS[4:]:
        env.step_physics(a)
    after = _snapshot_key(env)
    env.restore(snap)
    assert env.step_count == 3
    again = env.step(ACTIONS[3])
    np.testing.assert_array_equal(again.images["overhead"], first.images["overhead"])
    for a in ACTIONS[4:]:
        env.step_physics(a)
    np.testing.assert_array_equal(_snapshot_key(env), after)
    # restore copies: stepping (which moves the servo set-point in place) leaves the snapshot
    # intact, so it can be restored again and repeats again
    np.testing.assert_array_equal(snap.setpoint, setpoint)
    env.restore(snap)
    for a in ACTIONS[3:]:
        env.step_physics(a)
    np.testing.assert_array_equal(_snapshot_key(env), after)
    env.reset(seed=4, variant="ood_colors")
    with pytest.raises(ValueError, match="snapshot of variant 'nominal'"):
        env.restore(snap)
    env.reset(seed=0, variant="nominal")


def test_invalid_actions_raise(env):
    env.reset(seed=0)
    for bad in (np.array([np.nan, 0, 0, 0, 0]), np.array([0, 0, 2.0, 0, 0]), np.zeros(4)):
        with pytest.raises(ValueError):
            env.step(bad)


def test_variants_change_the_scene():
    colours = {}
    images = {}
    for name in VARIANTS:
        e = make_env(task="reach", variant=name, cameras=("overhead",))
        s = e.reset(seed=0)
        colours[name] = {o.color for o in s.state.blocks()}
        images[name] = s.images["overhead"].astype(float)
        if name == "ood_distractor":
            kinds = [o.kind for o in s.state.objects.values()]
            assert kinds.count("distractor") == 1
        e.close()
    assert colours["nominal"] == {"red", "green", "blue", "yellow"}
    assert not colours["ood_colors"] & colours["nominal"]
    assert np.abs(images["ood_table"] - images["nominal"]).mean() > 10
    with pytest.raises(ValueError, match="nominal"):
        make_env(variant="no_such_variant")


def test_tasks_sample_roles_and_instructions(env):
    for task in TASKS:
        obs = env.reset(seed=3, task=task)
        spec = env.task
        assert spec.name == task and len(spec.objects) == TASKS[task].n_roles
        colour = obs.state.objects[spec.objects[0]].color
        assert colour in spec.instruction
        assert not task_success(spec, obs.state)
    env.reset(seed=3, task="separate")
    a, b = env.task.objects
    assert env.privileged_state().touching(a, b)


def test_contacts_and_grasp_in_a_hand_built_scene(env):
    env.reset(seed=0, task="pick")
    z = env.profile.table.height + 0.0225
    # Two blocks face to face, away from the hand.
    env.place_object("green_block", [0.40, -0.10, z])
    env.place_object("yellow_block", [0.40 + 0.045, -0.10, z])
    # The hand straddling the red block, pads open.
    target = np.array([0.55, -0.30, z + 0.002])
    q = env.kinematics.ik_or_raise(target, 0.0, env.kinematics.home)
    env.place_object("red_block", [0.55, -0.30, z])
    env.place_object("blue_block", [0.62, -0.45, z])
    env.set_joint_positions(np.array([*q, env.profile.gripper.open]))
    env.advance(0.2)
    s = env.privileged_state()
    assert s.touching("green_block", "yellow_block")
    assert not s.touching("red_block", "blue_block")
    assert s.grasped is None and not s.touching("red_block", GRIPPER)
    # Close the pads: both touch the red block, so it is grasped.
    env.set_joint_targets(np.array([*q, env.profile.gripper.closed]))
    env.advance(0.6)
    s = env.privileged_state()
    assert s.grasped == "red_block" and s.touching(GRIPPER, "red_block")
    assert 0.1 < s.gripper_opening < 0.7
    # Lift: the block comes along and leaves the table.
    q_up = env.kinematics.ik_or_raise(target + [0, 0, 0.1], 0.0, q)
    env.set_joint_targets(np.array([*q_up, env.profile.gripper.closed]))
    env.advance(1.0)
    s = env.privileged_state()
    assert s.grasped == "red_block" and not s.touching("red_block", TABLE)
    assert s.objects["red_block"].position[2] > z + 0.08
    assert np.abs(env.joint_positions()[:-1] - q_up).max() < 0.01   # targets tracked under load


def test_proprio_from_joints_matches_the_simulator():
    """A real robot has no privileged state: FK of the joints must give the same proprio."""
    from swm_ros.envs.base import proprio_vector

    env = NicolTabletopEnv(task="pick", cameras=(), seed=2)
    env.reset(seed=2)
    for a in ([0.5, -0.3, -0.4, 0.2, 1.0], [-0.2, 0.4, 0.1, -0.5, -1.0]):
        for _ in range(6):
            env.step(np.array(a))
        env.advance(0.5)     # at rest, so the site pose does not lag the joints
        obs = env.observe()
        q = env.joint_positions()
        pose = env.kinematics.fk(q[:-1])
        from_joints = proprio_vector(q, pose.position, pose.yaw, env.profile.gripper.opening(q[-1]))
        np.testing.assert_allclose(from_joints, obs.proprio, atol=1e-4)


def test_gripper_command_convention():
    g = NicolTabletopEnv(cameras=()).profile.gripper
    assert g.joint_target(-1.0) == g.open and g.joint_target(1.0) == g.closed
    assert g.joint_target(5.0) == g.closed                    # clipped, never beyond closed
    assert g.opening(g.open) == 1.0 and g.opening(g.closed) == 0.0
    assert g.opening(g.joint_target(0.0)) == pytest.approx(0.5)
