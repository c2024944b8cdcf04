from pratico_daemon.session.ratelimit import TokenBucket


def test_burst_then_sustained_rate():
    bucket = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert abs(bucket.retry_after() - 0.1) < 1e-9
    assert bucket.take(0.1)
    assert not bucket.take(0.1)
    # Idle time refills up to the burst, never beyond.
    assert sum(bucket.take(100.0) for _ in range(10)) == 5
