"""Admin routes (the admin role: an admin principal's key, ``ADMIN_TOKEN``, or an admin's
session): model hot-swap through Triton's repository API (the same ``serving.admin.ModelAdmin``
as the CLI), devices, principals, configuration and the outbox's quarantine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from gateway.api import db_bounds
from gateway.api.schemas.admin import (
    ConfigUpdated,
    DeviceCreated,
    DeviceDisabled,
    DeviceOut,
    ModelServed,
    ModelVersions,
    PrincipalCreated,
    PrincipalOut,
    PrincipalRevoked,
    QuarantinePage,
    Requeued,
    ShadowReport,
    ShadowState,
)
from gateway.core.errors import ApiError, NotFound, ServiceUnavailable
from gateway.core.security import require
from gateway.services.principals import ROLES
from settings.environment import get_settings

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require("admin"))])


def _models():
    from serving.admin import ModelAdmin

    s = get_settings()
    return ModelAdmin(s.triton_http_url, Path(s.model_repository), s.triton_admin_key)


# Triton's repository API: the list answers within this or 503; a load, promote or shadow
# waits for Triton to load the version (RepositoryAPI's own 300 s network timeout), since a
# model load legitimately takes a while and giving up early would not stop it
MODELS_READ_TIMEOUT_S = 5.0


async def _admin_call(fn, *args, timeout_s: float | None = None):
    from serving.admin import AdminError, UnknownModel

    try:
        return await asyncio.wait_for(asyncio.to_thread(lambda: fn(_models(), *args)), timeout_s)
    except TimeoutError as e:
        raise ServiceUnavailable(f"Triton's repository API did not answer within {timeout_s:.0f} s",
                                 "inference_unavailable", 5) from e
    except UnknownModel as e:
        raise NotFound(str(e), "unknown_model") from e
    except AdminError as e:
        raise ApiError(str(e), "model_admin_refused") from e
    except FileNotFoundError as e:
        raise ServiceUnavailable(f"model repository not reachable from the gateway: {e}", "repository_unavailable") from e
    except Exception as e:  # noqa: BLE001 - Triton unreachable and kin
        raise ServiceUnavailable(f"Triton admin call failed: {e}", "inference_unavailable", 5) from e


@router.get("/models", response_model=list[ModelVersions])
async def list_models() -> list[dict]:
    return await _admin_call(lambda m: m.describe(), timeout_s=MODELS_READ_TIMEOUT_S)


# a version number as the database stores it (a 32-bit INTEGER column; 2**63 was an
# OverflowError in the SQLite driver, a 500, found by schemathesis)
MAX_VERSION = 2**31 - 1


class VersionIn(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION)
    # promote only: the shadow report's agreement must reach this, unless override
    min_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    override: bool = False


class ShadowIn(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION)


# a Triton model name (what serving/admin.py finds on disk): anything else is a 422 before it
# reaches the repository or the database
ModelName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="a model's name")]


@router.get("/models/{model}/shadow", response_model=ShadowReport)
async def shadow_report(model: ModelName, request: Request,
                        version: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="default: the newest shadowed")] = None
                        ) -> dict:
    """Board-verdict agreement, per-class differences and latency of a shadow version."""
    rep = await _report(request, model, version)
    mirror = request.app.state.shadow
    st = mirror.stats
    rep["mirror"] = {"active_version": st.version, "share": mirror.share, "offered": st.offered,
                     "mirrored": st.mirrored, "dropped": st.dropped, "failed": st.failed}
    return rep


async def _report(request: Request, model: str, version: int | None) -> dict:
    from gateway.services.shadow import report

    return await db_bounds.read(request, lambda sessions: report(sessions, model, version))


@router.post("/models/{model}/shadow", response_model=ShadowState)
async def start_shadow(model: ModelName, body: ShadowIn, request: Request) -> dict:
    """Run ``version`` beside the served one; the gateway mirrors live frames to it."""
    state = await _admin_call(lambda m: m.shadow(model, body.version))
    await request.app.state.shadow.refresh()  # this worker mirrors at once; the others within seconds
    await _event(request, f"shadow {model} version {body.version}")
    return state


@router.delete("/models/{model}/shadow", response_model=ShadowState)
async def stop_shadow(model: ModelName, request: Request) -> dict:
    state = await _admin_call(lambda m: m.unshadow(model))
    await request.app.state.shadow.refresh()
    await _event(request, f"shadow of {model} stopped")
    return state


@router.post("/models/{model}/rollback", response_model=ModelServed)
async def rollback(model: ModelName, request: Request) -> dict:
    served = await _admin_call(lambda m: m.rollback(model))
    await _event(request, f"rollback {model}: now serving {served}")
    return {"model": model, "served": served}


@router.post("/models/{model}/{action}", response_model=ModelServed)
async def version_action(model: ModelName, action: Literal["load", "promote", "unload"], body: VersionIn,
                         request: Request) -> dict:
    """load: serve ``version`` next to the current ones; promote: serve only it (the others
    drain and unload); unload: stop serving it. A promote with ``min_agreement`` is refused
    (409 ``shadow_agreement_below_floor``) unless the version's shadow report reaches it,
    or ``override`` is set (logged as such)."""
    if action == "promote" and body.min_agreement is not None:
        rep = await _report(request, model, body.version)
        short = not rep["samples"] or rep["agreement"] is None or rep["agreement"] < body.min_agreement
        if short and not body.override:
            raise ApiError(f"{model} version {body.version}: shadow agreement {rep['agreement']} over "
                           f"{rep['samples']} frames is below the floor {body.min_agreement} "
                           "(override to promote anyway)", "shadow_agreement_below_floor", status=409)
        if short:
            await _event(request, f"promote {model} version {body.version} OVERRIDES the agreement floor "
                                  f"{body.min_agreement} (shadow agreement {rep['agreement']}, {rep['samples']} frames)")
    served = await _admin_call(lambda m: getattr(m, action)(model, body.version))
    await _event(request, f"{action} {model} version {body.version}: now serving {served}")
    return {"model": model, "served": served}


async def _event(request: Request, message: str) -> None:
    await asyncio.to_thread(request.app.state.events, "info", "admin", message)


class DeviceIn(BaseModel):
    device_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    side: str = Field(pattern="^(left|right)$")
    drives_gpio: bool = False
    name: str = Field(default="", max_length=128)


@router.post("/devices", status_code=201, response_model=DeviceCreated)
async def create_device(body: DeviceIn, request: Request) -> dict:
    """Registers (or re-keys) a device; the API key is shown this once."""
    # a key must be stored before it is shown: refuse, retry later
    info, key = await db_bounds.write(request.app.state.devices.create, body.device_id, body.side,
                                      body.drives_gpio, body.name, refused="device not registered")
    await _event(request, f"device {info.id} registered ({info.side}, drives GPIO: {info.drives_gpio})")
    return {"device_id": info.id, "side": info.side, "drives_gpio": info.drives_gpio, "api_key": key}


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(request: Request) -> list[dict]:
    return [{"device_id": d.id, "side": d.side, "drives_gpio": d.drives_gpio, "enabled": d.enabled,
             "name": d.name, "last_seen": request.app.state.devices.last_seen.get(d.id)}
            for d in request.app.state.devices.all()]


@router.delete("/devices/{device_id}", response_model=DeviceDisabled)
async def disable_device(device_id: str, request: Request) -> dict:
    if request.app.state.devices.get(device_id) is None:
        raise NotFound(f"no device {device_id}", "unknown_device")
    await db_bounds.write(request.app.state.devices.disable, device_id, refused="device not disabled")
    await _event(request, f"device {device_id} disabled")
    return {"device_id": device_id, "enabled": False}


@router.get("/outbox/quarantine", response_model=QuarantinePage)
async def list_quarantine(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """Rows the database kept refusing, set aside on this gateway (kept, never deleted)."""
    box = request.app.state.outbox
    rows = await asyncio.to_thread(box.quarantined, limit)
    return {"total": await asyncio.to_thread(box.quarantine_depth), "rows": rows}


class RequeueIn(BaseModel):
    ids: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=1000)


@router.post("/outbox/quarantine/retry", response_model=Requeued)
async def retry_quarantine(body: RequeueIn, request: Request) -> dict:
    """Send quarantined rows (``ids``, or all) back to the outbox, e.g. after a schema fix."""
    n = await asyncio.to_thread(request.app.state.outbox.requeue, body.ids)
    request.app.state.drainer.poke()
    await _event(request, f"{n} quarantined outbox rows sent back for another try")
    return {"requeued": n}


class PrincipalIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: str = Field(pattern="^(" + "|".join(ROLES) + ")$")


def _principal(p) -> dict:
    return {"id": p.id, "name": p.name, "role": p.role, "enabled": p.enabled}


@router.post("/principals", status_code=201, response_model=PrincipalCreated)
async def create_principal(body: PrincipalIn, request: Request) -> dict:
    """A key for a person or an application; shown this once (only its hash is stored)."""
    info, key = await db_bounds.write(request.app.state.principals.create, body.name, body.role,
                                      refused="key not created")
    await _event(request, f"principal {info.id} ({info.name}) created with role {info.role}")
    return {**_principal(info), "api_key": key}


@router.get("/principals", response_model=list[PrincipalOut])
async def list_principals(request: Request) -> list[dict]:
    return [_principal(p) for p in request.app.state.principals.all()]


@router.delete("/principals/{principal_id}", response_model=PrincipalRevoked)
async def revoke_principal(principal_id: str, request: Request) -> dict:
    found = await db_bounds.write(request.app.state.principals.revoke, principal_id, refused="key not revoked")
    if not found:
        raise NotFound(f"no principal {principal_id}", "unknown_principal")
    await _event(request, f"principal {principal_id} revoked")
    return {"id": principal_id, "enabled": False}


class ConfigIn(BaseModel):
    values: dict[str, str] = Field(max_length=100)


@router.put("/config", response_model=ConfigUpdated)
async def put_config(body: ConfigIn, request: Request) -> dict:
    """Set operator-visible configuration keys (the seed's ``system_config`` table)."""
    from store.models import SystemConfig

    def write(sessions):
        with sessions.begin() as s:
            for k, v in body.values.items():
                s.merge(SystemConfig(key=k[:128], value=v))

    await db_bounds.write(write, request.app.state.sessions, refused="configuration not changed")
    return {"updated": sorted(body.values)}
