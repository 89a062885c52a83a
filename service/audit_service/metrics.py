"""Prometheus metrics shared by the API and the worker.

With API_WORKERS > 1 the API runs in several processes; PROMETHEUS_MULTIPROC_DIR is then set (by
the CLI) and the exposition merges every process's files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

http_requests = Counter("audit_http_requests_total", "HTTP requests handled", ["method", "route", "status"])
http_latency = Histogram(
    "audit_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
events_accepted = Counter("audit_events_accepted_total", "Events acknowledged by JetStream and answered 202")
events_rejected = Counter("audit_events_rejected_total", "Events refused", ["reason"])

events_stored = Counter("audit_worker_events_stored_total", "Events written to PostgreSQL by the worker")
events_duplicate = Counter("audit_worker_events_duplicate_total", "Redelivered or re-sent events skipped")
worker_batches = Counter("audit_worker_batches_total", "Batches committed by the worker")
worker_errors = Counter(
    "audit_worker_errors_total", "Batches that failed and were left for redelivery", ["kind"]
)
worker_consuming = Gauge(
    "audit_worker_consuming", "1 while the worker is bound to its consumer", multiprocess_mode="max"
)
worker_redeliveries = Counter(
    "audit_worker_redeliveries_total",
    "Messages received again: delivered before and not acked (a crash, a failed store, a dropped fetch)",
)
dead_letters = Counter(
    "audit_worker_dead_letters_total", "Messages moved to the dead_letters table after their last attempt"
)
stream_trimmed = Counter(
    "audit_worker_stream_trimmed_total",
    "Stored (acked) messages purged from the stream to make room: the replay window shrank",
)
worker_batch_seconds = Histogram(
    "audit_worker_batch_duration_seconds", "Time to store one batch", buckets=LATENCY_BUCKETS
)
worker_lag = Gauge(
    "audit_worker_lag_seconds",
    "Age of the newest stored event when it was committed",
    multiprocess_mode="max",
)

# Filled at scrape time by the API from PostgreSQL and JetStream.
queue_messages = Gauge("audit_queue_messages", "Messages held in the stream", multiprocess_mode="mostrecent")
queue_bytes = Gauge("audit_queue_bytes", "Bytes held in the stream", multiprocess_mode="mostrecent")
queue_max_bytes = Gauge(
    "audit_queue_max_bytes", "The stream's byte limit (0: none)", multiprocess_mode="mostrecent"
)
queue_pending = Gauge(
    "audit_queue_consumer_pending", "Messages not yet delivered to the worker", multiprocess_mode="mostrecent"
)
queue_ack_pending = Gauge(
    "audit_queue_consumer_ack_pending", "Messages delivered but not yet acked", multiprocess_mode="mostrecent"
)
dead_letters_held = Gauge(
    "audit_dead_letters",
    "Messages held in the dead_letters table (inspect, then re-drive)",
    multiprocess_mode="mostrecent",
)
stream_problems = Gauge(
    "audit_stream_config_problems",
    "What the service found wrong with the stream's configuration (0: nothing)",
    multiprocess_mode="max",
)
chain_head_seq = Gauge(
    "audit_chain_head_seq",
    "Newest link of each tenant's hash chain",
    ["tenant_id"],  # the id only: tenant names are customer data
    multiprocess_mode="mostrecent",
)
chain_verify_invalid = Counter(
    "audit_chain_verify_invalid_total", "Verifications (GET /api/v1/audit/verify) that found a broken chain"
)
auth_failures_limited = Counter(
    "audit_auth_failures_limited_total", "Requests refused (429) after too many failed authentications"
)
component_up = Gauge(
    "audit_component_up",
    "1 when a dependency answered the last probe",
    ["component"],
    multiprocess_mode="mostrecent",
)
db_pool = Gauge(
    "audit_db_pool_connections", "Database pool connections", ["state"], multiprocess_mode="mostrecent"
)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
