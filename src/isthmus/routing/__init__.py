"""Routing: candidates, scheduling modes, capability filters, failover rules, key health.

Pure logic plus an in-memory state backend; it knows nothing of HTTP or the database.
"""

from isthmus.routing.affinity import AffinityCache
from isthmus.routing.failover import Decision, classify, should_fail_over
from isthmus.routing.health import (
    FailureKind,
    HealthBackend,
    HealthConfig,
    KeyHealthReport,
    KeyStatus,
    MemoryHealth,
)
from isthmus.routing.model import (
    Candidate,
    Endpoint,
    ModelEntry,
    ProviderKey,
    Requirements,
    Route,
    Skipped,
    passthrough_only,
)
from isthmus.routing.router import RoutePlan, Router, RoutingTable, choose_protocol, stable_hash

__all__ = [
    "AffinityCache",
    "Candidate",
    "Decision",
    "Endpoint",
    "FailureKind",
    "HealthBackend",
    "HealthConfig",
    "KeyHealthReport",
    "KeyStatus",
    "MemoryHealth",
    "ModelEntry",
    "ProviderKey",
    "Requirements",
    "Route",
    "RoutePlan",
    "Router",
    "RoutingTable",
    "Skipped",
    "choose_protocol",
    "classify",
    "passthrough_only",
    "should_fail_over",
    "stable_hash",
]
