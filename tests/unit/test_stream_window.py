"""broker.trim_point: how far the worker may shrink the replay window when the stream fills."""

from audit_service.broker import TRIM_HIGH, TRIM_LOW, trim_point

MIB = 1024 * 1024


def test_nothing_is_trimmed_below_the_high_mark():
    assert trim_point(int(TRIM_HIGH * 100 * MIB), 1000, 1, 100 * MIB, ack_floor=1000) is None


def test_a_full_stream_of_stored_messages_is_trimmed_down_to_the_low_mark():
    # 90 MiB in 900 messages of 0.1 MiB, all stored: down to 60 MiB = drop the oldest 300.
    assert TRIM_LOW == 0.6
    assert trim_point(90 * MIB, 900, 1, 100 * MIB, ack_floor=900) == 301


def test_never_past_the_ack_floor():
    # Only the first 50 messages are stored: the window may lose those 50 and no more.
    assert trim_point(95 * MIB, 950, 1, 100 * MIB, ack_floor=50) == 51


def test_nothing_stored_means_nothing_trimmed():
    # The consumer acked nothing of what is in the stream: the API must refuse instead.
    assert trim_point(99 * MIB, 990, 500, 100 * MIB, ack_floor=499) is None
    assert trim_point(99 * MIB, 990, 500, 100 * MIB, ack_floor=10) is None


def test_no_byte_limit_means_no_trim():
    assert trim_point(10**12, 10**6, 1, 0, ack_floor=10**6) is None
    assert trim_point(10**12, 10**6, 1, -1, ack_floor=10**6) is None
