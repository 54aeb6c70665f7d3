from pi_edge.spool import Spool


def test_order_bounds_and_restart(tmp_path):
    s = Spool(tmp_path, max_bytes=10_000, max_items=3)
    for i in range(5):
        s.put(bytes([i]) * 100, {"board_id": f"B{i}"})
    # bounded to 3 items: the two oldest were dropped
    assert len(s) == 3 and s.dropped == 2
    assert [e.meta["board_id"] for e in s.oldest(10)] == ["B2", "B3", "B4"]
    # a restart sees the same entries, in the same order, and keeps numbering after them
    s2 = Spool(tmp_path, max_bytes=10_000, max_items=3)
    first = s2.oldest(1)[0]
    assert first.meta["board_id"] == "B2" and first.image.read_bytes() == bytes([2]) * 100
    s2.done(first.seq)
    seq = s2.put(b"x" * 10, {"board_id": "B5"})
    assert seq > first.seq and [e.meta["board_id"] for e in s2.oldest(10)] == ["B3", "B4", "B5"]


def test_byte_bound_drops_oldest(tmp_path):
    s = Spool(tmp_path, max_bytes=3000, max_items=100)
    for i in range(6):
        s.put(b"j" * 900, {"board_id": f"B{i}"})
    kept = [e.meta["board_id"] for e in s.oldest(10)]
    assert kept[-1] == "B5" and "B0" not in kept and s.dropped >= 3


def test_interrupted_write_is_ignored(tmp_path):
    s = Spool(tmp_path)
    s.put(b"abc", {"board_id": "B0"})
    (tmp_path / "000000000001.json.tmp").write_text("{half")
    assert [e.meta["board_id"] for e in Spool(tmp_path).oldest(5)] == ["B0"]
    assert not list(tmp_path.glob("*.tmp"))
