"""Operators mark a verdict wrong (issue 18): the dashboard's board view and the WinForms
app post here; ``python -m export feedback`` turns the rows into a YOLO data set."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import func, select

from gateway.api.operator import MAX_OFFSET, _db, _get, _pending_record
from gateway.api.schemas.feedback import FeedbackIn, FeedbackOut, FeedbackPage
from gateway.core.errors import ApiError, NotFound
from gateway.core.security import Caller, Operator, Viewer
from pcb import taxonomy
from store.models import Feedback, Inspection, utcnow
from store.records import InspectionRecord

router = APIRouter(prefix="/api", tags=["feedback"])


def _out(f: Feedback) -> dict:
    return {"id": f.id, "inspection_id": f.inspection_id, "side": f.side, "kind": f.kind, "boxes": f.boxes,
            "note": f.note, "principal": f.principal, "created_at": f.created_at.isoformat() + "Z"}


def _invalid(message: str, code: str) -> ApiError:
    return ApiError(message, code, status=422)


def _side(body: FeedbackIn, row_side: str) -> str:
    """Which image the correction is about: the row's own side, or for a dual row the one named."""
    if row_side not in ("left", "right"):  # a dual row holds both images
        if body.side is None:
            raise _invalid("this inspection has a left and a right image: name the side", "side_required")
        return body.side
    if body.side not in (None, row_side):
        raise _invalid(f"this inspection has only the {row_side} image", "wrong_side")
    return row_side


def _boxes(body: FeedbackIn) -> list[dict] | None:
    """A missed or misnamed defect must say where and what; a good board has no box."""
    if body.kind == "false_reject":
        if body.boxes:
            raise _invalid("a false reject is a good board: send no boxes", "boxes_not_allowed")
        return None
    if not body.boxes:
        raise _invalid(f"{body.kind} needs the corrected boxes (where the defects are)", "boxes_required")
    classes = set(taxonomy.load().class_names)
    out = []
    for i, b in enumerate(body.boxes):
        if b.class_ not in classes:
            raise _invalid(f"boxes[{i}]: class {b.class_!r} is not in the taxonomy (GET /v1/taxonomy)",
                           "unknown_class")
        x1, y1, x2, y2 = b.box
        if not (x1 < x2 and y1 < y2):
            raise _invalid(f"boxes[{i}]: need x1 < x2 and y1 < y2", "invalid_box")
        out.append({"box": [round(v, 1) for v in b.box], "class": b.class_})
    return out


def _who(request: Request, caller: Caller) -> str:
    p = request.app.state.principals.get(caller.id)
    return ((p.name if p is not None and p.name else None) or caller.id)[:128]


@router.post("/inspections/{inspection_id}/feedback", status_code=201, response_model=FeedbackOut)
async def add_feedback(request: Request, inspection_id: str, body: FeedbackIn, caller: Operator) -> dict:
    """Mark this inspection's verdict wrong. 404 ``inspection_not_found`` for an id neither
    the database nor the outbox (answered a moment ago, not yet written) knows. Every post
    is kept; the export takes the newest per inspection and side."""
    row: Inspection | InspectionRecord | None = await _db(request, lambda sessions: _get(sessions, inspection_id))
    if row is None:
        payload = await asyncio.to_thread(request.app.state.outbox.pending, inspection_id)
        row = _pending_record(payload) if payload else None
    if row is None:
        raise NotFound(f"no inspection {inspection_id}", "inspection_not_found")
    fb = Feedback(id=str(uuid.uuid4()), inspection_id=inspection_id, side=_side(body, row.camera_side),
                  kind=body.kind, boxes=_boxes(body), note=body.note, principal=_who(request, caller),
                  created_at=utcnow())

    def write(sessions) -> dict:
        with sessions() as s:
            s.add(fb)
            s.commit()
        return _out(fb)

    return await _db(request, write, write=True)


@router.get("/feedback", response_model=FeedbackPage)
async def list_feedback(request: Request, _: Viewer,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                        inspection_id: Annotated[str | None, Query(max_length=36)] = None) -> dict:
    """Feedback, newest first."""

    def q(sessions) -> dict:
        stmt = select(Feedback)
        if inspection_id:
            stmt = stmt.where(Feedback.inspection_id == inspection_id)
        with sessions() as s:
            total = s.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = s.scalars(stmt.order_by(Feedback.created_at.desc(), Feedback.id.desc())
                             .offset(offset).limit(limit)).all()
        return {"items": [_out(f) for f in rows], "limit": limit, "offset": offset, "total": total or 0}

    return await _db(request, q)
