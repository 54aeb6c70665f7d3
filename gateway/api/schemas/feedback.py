"""Operators' corrections of a verdict (issue 18): what ``POST
/api/inspections/{id}/feedback`` takes and what it and ``GET /api/feedback`` answer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BOXES = 300  # far more defects than one board image shows: more is a client's bug
# JPEG cannot be larger than 65535 px a side: a coordinate beyond that is no pixel of a board;
# inf/nan would pass a plain float and poison the exported labels
Coord = Annotated[float, Field(ge=0.0, le=65535.0, allow_inf_nan=False)]


class CorrectedBox(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    box: list[Coord] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in image pixels, x1 < x2, y1 < y2")
    class_: str = Field(alias="class", max_length=64, description="a defect class of the taxonomy")


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["false_reject", "false_accept", "wrong_class"] = Field(
        description="false_reject: the board is good (no boxes); false_accept: a defect was missed; "
                    "wrong_class: a defect was named wrongly. The last two carry every defect, corrected")
    side: Literal["left", "right"] | None = Field(
        None, description="which image; default the row's side (required for a dual row)")
    boxes: list[CorrectedBox] | None = Field(None, max_length=MAX_BOXES)
    note: str | None = Field(None, max_length=500)


class FeedbackOut(BaseModel):
    id: str
    inspection_id: str
    side: str
    kind: str
    boxes: list[CorrectedBox] | None
    note: str | None
    principal: str = Field(description="who marked it (the principal's name)")
    created_at: str = Field(description="ISO 8601, UTC")


class FeedbackPage(BaseModel):
    items: list[FeedbackOut] = Field(description="newest first")
    limit: int
    offset: int
    total: int
