"""Latency of a subnet on a target device: measured here, estimated from per-layer costs, or read
from a table measured on the device.

    profile = load_profile("jetson")                      # conf/hw/jetson.yaml, validated
    profile.latency_ms(layer_costs=net.layer_costs(arch)) # LatencyResult(ms, ..., source="estimated")

Works on `nn.Module`s, input shapes and plain records; imports neither `supernet` nor `search`.
"""

from hw_profiles.errors import ArchNotInTableError, ProfileError
from hw_profiles.measure import measure_models, write_table
from hw_profiles.profile import (
    KINDS,
    PROFILE_DIR,
    HardwareProfile,
    LatencyResult,
    known_profiles,
    load_profile,
)
from hw_profiles.roofline import OP_KINDS, PRECISIONS, Roofline
from hw_profiles.table import canonical_arch, read_table

__all__ = [
    "KINDS",
    "OP_KINDS",
    "PRECISIONS",
    "PROFILE_DIR",
    "ArchNotInTableError",
    "HardwareProfile",
    "LatencyResult",
    "ProfileError",
    "Roofline",
    "canonical_arch",
    "known_profiles",
    "load_profile",
    "measure_models",
    "read_table",
    "write_table",
]
