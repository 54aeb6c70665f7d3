"""Signing in for the web pages: ``/login`` exchanges a key (a principal's, or ADMIN_TOKEN)
for a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), ``/logout`` drops it.
Pages that need a role redirect here when the visitor has none (``page_caller``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.core.errors import Unauthorized
from gateway.core.security import (
    ALLOWED,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Caller,
    auth_lock,
    bearer_of,
    check_origin,
    claimed_id,
    failed_auth,
    guard_guessing,
    identify,
    session_token,
)

router = APIRouter(tags=["auth"], include_in_schema=False)
PAGE = Path(__file__).resolve().parent.parent / "web" / "login.html"


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //evil.example or https://...): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def page_caller(request: Request, role: str) -> Caller | RedirectResponse:
    """The caller of a web page, or a redirect to the login page if they lack ``role``."""
    # memory only: a page is for a signed-in browser, and this runs on the event loop
    caller = identify(request, bearer_of(request), request.cookies.get(SESSION_COOKIE), reload=False)
    if caller is None or caller.role not in ALLOWED[role]:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    return caller


@router.get("/login", response_class=HTMLResponse)
async def login_page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.post("/login", response_class=RedirectResponse, status_code=303)
async def login(request: Request, key: Annotated[str, Form(min_length=1, max_length=200)],
                next: Annotated[str | None, Form(max_length=500)] = None) -> RedirectResponse:  # noqa: A002
    check_origin(request)  # no signing a visitor in with someone else's key from another site
    async with auth_lock(request):  # the form is a key check like any other: same budgets, in turn
        guard_guessing(request, claimed_id(key))
        # off the loop: a key naming a principal unknown here reloads them from the database
        caller = await asyncio.to_thread(identify, request, key, None)
        if caller is None:
            failed_auth(request, claimed_id(key))
            raise Unauthorized("unknown or revoked key", "unauthorized")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_token(caller.id), max_age=SESSION_TTL_S, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout", response_class=RedirectResponse, status_code=303)
async def logout() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
