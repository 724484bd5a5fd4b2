"""SAQA question families: phrasings and oracle labels from privileged state, as one table.

Each `QuestionFamily` row says which objects a question is about (one block or an ordered /
unordered pair of blocks, optionally a direction), how to say it (>= 4 templates), and how
to answer it from the privileged state at the start frame t and the end frame t+h. Labels
are vectorised: `label(s0, s1, a, b, d)` takes `StateArrays` gathered at t and t+h (one row
per question) and object / direction indices, and returns (answer, valid) bool arrays.
`valid` is False inside an ambiguity band (e.g. a block that moved 3 cm for a 4 cm "moved"
threshold); those rows are dropped rather than labelled either way.

Some families also say which of their "no" rows are near misses (`near_miss`): a block held
above another is not on it, an open hand around a block does not hold it. Drawn at random,
such rows are rare among the "no" answers (none in 1,086 sampled on_top rows), so a model
never learns the difference a planner's sub-goal check depends on; `SAQAConfig.near_miss_share`
asks the balancing to draw a share of the "no" rows from them.

Directions live in the table frame as the robot sees it: "forward" points away from the
robot (world +x for NicoL, whose torso sits at the table edge looking along +x), "left" is
the robot's left (world +y). `Thresholds.frame_yaw` rotates this frame if a scene differs.
Templates fill {a}/{b} with "red block" style noun phrases, {ac}/{bc} with bare colours and
{dir} with the family's phrase for the direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from swm_ros.data.episodes import StateArrays

DIRECTIONS: tuple[str, ...] = ("left", "right", "forward", "backward")
# unit vectors in the table frame (x forward = away from the robot, y = robot's left)
DIRECTION_VECTORS = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])
NO_OBJECT = -1
NO_DIRECTION = -1


@dataclass(frozen=True)
class Thresholds:
    """Geometry of the oracle, in metres / degrees. Defaults suit 4-5 cm blocks."""

    touch_tolerance: float = 0.005          # surface gap still counted as touching
    gripper_touch_tolerance: float = 0.01   # grasp point within the block's box grown by this
    closer_margin: float = 0.03             # distance must shrink by more than this: yes
    closer_ambiguous: float = 0.01          # ... by less than this: no; in between: dropped
    move_threshold: float = 0.04            # displacement along the direction for "moved": yes
    move_angle_deg: float = 30.0            # and within this angle of the direction
    relative_margin: float = 0.03           # offset along the direction for "left of": yes
    on_top_tolerance: float = 0.01          # vertical gap between the faces for "on top"
    near_miss_margin: float = 0.02          # how far from "yes" a "no" still counts as a near miss
    frame_yaw: float = 0.0                  # yaw (rad) of the table frame's forward axis in world


# ---------------------------------------------------------------------------------------
# vectorised geometry helpers (one row per question)
# ---------------------------------------------------------------------------------------

def _pos(s: StateArrays, i: np.ndarray) -> np.ndarray:
    return s.object_position[np.arange(len(i)), i]


def _contact(s: StateArrays, i: np.ndarray, j: np.ndarray | int) -> np.ndarray:
    j = np.broadcast_to(j, i.shape)
    return s.contacts[np.arange(len(i)), i, j]


def _table_xy(v: np.ndarray, yaw: float) -> np.ndarray:
    """World vectors (..., 3) -> table-frame xy (..., 2)."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y = v[..., 0], v[..., 1]
    return np.stack([c * x + s * y, -s * x + c * y], axis=-1)


def _along_perp(v_xy: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = DIRECTION_VECTORS[d]
    along = np.einsum("ij,ij->i", v_xy, u)
    perp = np.abs(v_xy[:, 0] * u[:, 1] - v_xy[:, 1] * u[:, 0])
    return along, perp


def _all(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


def _surface_gap(s: StateArrays, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gap between two blocks' surfaces (Chebyshev, axis-aligned boxes)."""
    return np.abs(_pos(s, a) - _pos(s, b)).max(axis=1) - (s.half_sizes[a] + s.half_sizes[b])


def _hand_at(s: StateArrays, a: np.ndarray, margin: float) -> np.ndarray:
    """Gripper in contact with block a, or the grasp point inside a's box grown by `margin`."""
    inside = np.abs(s.effector_position - _pos(s, a)).max(axis=1) < s.half_sizes[a] + margin
    return _contact(s, a, s.gripper_index) | inside


# ---------------------------------------------------------------------------------------
# labels: (s0 at t, s1 at t+h, a, b, d, thresholds) -> (answer, valid)
# ---------------------------------------------------------------------------------------

Labeler = Callable[[StateArrays, StateArrays, np.ndarray, np.ndarray, np.ndarray, Thresholds],
                   tuple[np.ndarray, np.ndarray]]


def label_touching(s0, s1, a, b, d, th):
    yes = _contact(s1, a, b) | (_surface_gap(s1, a, b) < th.touch_tolerance)
    return yes, _all(len(a))


def label_closer(s0, s1, a, b, d, th):
    d0 = np.linalg.norm(_pos(s0, a) - _pos(s0, b), axis=1)
    d1 = np.linalg.norm(_pos(s1, a) - _pos(s1, b), axis=1)
    shrink = d0 - d1
    yes = shrink > th.closer_margin
    return yes, yes | (shrink < th.closer_ambiguous)


def label_moved(s0, s1, a, b, d, th):
    disp = _table_xy(_pos(s1, a) - _pos(s0, a), th.frame_yaw)
    along, perp = _along_perp(disp, d)
    yes = (along > th.move_threshold) & (perp <= along * np.tan(np.radians(th.move_angle_deg)))
    no = along < th.move_threshold / 2
    return yes, yes | no


def label_moved_any(s0, s1, a, b, d, th):
    dist = np.linalg.norm(_pos(s1, a) - _pos(s0, a), axis=1)
    yes = dist > th.move_threshold
    return yes, yes | (dist < th.move_threshold / 2)


def label_gripper_touching(s0, s1, a, b, d, th):
    return _hand_at(s1, a, th.gripper_touch_tolerance), _all(len(a))


def label_gripper_closer(s0, s1, a, b, d, th):
    d0 = np.linalg.norm(s0.effector_position - _pos(s0, a), axis=1)
    d1 = np.linalg.norm(s1.effector_position - _pos(s1, a), axis=1)
    shrink = d0 - d1
    yes = shrink > th.closer_margin
    return yes, yes | (shrink < th.closer_ambiguous)


def label_grasped(s0, s1, a, b, d, th):
    return s1.grasped == a, _all(len(a))


def label_on_top(s0, s1, a, b, d, th):
    pa, pb = _pos(s1, a), _pos(s1, b)
    ha, hb = s1.half_sizes[a], s1.half_sizes[b]
    dz = pa[:, 2] - pb[:, 2]
    gap = dz - (ha + hb)
    supported = _contact(s1, a, b) | (np.abs(gap) < th.on_top_tolerance)
    over = np.abs(pa[:, :2] - pb[:, :2]).max(axis=1) < hb
    return supported & over & (dz > 0.5 * (ha + hb)), _all(len(a))


def near_on_top(s0, s1, a, b, d, th):
    """a above b's footprint, higher than resting on it would put it, not supported: held or falling."""
    pa, pb = _pos(s1, a), _pos(s1, b)
    over = np.abs(pa[:, :2] - pb[:, :2]).max(axis=1) < s1.half_sizes[b] + th.near_miss_margin
    rest_dz = s1.half_sizes[a] + s1.half_sizes[b]
    return over & (pa[:, 2] - pb[:, 2] > rest_dz + th.on_top_tolerance)


def near_grasped(s0, s1, a, b, d, th):
    """The hand at or around the block (contact, or grasp point within the margin)."""
    return _hand_at(s1, a, th.near_miss_margin)


def near_touching(s0, s1, a, b, d, th):
    """Surfaces less than the margin apart."""
    return _surface_gap(s1, a, b) < th.near_miss_margin


def label_relative_position(s0, s1, a, b, d, th):
    off = _table_xy(_pos(s1, a) - _pos(s1, b), th.frame_yaw)
    along, _ = _along_perp(off, d)
    yes = along > th.relative_margin
    return yes, yes | (along < th.relative_margin / 3)


# ---------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuestionFamily:
    """One kind of question: subjects, phrasings and the oracle."""

    name: str
    arity: int                      # 1: about block a; 2: about blocks a and b
    symmetric: bool                 # for pairs: (a, b) asks the same as (b, a)
    relative: bool                  # compares t with t+h (else: a fact at t+h)
    phrasings: tuple[str, ...]
    labeler: Labeler = field(repr=False)
    direction_words: dict[str, tuple[str, ...]] = field(default_factory=dict)  # empty: no direction
    near_miss: Callable[..., np.ndarray] | None = field(default=None, repr=False)  # (s0, s1, a, b, d, th) -> bool

    def near_misses(self, states_t: StateArrays, states_th: StateArrays, a: np.ndarray, b: np.ndarray,
                    direction: np.ndarray, answer: np.ndarray, thresholds: Thresholds) -> np.ndarray:
        """Which rows are "no" answers close to a "yes" (all False for a family without `near_miss`)."""
        if self.near_miss is None:
            return np.zeros(len(a), dtype=bool)
        return ~answer & self.near_miss(states_t, states_th, a, b, direction, thresholds)

    @property
    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS if self.direction_words else ()

    @property
    def family_id(self) -> int:
        return FAMILY_IDS[self.name]

    def label(self, states_t: StateArrays, states_th: StateArrays, a: np.ndarray, b: np.ndarray | None = None,
              direction: np.ndarray | None = None, thresholds: Thresholds | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(answer, valid) bool arrays, one per row of the gathered states."""
        a = np.asarray(a, dtype=np.int64)
        b = np.full_like(a, NO_OBJECT) if b is None else np.asarray(b, dtype=np.int64)
        d = np.full_like(a, NO_DIRECTION) if direction is None else np.asarray(direction, dtype=np.int64)
        return self.labeler(states_t, states_th, a, b, d, thresholds or Thresholds())

    def candidate_subjects(self, kinds: Sequence[str], subject_kinds: Sequence[str] = ("block",)) -> np.ndarray:
        """(C, 2) object-index rows (b = -1 for one-object families) this family can ask about."""
        idx = [i for i, k in enumerate(kinds) if k in subject_kinds]
        if self.arity == 1:
            rows = [(i, NO_OBJECT) for i in idx]
        else:
            rows = [(i, j) for i in idx for j in idx if (i < j if self.symmetric else i != j)]
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    def sample_subjects(self, rng: np.random.Generator, kinds: Sequence[str], n: int = 1,
                        subject_kinds: Sequence[str] = ("block",)) -> np.ndarray:
        """n subject rows drawn uniformly from the candidates (with replacement)."""
        cands = self.candidate_subjects(kinds, subject_kinds)
        if len(cands) == 0:
            return cands
        return cands[rng.integers(len(cands), size=n)]

    def render(self, phrasing: int, a: str, b: str = "", direction: int = NO_DIRECTION,
               a_color: str = "", b_color: str = "") -> str:
        """Question text. a / b are noun phrases ("red block"); colours default to their first word."""
        template = self.phrasings[phrasing % len(self.phrasings)]
        dir_phrase = ""
        if self.direction_words:
            if not 0 <= direction < len(DIRECTIONS):
                raise ValueError(f"family {self.name} needs a direction index in 0..{len(DIRECTIONS) - 1}")
            words = self.direction_words[DIRECTIONS[direction]]
            dir_phrase = words[phrasing % len(words)]
        return template.format(a=a, b=b, dir=dir_phrase, ac=a_color or a.split()[0],
                               bc=b_color or (b.split()[0] if b else ""))


_MOVE_WORDS = {
    "left": ("to the left", "left", "to the robot's left", "to the left"),
    "right": ("to the right", "right", "to the robot's right", "to the right"),
    "forward": ("away from the robot", "forward", "away from the robot", "farther from the robot"),
    "backward": ("toward the robot", "backward", "toward the robot", "closer to the robot"),
}
_REL_WORDS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "forward": ("farther from the robot than", "behind"),
    "backward": ("closer to the robot than", "in front of"),
}

FAMILIES: tuple[QuestionFamily, ...] = (
    QuestionFamily("touching", 2, True, False, (
        "Is the {a} touching the {b}?",
        "Are the {a} and the {b} in contact?",
        "Do the {ac} and {bc} blocks touch each other?",
        "Is there contact between the {a} and the {b}?",
        "Are the {ac} block and the {bc} block touching?",
    ), label_touching, near_miss=near_touching),
    QuestionFamily("closer", 2, True, True, (
        "Are the {ac} and {bc} blocks closer together?",
        "Did the {a} and the {b} get closer to each other?",
        "Is the {a} nearer to the {b} than before?",
        "Have the {ac} block and the {bc} block moved closer together?",
    ), label_closer),
    QuestionFamily("moved", 1, False, True, (
        "Did the {a} move {dir}?",
        "Has the {a} been pushed {dir}?",
        "Did the {a} shift {dir}?",
        "Was the {a} moved {dir}?",
    ), label_moved, _MOVE_WORDS),
    QuestionFamily("moved_any", 1, False, True, (
        "Did the {a} move?",
        "Has the {a} been moved?",
        "Did the {a} change its position?",
        "Is the {a} somewhere else than before?",
    ), label_moved_any),
    QuestionFamily("gripper_touching", 1, False, False, (
        "Is the gripper touching the {a}?",
        "Is the robot's hand in contact with the {a}?",
        "Does the gripper touch the {a}?",
        "Is the {a} touching the gripper?",
    ), label_gripper_touching),
    QuestionFamily("gripper_closer", 1, False, True, (
        "Is the gripper closer to the {a}?",
        "Did the gripper move closer to the {a}?",
        "Has the robot's hand approached the {a}?",
        "Is the gripper nearer to the {a} than before?",
    ), label_gripper_closer),
    QuestionFamily("grasped", 1, False, False, (
        "Is the robot grasping the {a}?",
        "Is the {a} held in the gripper?",
        "Is the gripper holding the {a}?",
        "Has the robot got the {a} in its hand?",
    ), label_grasped, near_miss=near_grasped),
    QuestionFamily("on_top", 2, False, False, (
        "Is the {a} on top of the {b}?",
        "Is the {a} stacked on the {b}?",
        "Does the {a} rest on the {b}?",
        "Is the {b} underneath the {a}?",
    ), label_on_top, near_miss=near_on_top),
    QuestionFamily("relative_position", 2, False, False, (
        "Is the {a} {dir} the {b}?",
        "Is the {a} located {dir} the {b}?",
        "Does the {a} lie {dir} the {b}?",
        "Is the {a} placed {dir} the {b}?",
    ), label_relative_position, _REL_WORDS),
)

FAMILY_IDS: dict[str, int] = {f.name: i for i, f in enumerate(FAMILIES)}
FAMILY_BY_NAME: dict[str, QuestionFamily] = {f.name: f for f in FAMILIES}


def get_family(name: str) -> QuestionFamily:
    try:
        return FAMILY_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown question family {name!r}; known: {sorted(FAMILY_BY_NAME)}") from None


def noun_phrases(kinds: Sequence[str], colors: Sequence[str], names: Sequence[str]) -> list[str]:
    """How questions name each object: "red block"; by name where a colour is not unique."""
    out = []
    for kind, color, name in zip(kinds, colors, names):
        same = sum(1 for k, c in zip(kinds, colors) if k == kind and c == color)
        out.append(f"{color} {kind}" if same == 1 else name.replace("_", " "))
    return out


def question_text(family: str, phrasing: int, a: str, b: str = "", direction: str | int | None = None) -> str:
    """Convenience for planners: `question_text("touching", 0, "red block", "blue block")`."""
    d = DIRECTIONS.index(direction) if isinstance(direction, str) else (NO_DIRECTION if direction is None else direction)
    return get_family(family).render(phrasing, a, b, d)
