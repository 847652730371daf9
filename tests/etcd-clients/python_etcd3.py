#!/usr/bin/env python3
"""The core etcd operations through python-etcd3 (PyPI `etcd3`), a client kvset did not write.

Run by tests/tests/etcd_python.rs against a 3-member kvset cluster:
    python_etcd3.py HOST:PORT [HOST:PORT ...]
Exits 0 when every check passes; prints what failed otherwise.
"""
import sys
import threading
import time

import etcd3


def main(endpoints):
    host, port = endpoints[0].rsplit(":", 1)
    c = etcd3.client(host=host, port=int(port), timeout=15)

    # Keys and prefixes.
    c.put("foo", "bar")
    value, meta = c.get("foo")
    assert value == b"bar", value
    for k, v in [("p/a", "1"), ("p/b", "2"), ("p/c", "3")]:
        c.put(k, v)
    got = sorted((m.key, v) for v, m in c.get_prefix("p/"))
    assert got == [(b"p/a", b"1"), (b"p/b", b"2"), (b"p/c", b"3")], got

    # A transaction: compare, success, failure.
    ok, _ = c.transaction(
        compare=[c.transactions.value("foo") == "bar"],
        success=[c.transactions.put("foo", "baz")],
        failure=[c.transactions.put("foo", "never")],
    )
    assert ok, "the compare should hold"
    assert c.get("foo")[0] == b"baz"
    ok, _ = c.transaction(
        compare=[c.transactions.version("foo") == 99],
        success=[c.transactions.put("foo", "never")],
        failure=[c.transactions.get("foo")],
    )
    assert not ok

    # A watch from a revision sees every later change once, in order.
    start = c.get("foo")[1].mod_revision + 1
    events, cancel = c.watch_prefix("w/", start_revision=start)
    seen = []

    def collect():
        for e in events:
            seen.append(e.value)
            if len(seen) == 3:
                break

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    for i in range(3):
        c.put("w/%d" % i, "v%d" % i)
    t.join(20)
    cancel()
    assert seen == [b"v0", b"v1", b"v2"], seen

    # Leases: attach, refresh, expire.
    lease = c.lease(2)
    c.put("leased", "x", lease=lease)
    for _ in range(4):
        lease.refresh()
        time.sleep(1)
    assert c.get("leased")[0] == b"x", "a refreshed lease must not expire"
    deadline = time.time() + 15
    while c.get("leased")[0] is not None:
        assert time.time() < deadline, "the lease never expired"
        time.sleep(0.3)
    revoked = c.lease(60)
    c.put("revoked", "y", lease=revoked)
    revoked.revoke()
    assert c.get("revoked")[0] is None

    # The library's lock recipe.
    lock = c.lock("mutex", ttl=10)
    assert lock.acquire(timeout=10)
    assert lock.is_acquired()
    lock.release()

    # Delete a prefix; members; status.
    deleted = c.delete_prefix("p/")
    assert deleted.deleted == 3, deleted
    names = sorted(m.name for m in c.members)
    assert names == ["kv-0", "kv-1", "kv-2"], names
    status = c.status()
    assert status.leader is not None and status.leader.name.startswith("kv-"), status
    print("python-etcd3: every check passed")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except AssertionError as e:
        print("python-etcd3 check failed:", repr(e))
        raise
