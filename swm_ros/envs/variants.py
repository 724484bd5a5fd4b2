"""Scene variants by name: the in-distribution scene and the out-of-distribution ones.

A variant fixes the objects (names, colours, shapes) and the look of the table; the layout
is sampled per episode by the task. Block names are `<colour>_block`, so questions and
instructions can name blocks by colour.
"""
from __future__ import annotations

from dataclasses import dataclass

from swm_ros.envs.scene import ObjectSpec, SceneLook

BLOCK_HALF = 0.0225       # 4.5 cm cubes: fit the open pads (9 cm) with margin

_NOMINAL_COLORS = {
    "red": (0.85, 0.12, 0.1, 1.0), "green": (0.15, 0.65, 0.2, 1.0),
    "blue": (0.12, 0.25, 0.85, 1.0), "yellow": (0.95, 0.85, 0.1, 1.0),
}
# Unseen at training time: hues between the nominal ones.
_OOD_COLORS = {
    "purple": (0.5, 0.15, 0.7, 1.0), "orange": (1.0, 0.5, 0.05, 1.0),
    "cyan": (0.1, 0.8, 0.85, 1.0), "pink": (1.0, 0.45, 0.7, 1.0),
}


@dataclass(frozen=True)
class Variant:
    name: str
    objects: tuple[ObjectSpec, ...]
    look: SceneLook

    @property
    def blocks(self) -> tuple[ObjectSpec, ...]:
        return tuple(o for o in self.objects if o.kind == "block")


def _blocks(colors: dict[str, tuple[float, ...]]) -> tuple[ObjectSpec, ...]:
    return tuple(ObjectSpec(f"{c}_block", "block", c, rgba, BLOCK_HALF) for c, rgba in colors.items())


VARIANTS: dict[str, Variant] = {
    "nominal": Variant("nominal", _blocks(_NOMINAL_COLORS), SceneLook()),
    "ood_colors": Variant("ood_colors", _blocks(_OOD_COLORS), SceneLook()),
    "ood_table": Variant("ood_table", _blocks(_NOMINAL_COLORS),
                         SceneLook(table_rgba=(0.38, 0.24, 0.13, 1.0), floor_rgba=(0.55, 0.6, 0.5, 1.0))),
    "ood_distractor": Variant("ood_distractor", _blocks(_NOMINAL_COLORS) + (
        ObjectSpec("black_cylinder", "distractor", "black", (0.08, 0.08, 0.08, 1.0), 0.025, "cylinder"),),
        SceneLook()),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown scene variant {name!r}; valid: {sorted(VARIANTS)}") from None
