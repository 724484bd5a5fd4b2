"""Episode data: the on-disk episode format (`episodes`) and `swm collect` (`collect`)."""
from swm_ros.data.episodes import (  # noqa: F401
    FORMAT_VERSION, EpisodeFormatError, EpisodeMeta, EpisodeReader, EpisodeRecorder, StateArrays,
    is_complete, read_meta, write_episode,
)
