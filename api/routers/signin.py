"""Signing a browser in: ``/signin`` takes a user's token once and keeps it in a cookie, so that pages opened in a
browser (the map with grid leaders, a patrol plan's map) and reads see what the user's role allows.

Browsers cannot send an ``Authorization`` header when a page is opened. The cookie (:data:`TOKEN_COOKIE`,
HttpOnly, SameSite=Lax, kept :data:`COOKIE_DAYS` days) is accepted for reads only (GET and HEAD): a write still
needs the header, so another site cannot make a signed-in browser write. ``/signout`` forgets it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import jinja2
from civicgrid.api.auth import TOKEN_COOKIE, request_user
from civicgrid.api.deps import get_store, lang_param
from civicgrid.api.errors import HtmlErrorRoute
from civicgrid.geo.errors import AuthenticationError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import DEFAULT_LANG, LANGS, labels, parse_lang, text
from civicgrid.geo.users import authenticate
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter(tags=["pages"], route_class=HtmlErrorRoute)

#: Days a browser keeps its sign-in.
COOKIE_DAYS = 30

_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
                                autoescape=True)


def _local(next_url: str | None) -> str:
    """``next_url`` when it is a path of this service (never another site), else the map."""
    url = (next_url or "").strip()
    return url if url.startswith("/") and not url.startswith(("//", "/\\")) else "/map"


def _page(request: Request, *, lang: str, next_url: str, user: dict | None, message: str = "",
          status: int = 200) -> HTMLResponse:
    other = next(x for x in LANGS if x != lang)  # the page's link to the other language
    body = _TEMPLATES.get_template("signin.html").render(
        lang=lang, t=labels("signin", lang), next=next_url, user=user, message=message,
        intro=text("signin.intro", lang, days=COOKIE_DAYS),
        signed_in=text("signin.signed_in", lang, **user) if user else "",
        other_lang=f"/signin?{urlencode({'lang': other, 'next': next_url})}",
        other_lang_name=text("field.lang_other", lang))
    return HTMLResponse(body, status_code=status)


@router.get("/signin", response_class=HTMLResponse, summary="Sign a browser in with a token (HTML form)")
def signin_form(request: Request, lang: str = Depends(lang_param), store: Store = Depends(get_store),
                next_url: str = Query("/map", alias="next", max_length=2000,
                                      description="the page to open after signing in (a path of this service)")
                ) -> HTMLResponse:
    """The sign-in form; it says who is signed in already."""
    try:
        user = request_user(request, store)
    except AuthenticationError:  # a stale cookie: sign in again
        user = None
    return _page(request, lang=lang, next_url=_local(next_url), user=user)


@router.post("/signin", response_class=HTMLResponse, summary="Sign a browser in with a token",
             responses={303: {"description": "signed in: on to the page asked for"},
                        401: {"description": "the token was not accepted (the form again, with the reason)"}})
def signin(request: Request, store: Store = Depends(get_store),
           token: str = Form(..., max_length=200, description="the user's token"),
           next_url: str = Form("/map", alias="next", max_length=2000),
           lang: str = Form(DEFAULT_LANG, max_length=8)):
    """Check the token and keep it in the browser's cookie (HttpOnly, SameSite=Lax), then open ``next``."""
    lang = parse_lang(lang)
    try:
        authenticate(store, token.strip())
    except AuthenticationError as exc:
        return _page(request, lang=lang, next_url=_local(next_url), user=None,
                     message=text("signin.bad", lang, reason=str(exc)), status=401)
    response = RedirectResponse(_local(next_url), status_code=303)
    response.set_cookie(TOKEN_COOKIE, token.strip(), max_age=COOKIE_DAYS * 86400, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.get("/signout", summary="Forget the browser's sign-in", response_class=RedirectResponse, status_code=303)
def signout(lang: str = Depends(lang_param)) -> RedirectResponse:
    """Delete the sign-in cookie and open the map."""
    response = RedirectResponse(f"/map?lang={lang}", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response
