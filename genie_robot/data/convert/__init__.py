"""Converters from robot datasets (RLDS TFRecord, video files / image folders, rosbag2) into the
Zarr episode store (`genie_robot.data.store`).

Each converter has a Python API (`rlds.convert_rlds`, `video.convert_videos`,
`rosbag.convert_rosbag`) and a `genie-robot convert …` subcommand (`cli.py`). All of them write the
store under a temporary name and rename it when complete (`staging.py`), so a failed conversion
leaves no complete-looking output, and all of them raise `ConversionError` for bad input, naming the
file and the episode (record index) at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genie_robot.errors import InputError


class ConversionError(InputError):
    """Input that cannot be converted; the message names the file, the record/episode and the fix."""


@dataclass
class ConversionReport:
    """What a conversion did. The shard lists are filled by the RLDS converter only."""

    out: str
    episodes: int = 0
    frames: int = 0
    seconds: float = 0.0
    shards_converted: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
