"""Serving the offline assets: the vendored Leaflet / plugin files at ``/static/vendor/`` and swagger-ui / ReDoc docs.

The files and the rewriting of folium pages are :mod:`civicgrid.maps.offline`'s (the table of vendored files,
their packages and versions is there); this module only mounts them on the FastAPI app, and replaces FastAPI's
``/docs`` and ``/redoc`` pages, which load swagger-ui and ReDoc from a CDN, by the same pages on local files.
"""

from __future__ import annotations

from civicgrid.maps.offline import VENDOR_FILES, VENDOR_URL, vendor_path, vendor_url
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse


def mount_assets(app: FastAPI) -> None:
    """Serve the vendored files at ``/static/vendor/…`` and swagger-ui / ReDoc docs without a CDN.

    Replaces FastAPI's ``/docs`` and ``/redoc`` pages (which load swagger-ui and ReDoc from jsDelivr and
    Google Fonts) by the same pages on the vendored files.
    """
    for name in VENDOR_FILES:  # fail at start-up, not on the first page, when a package is missing
        vendor_path(name)

    @app.get(VENDOR_URL + "/{name:path}", include_in_schema=False)
    def vendor_file(name: str) -> FileResponse:
        if name not in VENDOR_FILES:
            raise HTTPException(status_code=404, detail=f"no vendored file {name!r}")
        return FileResponse(vendor_path(name), headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(vendor_path("favicon.png"), media_type="image/png",
                            headers={"Cache-Control": "public, max-age=86400"})

    docs_url, redoc_url = app.docs_url or "/docs", app.redoc_url or "/redoc"
    oauth_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    replaced = {docs_url, redoc_url, oauth_url}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in replaced]

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
                                   oauth2_redirect_url=f"{root}{oauth_url}",
                                   swagger_js_url=f"{root}{vendor_url('swagger-ui-bundle.js')}",
                                   swagger_css_url=f"{root}{vendor_url('swagger-ui.css')}",
                                   swagger_favicon_url=f"{root}{vendor_url('favicon.png')}",
                                   swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get(oauth_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{vendor_url('redoc.standalone.js')}",
                              redoc_favicon_url=f"{root}{vendor_url('favicon.png')}", with_google_fonts=False)
