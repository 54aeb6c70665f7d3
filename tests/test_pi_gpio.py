"""The sorter GPIO through gpiozero's real code path on mock pins (no Pi here)."""

import time

import pytest

from pi_edge.gpio import SorterGpio

PINS = [17, 22, 23, 27]


def test_pulse_is_non_blocking_and_times_out_low():
    g = SorterGpio(PINS, driver="mock")
    try:
        assert not any(g.state(p) for p in PINS)  # all low at start
        t0 = time.perf_counter()
        g.pulse(22, 200)
        assert time.perf_counter() - t0 < 0.05  # the caller is not held for the pulse
        assert g.state(22) and not g.state(27)
        time.sleep(0.35)
        assert not g.state(22)
        hist = g.history(22)
        highs = [t for t, s in hist if s]
        lows = [t for t, s in hist if not s and t > highs[0]]
        assert len(highs) == 1 and 0.18 <= lows[0] - highs[0] <= 0.3
    finally:
        g.close()


def test_close_drives_everything_low_mid_pulse():
    g = SorterGpio(PINS, driver="mock", max_pulse_ms=10_000)
    g.pulse(17, 5000)
    assert g.state(17)
    pins = {p: d.pin for p, d in g._outputs.items()}
    g.close()
    assert all(not pin.state for pin in pins.values())


def test_unknown_pin_is_refused():
    g = SorterGpio(PINS, driver="mock")
    try:
        try:
            g.pulse(5, 100)
        except ValueError as e:
            assert "not one of the sorter pins" in str(e)
        else:
            raise AssertionError("pulse on a non-sorter pin was accepted")
    finally:
        g.close()


def test_a_pulse_over_the_cap_is_refused_and_nothing_moves():
    """Bounded actuation: whatever an answer says, the gate opens at most max_pulse_ms (the
    edge's default: the taxonomy's longest pulse)."""
    from pi_edge.edge import longest_pulse_ms

    assert longest_pulse_ms() == 500
    g = SorterGpio(PINS, driver="mock", max_pulse_ms=longest_pulse_ms())
    try:
        for duration in (501, 60_000, 0, -5):
            with pytest.raises(ValueError):
                g.pulse(17, duration)
        assert g.refused == 4 and not g.pulses and not any(g.state(p) for p in PINS)
        g.pulse(17, 500)  # the longest legitimate pulse still fires
        assert g.state(17) and len(g.pulses) == 1
    finally:
        g.close()
