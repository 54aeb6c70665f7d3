"""The FastAPI application: one shared Triton client, JSON errors everywhere."""

from __future__ import annotations

import asyncio
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from batch.engine import BatchEngine
from gateway.api import admin, auth, edge, enhance, feedback, inspect, jobs, live, operator, seed_compat
from gateway.api.operator import ONLINE_AFTER_S
from gateway.api.schemas.health import Health, Liveness, NotReady, Readiness
from gateway.core.errors import ApiError
from gateway.core.logging import setup as setup_logging
from gateway.core.metrics import OUTBOX_DEPTH, REGISTRY, TRITON_READY, observe_batch, observe_edges
from gateway.core.middleware import SMALL_BODY_BYTES, RequestMiddleware
from gateway.core.security import authorize, bearer_of, check_settings, require
from gateway.services.db_writer import DbWriter
from gateway.services.devices import DeviceRegistry
from gateway.services.drainer import Drainer
from gateway.services.enhance import EnhanceService
from gateway.services.housekeeping import Housekeeping
from gateway.services.idempotency import Idempotency
from gateway.services.image_store import ImageStore
from gateway.services.inspection import InspectionService
from gateway.services.line_sessions import LineSessions
from gateway.services.live import LiveFeed
from gateway.services.outbox import Outbox
from gateway.services.pair_store import FallbackPairStore, MemoryPairStore, RedisPairStore
from gateway.services.principals import PrincipalRegistry
from gateway.services.shadow import ShadowMirror
from gateway.services.system_log import SystemLogger
from gateway.services.triton import TritonService
from settings.environment import get_settings
from store.migrate import upgrade
from store.session import make_engine, make_sessionmaker

log = logging.getLogger("gateway")


# the one migration try at start: long enough for a whole schema on a healthy database, and
# only spent on a slow one (an unreachable database fails its 3 s connect and the line starts)
START_MIGRATION_TIMEOUT_S = 15.0


async def _db_start(settings, app: FastAPI, timeout_s: float = START_MIGRATION_TIMEOUT_S) -> bool:
    """Pre-start: bring the database to the newest schema (under a lock: several workers
    start at once). The line does not wait for the database: if it is not there, the
    gateway starts anyway (inspections go to the outbox) and ``_migrate_later`` finishes the
    job when it is back. True if the database is ready now."""
    engine = make_engine(settings.database_url)
    app.state.engine = engine
    app.state.sessions = make_sessionmaker(engine)
    # operator reads: their own engine with 2 s socket timeouts (a blackholed database frees
    # their threads fast) next to the writers' 10 s
    app.state.read_engine = make_engine(settings.database_url, read_timeout_s=2, connect_timeout_s=2)
    app.state.read_sessions = make_sessionmaker(app.state.read_engine)
    try:
        await asyncio.wait_for(asyncio.to_thread(upgrade, settings.database_url), timeout_s)
        return True
    except Exception as e:  # noqa: BLE001 - any connection error: start without it
        log.warning("database not ready at start (%r): inspecting into the outbox, migrating when it is back", e)
        return False


async def _migrate_later(settings, app: FastAPI, every_s: float = 2.0) -> None:
    """Retry the migration until the database answers, then load what needed it."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.wait_for(asyncio.to_thread(upgrade, settings.database_url), 30)
            await asyncio.to_thread(app.state.devices.refresh)
            await asyncio.to_thread(app.state.principals.refresh)
        except Exception as e:  # noqa: BLE001 - still away
            log.debug("database still not ready: %r", e)
            continue
        app.state.batch = await asyncio.to_thread(lambda: BatchEngine(settings, app.state.sessions).start())
        log.warning("database is back: schema migrated, devices and batch engine loaded")
        return


async def _load_devices(app: FastAPI, db_ready: bool) -> None:
    try:
        if db_ready:
            await asyncio.to_thread(app.state.devices.refresh)
            return
    except Exception as e:  # noqa: BLE001 - went away just now
        log.warning("device registry not loaded from the database: %r", e)
    n = await asyncio.to_thread(app.state.devices.load_cache)
    log.warning("devices from the local snapshot (%d), until the database is back", n)


def _warm_board() -> bytes:
    import cv2

    from pcb.synthetic import render_board

    return cv2.imencode(".jpg", render_board(0).image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


async def _warm_up(app: FastAPI) -> None:
    """What the first board would otherwise pay for after a start: anyio imports its asyncio
    backend on first use (~70 ms of the first request on two busy cores, by py-spy; the
    outbox write and other blocking calls go through it); the gRPC channel to Triton connects
    on its first call; and the first inference through the ensemble (its scheduler, this
    process's request serialisation) is slower than the rest, so one synthetic board goes
    through ``pcb_inspect`` and its answer is dropped (no record, no pulse). Bounded: a
    Triton that is down at start is the readiness route's business, not a reason to start late."""
    await anyio.to_thread.run_sync(lambda: None)
    try:
        await asyncio.wait_for(app.state.triton.ready(), 2)
        board = await asyncio.to_thread(_warm_board)
        await asyncio.wait_for(app.state.triton.inspect(board), 5)
    except Exception as e:  # noqa: BLE001 - connects on the first board instead
        log.info("Triton not warmed at start: %r", e)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    # many short blocking calls (outbox, image files, database) run in threads: a pool big
    # enough that reads stuck on a dead database never delay the line's outbox writes
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="gateway"))
    app.state.triton = TritonService(settings.triton_url, settings.triton_timeout_s, settings.triton_grpc_lb_policy,
                                      settings.triton_max_in_flight)
    db_ready = await _db_start(settings, app)
    app.state.outbox = Outbox(settings.outbox_path)
    app.state.devices = DeviceRegistry(app.state.sessions, cache=app.state.outbox)
    await _load_devices(app, db_ready)
    app.state.principals = PrincipalRegistry(app.state.sessions)
    if db_ready:
        try:
            await asyncio.to_thread(app.state.principals.refresh)
        except Exception as e:  # noqa: BLE001 - loaded on first use or when the database is back
            log.warning("principals not loaded: %r", e)
    app.state.pairs = (FallbackPairStore(RedisPairStore(settings.redis_url, timeout_s=settings.redis_timeout_s))
                       if settings.redis_url else MemoryPairStore())
    app.state.line_sessions = LineSessions(app.state.pairs)
    app.state.images = ImageStore(settings.image_dir, settings.image_policy, settings.image_max_age_days,
                                  settings.image_max_bytes)
    app.state.events = SystemLogger(app.state.outbox)
    app.state.live = LiveFeed(app.state.pairs.redis if settings.redis_url else None)
    app.state.live.start()
    app.state.inspections = InspectionService(app.state.triton, app.state.pairs, app.state.outbox,
                                              settings.pairing_window_ms, app.state.images, app.state.live,
                                              app.state.events,
                                              Idempotency(app.state.outbox,
                                                          app.state.pairs if settings.redis_url else None,
                                                          ttl_s=settings.idempotency_ttl_s))
    app.state.shadow = ShadowMirror(app.state.triton, app.state.sessions, share=settings.shadow_share,
                                    queue_size=settings.shadow_queue)
    app.state.inspections.shadow = app.state.shadow
    app.state.shadow.start()
    app.state.drainer = Drainer(app.state.outbox, DbWriter(app.state.sessions), events=app.state.events)
    app.state.drainer.start()
    app.state.housekeeping = Housekeeping(app.state.devices, app.state.images, app.state.outbox,
                                          principals=app.state.principals)
    app.state.housekeeping.start()
    app.state.enhance = EnhanceService(app.state.triton, settings.enhance_dir, settings.enhance_concurrency,
                                       settings.enhance_max_queue, settings.enhance_result_ttl_s,
                                       settings.enhance_timeout_s)
    app.state.enhance.start()
    # the batch engine: embedded Celery worker with memory://, a client of the broker otherwise;
    # it needs its tables, so without the database it starts when the migration is done
    migrator = None
    if db_ready:
        app.state.batch = await asyncio.to_thread(lambda: BatchEngine(settings, app.state.sessions).start())
    else:
        app.state.batch = BatchEngine(settings, app.state.sessions)  # not started: its routes answer 503
        migrator = asyncio.create_task(_migrate_later(settings, app), name="migrate-later")
    await _warm_up(app)
    try:
        yield
    finally:
        if migrator is not None:
            migrator.cancel()
        await asyncio.to_thread(app.state.batch.stop)
        await app.state.enhance.stop()
        await app.state.housekeeping.stop()
        await app.state.shadow.stop()
        await app.state.drainer.stop()
        await app.state.live.stop()
        await app.state.pairs.close()
        await app.state.triton.close()
        app.state.engine.dispose()
        app.state.read_engine.dispose()


def create_app() -> FastAPI:
    setup_logging(get_settings().log_level)
    settings = get_settings()
    check_settings(settings)  # placeholder secrets refuse to start; AUTH_MODE=off is loud
    # the API docs follow the viewer role (served below), not FastAPI's open defaults
    # default_response_class given (not left to FastAPI): answers are rendered by json.dumps,
    # byte for byte as before the response models (pydantic's own writer spells 1e-05 as
    # 0.00001); the models still validate and shape every answer
    app = FastAPI(title="PCB inspection gateway", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None, default_response_class=JSONResponse)

    # FastAPI reads a body before the route's dependencies run, authentication included: so
    # every route takes at most a small JSON or form body (a new route too, until it is
    # listed here), and only the uploads below take images, each up to its own limit
    s = get_settings()
    one_image, form = s.max_upload_bytes, 65536  # the form fields and multipart framing around the files
    app.add_middleware(RequestMiddleware, max_body_bytes=SMALL_BODY_BYTES, max_streams=s.max_event_streams,
                       path_limits={"/v1/inspect": one_image + form,
                                    "/v1/inspect/dual": 2 * one_image + form,
                                    "/api/v1/enhance": one_image + form,
                                    "/api/v1/enhance/batch": s.enhance_max_batch_bytes + form,
                                    "/api/v1/jobs": s.batch_max_upload_bytes + form,
                                    # the seed's JSON: base64 frames, a third larger than the image
                                    "/predict": one_image * 4 // 3 + form,
                                    "/predict_dual": 2 * one_image * 4 // 3 + form})

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="PCB inspection gateway")

    app.mount("/static", StaticFiles(directory=Path(__file__).resolve().parent / "web" / "static"), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """For Prometheus: ``Bearer METRICS_TOKEN`` (the scrape token), or an admin."""
        token, bearer = get_settings().metrics_token, bearer_of(request)
        if not (token and bearer and hmac.compare_digest(bearer.encode(), token.encode())):
            await authorize(request, "admin", bearer)
        st = request.app.state
        OUTBOX_DEPTH.set(await asyncio.to_thread(st.outbox.depth))
        TRITON_READY.set(1 if await st.triton.ready() else 0)
        observe_edges(st.devices, ONLINE_AFTER_S)
        await observe_batch(st.batch.store)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
    app.include_router(auth.router)
    app.include_router(inspect.router)
    app.include_router(seed_compat.router)
    app.include_router(operator.router)
    app.include_router(feedback.router)
    app.include_router(edge.router)
    app.include_router(admin.router)
    app.include_router(live.router)
    app.include_router(enhance.router)
    app.include_router(jobs.router)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"code": e.code, "message": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in err.get("loc", ())[1:]) or "body" for err in e.errors()]
        return JSONResponse({"code": "invalid_request", "message": f"invalid or missing fields: {', '.join(fields)}",
                             "fields": fields}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"code": code, "message": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"code": "internal_error", "message": "internal error; see the gateway log"},
                            status_code=500)

    @app.get("/health", tags=["seed"], response_model=Health)
    async def health(request: Request) -> dict:
        """The seed's status route: always 200 while the process answers (see /health/ready)."""
        triton_ok = await request.app.state.triton.ready()
        return {"status": "healthy" if triton_ok else "degraded", "triton": triton_ok}

    @app.get("/health/live", tags=["health"], response_model=Liveness)
    async def liveness() -> dict:
        """Liveness: the process serves requests (no dependency is asked)."""
        return {"status": "alive"}

    @app.get("/health/ready", tags=["health"], response_model=Readiness,
             responses={503: {"model": NotReady, "description": "not ready"}})
    async def ready(request: Request) -> dict | JSONResponse:
        """Readiness for a balancer: 200 only while this gateway can inspect (Triton ready)
        and record (its outbox file answers). The database and Redis are not required: the
        outbox and in-process pairing carry the line through their outages."""
        st = request.app.state
        triton_ok = await st.triton.ready()
        try:
            await asyncio.wait_for(asyncio.to_thread(st.outbox.depth), 2)
            outbox_ok = True
        except Exception:  # noqa: BLE001 - locked, full or broken: cannot record
            outbox_ok = False
        body = {"triton": triton_ok, "outbox": outbox_ok}
        if triton_ok and outbox_ok:
            return {"status": "ready", **body}
        missing = " and ".join(k for k, ok in body.items() if not ok)
        return JSONResponse({"code": "not_ready", "message": f"not ready: {missing} unavailable", **body},
                            status_code=503, headers={"Retry-After": "1"})

    return app


app = create_app()
