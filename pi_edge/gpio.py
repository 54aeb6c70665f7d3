"""The sorter's GPIO on Pi 1: one non-blocking pulse per board, on the pin the gateway's
answer names (the taxonomy file is only the offline default).

Drivers, tried in order: gpiozero (works on the Pi 5 through lgpio, and on older Pis),
RPi.GPIO directly, and off a Pi gpiozero's MockFactory (same code path, pins are simulated
and their state history can be read back). Every pin is driven low at start, after each
pulse, on close, at interpreter exit and on SIGTERM (see ``pi_edge/__main__.py``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("pi_edge.gpio")


class SorterGpio:
    def __init__(self, pins: Iterable[int], driver: str = "auto", max_pulse_ms: int = 1000):
        self.pins = sorted(set(int(p) for p in pins))
        self.driver = driver
        self.max_pulse_ms = max_pulse_ms  # the actuation bound, besides the pin allow-list
        self.refused = 0
        self._outputs: dict[int, Any] = {}  # gpiozero devices (imported only on a Pi or with mock pins)
        self._rpi = None
        self._timers: dict[int, threading.Timer] = {}
        self._lock = threading.Lock()
        self.pulses: list[tuple[float, int, int]] = []  # (time, pin, duration_ms), for logs/tests
        self._open(driver)
        self.all_low()
        atexit.register(self.close)

    def _open(self, driver: str) -> None:
        if driver in ("auto", "gpiozero", "mock"):
            try:
                from gpiozero import Device, DigitalOutputDevice

                if driver == "mock":
                    from gpiozero.pins.mock import MockFactory

                    Device.pin_factory = MockFactory()
                try:
                    self._outputs = {p: DigitalOutputDevice(p, initial_value=False) for p in self.pins}
                except Exception:  # noqa: BLE001 - no real pins here (not a Pi)
                    if driver != "auto":
                        raise
                    from gpiozero.pins.mock import MockFactory

                    log.warning("no GPIO hardware found: using gpiozero's mock pins")
                    Device.pin_factory = MockFactory()
                    self._outputs = {p: DigitalOutputDevice(p, initial_value=False) for p in self.pins}
                    self.driver = "mock"
                else:
                    self.driver = "mock" if driver == "mock" else "gpiozero"
                return
            except ImportError:
                if driver not in ("auto",):
                    raise
        import RPi.GPIO as GPIO  # the fallback when gpiozero is missing

        GPIO.setmode(GPIO.BCM)
        for p in self.pins:
            GPIO.setup(p, GPIO.OUT, initial=GPIO.LOW)
        self._rpi = GPIO
        self.driver = "RPi.GPIO"

    def _set(self, pin: int, high: bool) -> None:
        if self._rpi is not None:
            self._rpi.output(pin, self._rpi.HIGH if high else self._rpi.LOW)
        else:
            dev = self._outputs[pin]
            dev.on() if high else dev.off()

    def pulse(self, pin: int, duration_ms: int) -> None:
        """Raise ``pin`` for ``duration_ms`` without blocking the caller. A pin off the
        allow-list or a pulse outside 1..``max_pulse_ms`` is refused (ValueError), logged
        and counted: nothing moves."""
        if pin not in self.pins or not 0 < duration_ms <= self.max_pulse_ms:
            self.refused += 1
            why = (f"pin {pin} is not one of the sorter pins {self.pins}" if pin not in self.pins
                   else f"a {duration_ms} ms pulse is outside 1..{self.max_pulse_ms} ms")
            log.error("GPIO pulse refused: %s", why)
            raise ValueError(why)
        with self._lock:
            old = self._timers.pop(pin, None)
            if old:
                old.cancel()
            self._set(pin, True)
            t = threading.Timer(duration_ms / 1000, self._end, args=(pin,))
            t.daemon = True
            self._timers[pin] = t
            t.start()
            self.pulses.append((time.time(), pin, duration_ms))

    def _end(self, pin: int) -> None:
        with self._lock:
            self._set(pin, False)
            self._timers.pop(pin, None)

    def all_low(self) -> None:
        for p in self.pins:
            try:
                self._set(p, False)
            except Exception:  # noqa: BLE001 - closing down: do what can be done
                pass

    def state(self, pin: int) -> bool:
        if self._rpi is not None:
            return bool(self._rpi.input(pin))
        return bool(self._outputs[pin].value)

    def history(self, pin: int) -> list[tuple[float, bool]]:
        """Mock pins only: (seconds since the pin was created, state) for each change."""
        pin_obj = self._outputs[pin].pin
        return [(t.timestamp.total_seconds() if hasattr(t.timestamp, "total_seconds") else float(t.timestamp),
                 bool(t.state)) for t in getattr(pin_obj, "states", [])]

    def close(self) -> None:
        with self._lock:
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()
        self.all_low()
        for dev in self._outputs.values():
            try:
                dev.close()
            except Exception:  # noqa: BLE001
                pass
        self._outputs = {} if self._rpi is None else self._outputs
        if self._rpi is not None:
            self._rpi.cleanup(self.pins)
            self._rpi = None
