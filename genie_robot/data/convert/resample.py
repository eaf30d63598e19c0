"""Resampling a timestamped frame stream to a fixed rate: at each tick, the nearest earlier frame.

Used by the video converter (`--fps`) and the rosbag converter (camera topics arrive at their own,
often jittery, rate). Streaming: only the latest item is held, never the whole stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
log = logging.getLogger(__name__)

# A frame stamped within 1 us after a tick counts as at the tick: float rounding of i/src vs k/fps
# must not push a frame that lands exactly on a tick to the next one.
_TOLERANCE_NS = 1_000


def nearest_earlier(
    stream: Iterable[tuple[int, Item]],
    fps: float,
    *,
    last_duration_ns: int = 0,
    where: str = "stream",
) -> Iterator[Item]:
    """Yield one item per tick t0 + k / fps, the item with the latest time <= the tick.

    stream: (time in ns, item) in non-decreasing time; an item older than its predecessor is dropped
        (with a warning), as a camera's clock cannot run backwards.
    last_duration_ns: how long the last item stays valid. 0 (rosbag: the last message's duration is
        unknown) ends the ticks at the last item's time; a video passes one frame period, so that
        N frames at rate r become round-up(N * fps / r) frames.
    An item may be yielded several times (upsampling) or not at all (downsampling).
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    period_ns = 1e9 / fps
    t0 = prev_t = None
    prev = None
    k = 0
    dropped = 0
    for t, item in stream:
        if t0 is None:
            t0, prev_t, prev = t, t, item
            continue
        if t < prev_t:
            dropped += 1
            continue
        while t0 + k * period_ns < t - _TOLERANCE_NS:
            yield prev
            k += 1
        prev_t, prev = t, item
    if t0 is None:
        return
    end = prev_t + last_duration_ns
    while t0 + k * period_ns <= end - (_TOLERANCE_NS if last_duration_ns else -_TOLERANCE_NS):
        yield prev
        k += 1
    if dropped:
        log.warning("%s: dropped %d frames whose timestamps went backwards", where, dropped)
