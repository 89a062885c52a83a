"""How many messages the worker and a replay fetch at once: bounded by WORKER_BATCH_SIZE and by
size, so that a backlog of large messages (batches of 1,000 events) never passes the NATS client's
pending limit, which drops what is over it."""

from types import SimpleNamespace

from audit_service.worker import FETCH_BYTES, first_fetch_size, next_fetch_size

NATS_CLIENT_PENDING_BYTES = 256 * 2**20  # nats-py's default pending_bytes_limit


def messages(*sizes: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(data=b"x" * size) for size in sizes]


def test_the_first_fetch_holds_no_more_of_the_largest_message_the_broker_takes_than_the_budget():
    assert first_fetch_size(500, max_payload=8 * 2**20) == FETCH_BYTES // (8 * 2**20)
    assert first_fetch_size(500, max_payload=1000) == 500
    assert first_fetch_size(500, max_payload=2 * FETCH_BYTES) == 1


def test_small_messages_double_the_fetch_up_to_the_batch_size():
    sizes = [4]
    while sizes[-1] < 500:
        sizes.append(next_fetch_size(500, sizes[-1], messages(*[600] * sizes[-1])))
    assert sizes == [4, 8, 16, 32, 64, 128, 256, 500]


def test_large_messages_keep_the_fetch_within_the_byte_budget():
    size = next_fetch_size(500, 500, messages(600, 500_000, 600))
    assert size == FETCH_BYTES // 500_000
    assert size * 500_000 <= FETCH_BYTES < NATS_CLIENT_PENDING_BYTES


def test_a_message_larger_than_the_budget_is_fetched_alone():
    assert next_fetch_size(500, 40, messages(2 * FETCH_BYTES)) == 1


def test_an_empty_fetch_keeps_growing():
    assert next_fetch_size(500, 4, []) == 8
