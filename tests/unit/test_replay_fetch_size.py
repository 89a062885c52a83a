"""How many messages a replay fetches at once: bounded by WORKER_BATCH_SIZE and by size, so that a
stream of large messages (batches of 1,000 events) never passes the NATS client's pending limit."""

from audit_service.worker import REPLAY_FETCH_BYTES, replay_fetch_size

NATS_CLIENT_PENDING_BYTES = 256 * 2**20  # nats-py's default pending_bytes_limit


def test_small_messages_fetch_the_whole_batch_size():
    assert replay_fetch_size(500, stream_bytes=1000 * 600, stream_messages=1000) == 500


def test_large_messages_fetch_about_the_byte_budget():
    size = replay_fetch_size(500, stream_bytes=1297 * 500_000, stream_messages=1297)
    assert size == REPLAY_FETCH_BYTES // 500_000
    assert size * 500_000 <= REPLAY_FETCH_BYTES < NATS_CLIENT_PENDING_BYTES


def test_a_message_larger_than_the_budget_is_fetched_alone():
    assert replay_fetch_size(500, stream_bytes=8 * REPLAY_FETCH_BYTES, stream_messages=2) == 1


def test_an_empty_stream_gives_the_batch_size():
    assert replay_fetch_size(500, stream_bytes=0, stream_messages=0) == 500
