"""Locks are leases: a live holder renews its lock and blocks every other writer; a lock
nobody renews (its holder preempted, its VM gone) is taken over from any host once the
lease ran out; a dead pid on this host is cleared at once."""
import json
import logging
import os
import time

import pytest

from leukemia_tf import lock


def _write(path, **fields):
    holder = {"host": "vm-old", "pid": 4242, "token": "theirs",
              "started": "2026-01-01T00:00:00Z", **fields}
    path.write_text(json.dumps(holder))


def test_a_live_lease_blocks_every_host(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.05)
    monkeypatch.setattr(lock, "hostname", lambda: "vm-old")
    live = lock.Lock(str(tmp_path), "train.lock", "trainer")
    live.acquire()
    try:
        monkeypatch.setattr(lock, "hostname", lambda: "vm-new")
        start = time.monotonic()
        with pytest.raises(lock.LockError, match=rf"host vm-old, pid {os.getpid()}.*renewed "
                                                 r"0 s ago, taken over once not renewed "
                                                 r"for 120 s"):
            lock.Lock(str(tmp_path), "train.lock", "trainer").acquire()
        assert time.monotonic() - start < 5  # refused at the first renewal it saw
        assert lock.live_holder(str(tmp_path), "train.lock")["host"] == "vm-old"
    finally:
        live.release()


def test_a_dead_pid_or_this_very_process_on_this_host_is_taken_over_at_once(
        tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "hostname", lambda: "vm-a")
    for pid in (2 ** 22 + 7, os.getpid()):  # not running; reused by this process
        _write(tmp_path / "train.lock", host="vm-a", pid=pid, renewed=time.time())
        start = time.monotonic()
        with lock.Lock(str(tmp_path), "train.lock", "trainer"):
            assert time.monotonic() - start < 5


def test_a_lease_not_renewed_is_taken_over_from_another_host(tmp_path, monkeypatch, caplog):
    _write(tmp_path / "train.lock", renewed=time.time() - 121)
    monkeypatch.setattr(lock, "hostname", lambda: "vm-new")
    assert lock.live_holder(str(tmp_path), "train.lock") is None
    caplog.set_level(logging.WARNING, logger="leukemia_tf")
    with lock.Lock(str(tmp_path), "train.lock", "trainer"):
        mine = json.loads((tmp_path / "train.lock").read_text())
        assert (mine["host"], mine["pid"]) == ("vm-new", os.getpid())
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"taking over lock {tmp_path}/train.lock: "
                                                 "host vm-old, pid 4242 has not renewed it "
                                                 "for 121 s (lease 120 s)")
    assert not (tmp_path / "train.lock").exists()


def test_a_lock_of_an_older_trainer_counts_from_its_start(tmp_path, monkeypatch):
    _write(tmp_path / "train.lock")  # no renewal time: started long ago
    monkeypatch.setattr(lock, "hostname", lambda: "vm-new")
    with lock.Lock(str(tmp_path), "train.lock", "trainer"):
        pass


def test_the_holder_renews_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.05)
    monkeypatch.setattr(lock, "LEASE_SECONDS", 0.5)
    held = lock.Lock(str(tmp_path), "convert.lock", "converter")
    held.acquire()
    try:
        first = json.loads((tmp_path / "convert.lock").read_text())["renewed"]
        time.sleep(0.8)  # longer than the lease: a renewing holder stays live
        with pytest.raises(lock.LockError, match="in use by another converter"):
            lock.Lock(str(tmp_path), "convert.lock", "converter").acquire()
        assert json.loads((tmp_path / "convert.lock").read_text())["renewed"] > first
    finally:
        held.release()
    assert not (tmp_path / "convert.lock").exists() and held._renewer is None
    assert sorted(os.listdir(tmp_path)) == []  # no renewal temporaries left


def test_a_restart_on_another_host_waits_for_the_lease(tmp_path, monkeypatch):
    """A preempted holder stops renewing; its restart on a new VM gets in after the lease."""
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.05)
    monkeypatch.setattr(lock, "LEASE_SECONDS", 0.4)
    monkeypatch.setattr(lock, "hostname", lambda: "vm-a")
    old = lock.Lock(str(tmp_path), "train.lock", "trainer")
    old.acquire()
    old._stop.set()  # the VM is gone: nothing renews, nothing releases
    old._renewer.join()
    monkeypatch.setattr(lock, "hostname", lambda: "vm-b")
    start = time.monotonic()
    with lock.Lock(str(tmp_path), "train.lock", "trainer"):
        assert json.loads((tmp_path / "train.lock").read_text())["host"] == "vm-b"
        assert 0.3 < time.monotonic() - start < 5


def test_a_lock_of_another_host_is_watched_until_its_lease_runs_out(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.1)
    monkeypatch.setattr(lock, "LEASE_SECONDS", 0.6)
    _write(tmp_path / "train.lock", renewed=time.time() - 0.3)
    monkeypatch.setattr(lock, "hostname", lambda: "vm-new")
    caplog.set_level(logging.WARNING, logger="leukemia_tf")
    start = time.monotonic()
    with lock.Lock(str(tmp_path), "train.lock", "trainer"):
        waited = time.monotonic() - start
    assert 0.2 < waited < 2
    said = [r.getMessage() for r in caplog.records]
    assert "waiting" in said[0] and said[1].startswith("taking over lock")
