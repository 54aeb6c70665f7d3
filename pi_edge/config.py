"""Edge configuration: a YAML file (``--config``), overridden by ``PI_EDGE_*`` environment
variables. The GPIO pin/pulse per verdict is *not* configured here: the gateway's answer
carries it, and the taxonomy file is the offline default."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PI_EDGE_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8080"
    device_id: str = "pi-1-left"
    api_key: str = ""
    side: Literal["left", "right"] = "left"
    drives_gpio: bool = False
    # first part of every board id (<line>-<session>-<n> must fit the gateway's 64 characters)
    line_id: str = Field("line-1", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")

    # capture (seed: 640x480 at ~10 fps, JPEG q85)
    source: str = "camera:0"  # camera:N | picamera2 | file:PATH | folder:DIR | video:PATH | synthetic
    width: int = 640
    height: int = 480
    fps: float = 10.0
    jpeg_quality: int = Field(85, ge=30, le=100)

    # board identity: a photo-eye on this GPIO input (BCM) counts boards; "none" = every frame
    # is a board (simulation, or a camera triggered by the PLC itself)
    trigger_pin: int | None = None

    # the line's decision window (seed: 2.5 s): a verdict older than this arrives after the
    # board has passed the sorter gate, so it is recorded but fires no pulse
    decision_window_s: float = 2.5

    # transport security: an https:// gateway is verified against this CA file (the plant's
    # own CA; None: the system's store). The device key is never sent over plain HTTP to
    # another machine unless allow_plain_http is true (a lab bench)
    ca_file: str | None = None
    allow_plain_http: bool = False

    # sending. A board's answer is worth most within the line's latency budget (TARGETS: 300
    # ms from capture to verdict); max_in_flight None derives the requests kept on the wire
    # from it: enough for every frame captured within one budget (ceil(budget x fps), at
    # least 2), so a frame is skipped only when the frames before it are already later than
    # the budget, never because a fixed depth was shallower than the line's rate
    latency_budget_ms: float = Field(300.0, gt=0, le=60_000)
    timeout_s: float = 5.0
    max_in_flight: int | None = Field(None, ge=1)
    retries: int = 3
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0
    heartbeat_s: float = 5.0
    replay_rate_per_s: float = 5.0  # spooled frames sent again per second (their own lane)
    spool_dir: str = "spool"
    spool_max_bytes: int = 200 << 20
    spool_max_items: int = 20_000

    # ops
    log_dir: str = "logs"
    overlay: Literal["none", "save", "window"] = "none"
    overlay_dir: str = "overlay"
    gpio_driver: Literal["auto", "gpiozero", "mock"] = "auto"
    # the longest pulse the edge will fire, whatever an answer says; None: the taxonomy's
    # longest pulse (a corrupted or hostile answer must not hold a sorter gate open)
    max_pulse_ms: int | None = Field(None, ge=1)


MIN_IN_FLIGHT = 2  # one answer on its way back while the next frame goes out
MAX_IN_FLIGHT = 32  # a mistyped frame rate must not open hundreds of connections


def in_flight_limit(cfg: EdgeConfig) -> int:
    """Requests a sender keeps on the wire: ``max_in_flight`` when set, else what one latency
    budget holds at the capture rate."""
    if cfg.max_in_flight is not None:
        return cfg.max_in_flight
    if not 0 < cfg.fps < math.inf:  # fps <= 0: frames as fast as the source gives them, unpaced
        return MIN_IN_FLIGHT
    held = math.ceil(cfg.latency_budget_ms * cfg.fps / 1000 - 1e-9)
    return min(MAX_IN_FLIGHT, max(MIN_IN_FLIGHT, held))


def load_config(path: str | Path | None = None, **overrides) -> EdgeConfig:
    """YAML values first, then environment variables, then explicit overrides."""
    data: dict = {}
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
    env = EdgeConfig()  # only to see which fields the environment sets
    explicit_env = {k: getattr(env, k) for k in env.model_fields_set}
    return EdgeConfig.model_validate({**data, **explicit_env, **overrides})
