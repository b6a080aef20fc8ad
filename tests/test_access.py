from oss_cluster.access import bearer_token, is_loopback, token_matches


def test_loopback_bearer_and_token_checks():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "localhost"))
    assert not any(is_loopback(h) for h in ("192.0.2.2", "0.0.0.0", "::ffff:10.0.0.1", "example.org", "", None))
    assert bearer_token("Bearer abc ") == "abc" and bearer_token("bearer abc") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None
    assert token_matches("b", ["a", "b"]) and not token_matches("c", ["a", "b"]) and not token_matches(None, ["a"])
