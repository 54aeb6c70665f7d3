"""The platform's settings: every knob an environment variable with a sane default (embedded
defaults: SQLite file, in-process pairing, Triton on localhost). One class for the gateway,
the batch engine and the store; each reads the fields it needs."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pcb.image_decode import MAX_PIXELS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", env_file=".env", extra="ignore")

    triton_url: str = "127.0.0.1:8001"  # gRPC, for inference
    triton_http_url: str = "127.0.0.1:8000"  # HTTP, for the repository API (admin hot-swap)
    model_repository: str = "model_repository"  # shared with Triton (same volume) for promotions
    triton_timeout_s: float = 5.0
    # images (a dual board counts two) this gateway process has in Triton at once; past it a
    # board is refused at once (503 inference_overloaded + Retry-After) rather than queued to
    # go late. The line's models carry no Triton queue bound: one would switch off Triton's
    # prefetching (export/detector_config.py). 64 at the CPU detector's ~60-130 images/s is
    # 0.5-1 s of queue, within the pairing window's order; with N gateway processes on one
    # Triton, divide. 0: no bound
    triton_max_in_flight: int = Field(default=64, ge=0)
    # the key Triton's restricted APIs (model repository, shared memory) ask for; None: none
    triton_admin_key: str | None = None
    # "round_robin": spread requests over every replica TRITON_URL resolves to (e.g.
    # dns:///triton-pods:8001, a headless Service); empty: one connection (compose, one box)
    triton_grpc_lb_policy: str = ""
    database_url: str = "sqlite:///build/store"
    redis_url: str | None = None
    # every Redis call (pairing, idempotency records) waits at most this long: a blackholed
    # Redis costs one timeout per request, then the gateway pairs in-process until it answers
    redis_timeout_s: float = 0.25
    idempotency_ttl_s: float = 3600  # shared records in Redis; the outbox keeps 24 h locally
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    pairing_window_ms: int = 1500
    # captured_at must be a finite time in [now - max age, now + skew]; anything else is 422
    # a spool replayed after a long outage, or a Pi without RTC/NTP booting on an old clock
    captured_at_max_age_s: float = 365 * 86400
    captured_at_max_skew_s: float = 86400  # an edge's clock ahead of the gateway's
    # access (gateway/core/security.py): "on", or "off" for a lab bench (every route open)
    auth_mode: Literal["on", "off"] = "on"
    admin_token: str | None = None  # the bootstrap admin credential (Bearer only)
    session_secret: str | None = None  # signs login sessions; default: derived from ADMIN_TOKEN
    # origins the pages are served from when a proxy in front rewrites Host (comma-separated,
    # e.g. "https://gateway.line1.plant"); the request's own Host is always one
    public_origins: str = ""
    metrics_token: str | None = None  # Prometheus' scrape token for /metrics (else an admin)
    auth_fail_rate: str = "30/minute"  # failed authentications per (client address, claimed key id)
    auth_fail_addr_rate: str = "300/minute"  # failed authentications per client address, any key
    principal_rate: str = "1200/minute"  # requests per principal (a dashboard polls)
    max_event_streams: int = 8
    # HTTPS (python -m gateway.serve): a certificate and its key; a CA to require client certs
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None  # Server-Sent Event streams open at once per credential
    outbox_path: str = "build/outbox.db"  # local, durable; one per gateway machine
    image_dir: str = "build/images"
    image_policy: str = "defects"  # all / defects / none
    image_max_age_days: float = 30
    image_max_bytes: int = 5 << 30
    # shadow (gateway/services/shadow.py): the share of live frames mirrored to a shadow
    # version while one is loaded, and the queue they wait in (full: the newest is dropped)
    shadow_share: float = Field(default=1.0, ge=0.0, le=1.0)
    shadow_queue: int = Field(default=32, ge=1, le=10_000)
    rate_limit_per_s: float = 30.0  # per device, per worker; 0 switches it off
    rate_limit_burst: int = 60  # at once; at most this many in any burst/rate seconds (security.limit_device)
    log_level: str = "INFO"
    plant_timezone: str = "UTC"  # IANA name, e.g. Asia/Seoul: statistics count the plant's days
    # the seed's /predict and /predict_dual: off unless asked for; then a device key, or no key
    # from the networks listed here (comma-separated CIDRs), rate limited per client address
    seed_compat: bool = False
    seed_compat_allow_nets: str = ""
    seed_compat_rate: str = "20/second"
    seed_left_device: str = "seed-left"
    seed_right_device: str = "seed-right"
    # batch engine (batch): Celery over this broker; memory:// runs it in-process
    batch_broker_url: str = "memory://"
    batch_queue: str = "pcb-batch"
    batch_data_dir: str = "build/batch"  # uploaded job files; shared storage when workers are remote
    batch_allowed_roots: str = ""  # os.pathsep-separated folders the API may read jobs from
    batch_chunk_size: int = 8  # items per task (one Triton batch); the auto-tuner's pick wins
    batch_concurrency: int = 2  # chunks in Triton at once, per worker, to start with (the tuner's pick wins);
    # then the congestion controller moves it within 1..BATCH_MAX_INFLIGHT
    batch_max_inflight: int = 6  # the controller's ceiling (a worker's --concurrency overrides it)
    batch_trace_dir: str = ""  # each worker appends its controller's decisions here (JSON lines); empty: off
    batch_window: int = 8  # chunks handed to the broker at once, over all jobs
    batch_aging_s: float = 60.0  # a job waiting without a slot climbs one level per this many seconds
    batch_max_retries: int = 4  # transient failures (Triton, database) per chunk
    batch_lease_s: float = 300.0  # workers renew every lease/3; a lapsed lease is re-sent
    batch_max_items: int = 100_000
    batch_max_upload_bytes: int = 512 * 1024 * 1024
    batch_metrics_port: int = 9810  # each worker's own /metrics
    # a worker process's own CPU priority (serving/cpu_priority.py: normal, nice:N, idle): on a
    # host it shares with the gateway, its own work (Celery, reading files, writing results)
    # must not delay the line's HTTP and outbox work; inside Triton the batch lane keeps it
    # off the line's instances
    batch_cpu_priority: str = "nice:10"
    batch_mem_limit_mb: float = 1024.0  # the worker's own resident memory: above it, smaller Triton batches
    # photo enhancement (gateway/services/enhance.py, the face_enhance model in Triton)
    enhance_dir: str = "build/enhance"  # uploads and results, deleted after the TTL
    enhance_concurrency: int = 4  # photos in Triton at once: enough for its batcher to combine
    enhance_max_queue: int = 200  # photos waiting; beyond that uploads get 503 + Retry-After
    enhance_max_files: int = 20  # per batch (seed)
    enhance_max_batch_bytes: int = 120 * 1024 * 1024  # one batch upload in all
    enhance_max_pixels: int = 16_000_000  # per photo; the x2 output stays under 64 MP
    enhance_result_ttl_s: float = 3600.0  # results kept this long after they finish
    enhance_timeout_s: float = 300.0  # one photo through Triton (a 512 px face is ~6 s on a CPU)


    @field_validator("plant_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"PLANT_TIMEZONE {v!r} is not a known time zone") from e
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
