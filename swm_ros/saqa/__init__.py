"""SAQA: question families with oracle labels from privileged state, horizons, building, reading.

Imports are light (numpy, h5py); `SAQADataset` is in `swm_ros.saqa.dataset`.
"""
from swm_ros.saqa.families import (  # noqa: F401
    DIRECTIONS, FAMILIES, FAMILY_IDS, QuestionFamily, Thresholds, get_family, noun_phrases, question_text,
)
from swm_ros.saqa.horizons import sample_horizons, start_frames  # noqa: F401
