"""Signing a browser in (``/signin``): the token kept in an HttpOnly cookie opens pages and reads that need a role,
never writes; redirects stay on this service; a page refused for want of a token links to the sign-in."""

from __future__ import annotations

import pytest
from civicgrid.api.app import create_app
from civicgrid.api.auth import TOKEN_COOKIE
from civicgrid.geo.users import add_user
from fastapi.testclient import TestClient


@pytest.fixture
def env(small_city):
    db = small_city
    token = add_user(db, "viewer1", role="viewer")[1]
    return create_app(db), token


def test_sign_in_opens_reads_and_pages_but_never_writes(env):
    app, token = env
    browser = TestClient(app, follow_redirects=False)
    assert browser.get("/api/patrols").status_code == 401
    # a page refused for want of a token offers the sign-in, coming back to the same page
    page = browser.get("/map/patrol/nope?lang=en", headers={"Accept": "text/html"})
    assert page.status_code == 401 and "/signin?next=%2Fmap%2Fpatrol%2Fnope%3Flang%3Den" in page.text
    form = browser.get("/signin?next=/api/patrols")
    assert form.status_code == 200 and 'name="token"' in form.text and 'value="/api/patrols"' in form.text
    bad = browser.post("/signin", data={"token": "not-a-token", "next": "/api/patrols"})
    assert bad.status_code == 401 and "invalid or revoked token" in bad.text
    assert TOKEN_COOKIE not in bad.cookies
    ok = browser.post("/signin", data={"token": token, "next": "/api/patrols"})
    assert ok.status_code == 303 and ok.headers["location"] == "/api/patrols"
    cookie = ok.headers["set-cookie"]
    assert f"{TOKEN_COOKIE}={token}" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    browser.cookies.set(TOKEN_COOKIE, token)
    assert browser.get("/api/patrols").status_code == 200  # a read with the cookie
    assert "viewer1" in browser.get("/signin").text  # the form says who is signed in
    # a write needs the Authorization header: the cookie alone is no token (no cross-site request forgery)
    write = browser.post("/api/cases", json={"problem_type": "0201", "lng": 112.94, "lat": 28.23})
    assert write.status_code == 401
    out = browser.get("/signout")
    assert out.status_code == 303 and f'{TOKEN_COOKIE}=""' in out.headers["set-cookie"]


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", ""])
def test_sign_in_redirects_only_within_the_service(env, target):
    app, token = env
    r = TestClient(app, follow_redirects=False).post("/signin", data={"token": token, "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/map"
