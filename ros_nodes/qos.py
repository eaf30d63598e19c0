"""QoS profiles from one parameter string, so each endpoint's QoS is configurable from `--ros-args`.

    "sensor_data"      best effort, keep last 5, volatile (rclpy's qos_profile_sensor_data): camera input
    "reliable"         reliable, keep last 10, volatile: commands and the imagined images
    "best_effort"      best effort, keep last 10, volatile
    "reliable:2"       any of the above with another history depth
    "...,transient_local"  durability transient local (late joiners get the last `depth` messages)

A best-effort subscriber accepts a reliable publisher, not the reverse: inputs default to sensor_data so
any camera driver connects; outputs default to reliable, which both kinds of subscriber accept.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

_BASE = {
    "sensor_data": (ReliabilityPolicy.BEST_EFFORT, qos_profile_sensor_data.depth),
    "reliable": (ReliabilityPolicy.RELIABLE, 10),
    "best_effort": (ReliabilityPolicy.BEST_EFFORT, 10),
}


def qos_from_string(spec: str) -> QoSProfile:
    """'reliable' | 'best_effort' | 'sensor_data', optionally ':DEPTH' and ',transient_local'."""
    text = spec.strip().lower()
    durability = DurabilityPolicy.VOLATILE
    if "," in text:
        text, extra = (s.strip() for s in text.split(",", 1))
        if extra != "transient_local":
            raise ValueError(f"QoS {spec!r}: unknown option {extra!r}; the only option is ',transient_local'")
        durability = DurabilityPolicy.TRANSIENT_LOCAL
    name, _, depth_text = text.partition(":")
    if name not in _BASE:
        raise ValueError(f"QoS {spec!r}: expected one of {', '.join(_BASE)} (optionally ':DEPTH'), e.g. 'reliable:5'")
    reliability, depth = _BASE[name]
    if depth_text:
        try:
            depth = int(depth_text)
        except ValueError:
            raise ValueError(f"QoS {spec!r}: depth {depth_text!r} is not an integer") from None
        if depth < 1:
            raise ValueError(f"QoS {spec!r}: depth must be at least 1")
    return QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=depth, durability=durability)
