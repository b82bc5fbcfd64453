"""Offline folium pages: Leaflet and plugins loaded from the app's vendored files, or inlined, never from a CDN.

Government intranets have no internet, so no page of the service may load a script or a
stylesheet from a CDN. Folium writes CDN links (jsDelivr, cdnjs, code.jquery.com) into every
page; :func:`render_offline` renders a map and points each of those links at
``/static/vendor/<file>``, which the service (:func:`civicgrid.api.offline.mount_assets`) serves
from files installed by PyPI packages; :func:`inline_assets` puts the files' contents into the page
instead, for a file that opens from disk:

=============================  ==========================================  ======================
file                           package                                     version
=============================  ==========================================  ======================
leaflet.js, leaflet.css,       ``xstatic-leaflet``                         Leaflet 1.9.3 (the
images/*.png                                                               version folium 0.20 asks for)
leaflet.markercluster.js,      ``xstatic-leaflet-markercluster``           Leaflet.markercluster 1.4.1
MarkerCluster(.Default).css
jquery.min.js                  ``xstatic-jquery``                          jQuery 3.7.1
leaflet_heat.min.js            ``folium`` (its ``templates/`` folder)      Leaflet.heat
swagger-ui-bundle.js,          ``fastapi-offline`` (its ``static/``)       swagger-ui 5, ReDoc
swagger-ui.css,
redoc.standalone.js,
favicon.png
=============================  ==========================================  ======================

Folium's default Bootstrap, glyphicons, Font Awesome and Leaflet.awesome-markers links are
dropped: nothing on a civicgrid page uses them, and no installed package carries
awesome-markers. A page that does use them (``folium.Icon``) — or any other plugin whose
files are not vendored — makes :func:`render_offline` raise :class:`OfflineAssetError`
naming the file, rather than silently depending on the internet.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from civicgrid.geo.errors import OfflineAssetError

#: URL prefix of the vendored files.
VENDOR_URL = "/static/vendor"

#: Vendored file name -> (Python package carrying it, path inside the package).
VENDOR_FILES: dict[str, tuple[str, str]] = {
    "leaflet.js": ("xstatic.pkg.leaflet", "data/leaflet.js"),
    "leaflet.css": ("xstatic.pkg.leaflet", "data/leaflet.css"),
    "images/layers.png": ("xstatic.pkg.leaflet", "data/images/layers.png"),
    "images/layers-2x.png": ("xstatic.pkg.leaflet", "data/images/layers-2x.png"),
    "images/marker-icon.png": ("xstatic.pkg.leaflet", "data/images/marker-icon.png"),
    "images/marker-icon-2x.png": ("xstatic.pkg.leaflet", "data/images/marker-icon-2x.png"),
    "images/marker-shadow.png": ("xstatic.pkg.leaflet", "data/images/marker-shadow.png"),
    "leaflet.markercluster.js": ("xstatic.pkg.leaflet_markercluster", "data/leaflet.markercluster.js"),
    "MarkerCluster.css": ("xstatic.pkg.leaflet_markercluster", "data/MarkerCluster.css"),
    "MarkerCluster.Default.css": ("xstatic.pkg.leaflet_markercluster", "data/MarkerCluster.Default.css"),
    "jquery.min.js": ("xstatic.pkg.jquery", "data/jquery.min.js"),
    "leaflet_heat.min.js": ("folium", "templates/leaflet_heat.min.js"),
    "swagger-ui-bundle.js": ("fastapi_offline", "static/swagger-ui-bundle.js"),
    "swagger-ui.css": ("fastapi_offline", "static/swagger-ui.css"),
    "redoc.standalone.js": ("fastapi_offline", "static/redoc.standalone.js"),
    "favicon.png": ("fastapi_offline", "static/favicon.png"),
}

#: CDN link (matched on the URL's last path segment) -> vendored file.
CDN_REWRITES: dict[str, str] = {
    "leaflet.js": "leaflet.js",
    "leaflet-src.js": "leaflet.js",
    "leaflet.css": "leaflet.css",
    "leaflet.markercluster.js": "leaflet.markercluster.js",
    "leaflet.markercluster-src.js": "leaflet.markercluster.js",
    "MarkerCluster.css": "MarkerCluster.css",
    "MarkerCluster.Default.css": "MarkerCluster.Default.css",
    "jquery.min.js": "jquery.min.js",
    "jquery-3.7.1.min.js": "jquery.min.js",
    "leaflet_heat.min.js": "leaflet_heat.min.js",
    "leaflet-heat.js": "leaflet_heat.min.js",
}

#: Folium defaults no civicgrid page needs, dropped from the page. The pattern says what in the page would
#: show that it does need them after all (then :func:`render_offline` raises).
DROPPED: dict[str, str | None] = {
    "bootstrap.bundle.min.js": None,
    "bootstrap.min.js": None,
    "bootstrap.min.css": None,
    "bootstrap-glyphicons.css": None,
    "all.min.css": r"L\.AwesomeMarkers",
    "leaflet.awesome-markers.js": r"L\.AwesomeMarkers",
    "leaflet.awesome-markers.css": r"L\.AwesomeMarkers",
    "leaflet.awesome.rotate.min.css": r"L\.AwesomeMarkers",
}

_TAG = re.compile(r"<(script|link)\b[^>]*?\b(src|href)\s*=\s*([\"'])(https?:)?//[^\"']*\3[^>]*>(\s*</script>)?",
                  re.IGNORECASE)
_URL = re.compile(r"\b(?:src|href)\s*=\s*([\"'])((?:https?:)?//[^\"']*)\1", re.IGNORECASE)


def vendor_path(name: str) -> Path:
    """The installed file behind ``/static/vendor/<name>``.

    Raises
    ------
    KeyError
        ``name`` is not a vendored file.
    OfflineAssetError
        The package that should carry it is missing or no longer has the file.
    """
    package, rel = VENDOR_FILES[name]
    try:
        base = Path(str(importlib.resources.files(package)))  # the data files of an installed package
    except ImportError as exc:
        msg = f"offline asset {name} needs the package {package!r}; reinstall civicgrid (pip install -e .)"
        raise OfflineAssetError(msg) from exc
    path = base / rel
    if not path.is_file():
        msg = f"offline asset {name}: {path} not found in the installed {package!r}"
        raise OfflineAssetError(msg)
    return path


def vendor_url(name: str) -> str:
    """The app URL of a vendored file, e.g. ``/static/vendor/leaflet.js``."""
    if name not in VENDOR_FILES:
        msg = f"{name!r} is not a vendored file; known: {', '.join(sorted(VENDOR_FILES))}"
        raise OfflineAssetError(msg)
    return f"{VENDOR_URL}/{name}"


def _basename(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def offline_html(html: str) -> str:
    """Rewrite every CDN ``<script src>`` / ``<link href>`` of a rendered page to the vendored copy.

    Raises
    ------
    OfflineAssetError
        A tag loads a file that is not vendored, or a dropped folium default that the page does use.
    """

    def replace(match: re.Match) -> str:
        tag = match.group(0)
        url = _URL.search(tag).group(2)
        name = _basename(url)
        if name in CDN_REWRITES:
            return tag.replace(url, vendor_url(CDN_REWRITES[name]))
        if name in DROPPED:
            needed = DROPPED[name]
            if needed is not None and re.search(needed, html):
                msg = (f"the page needs {url} (folium.Icon / Leaflet.awesome-markers), which no installed package "
                       "carries offline; draw markers with folium.CircleMarker or folium.DivIcon instead")
                raise OfflineAssetError(msg)
            return ""
        msg = (f"the page loads {url} from the internet and no vendored copy exists; add the file to "
               "civicgrid.maps.offline.VENDOR_FILES / CDN_REWRITES from an installed package, or drop the plugin")
        raise OfflineAssetError(msg)

    return _TAG.sub(replace, html)


def external_urls(html: str) -> list[str]:
    """Every ``src``/``href`` URL of a page that points outside the app (for checks and tests)."""
    return [m.group(2) for m in _URL.finditer(html)]


def render_offline(m) -> str:
    """Render a folium map (or any branca element) as a full HTML page that needs no internet.

    Every Leaflet / plugin script and stylesheet folium would load from a CDN points at
    ``/static/vendor/<file>`` instead (served by :func:`civicgrid.api.offline.mount_assets`); folium's
    unused Bootstrap, Font Awesome and awesome-markers links are dropped. Tile layers in the map's JavaScript are
    left alone: a page without internet shows overlays on a blank background (use no tiles,
    ``tiles=None``, for a page that must look complete offline).

    Parameters
    ----------
    m
        A :class:`folium.Map` (or a figure containing one).

    Returns
    -------
    str
        The page's HTML.

    Raises
    ------
    OfflineAssetError
        The page needs a file that is not vendored (for instance ``folium.Icon``'s awesome-markers).
    """
    root = m.get_root()
    return offline_html(root.render())


def inline_assets(page: str) -> str:
    """Replace the page's ``/static/vendor/...`` scripts and stylesheets by their contents (a standalone file)."""

    def script(match: re.Match) -> str:
        body = vendor_path(match.group(1)).read_text(encoding="utf-8").replace("</script", "<\\/script")
        return f"<script>{body}</script>"

    def style(match: re.Match) -> str:
        body = vendor_path(match.group(1)).read_text(encoding="utf-8").replace("</style", "<\\/style")
        return f"<style>{body}</style>"

    base = re.escape(VENDOR_URL)
    page = re.sub(rf"<script[^>]*\bsrc=[\"']{base}/([^\"']+)[\"'][^>]*>\s*</script>", script, page)
    return re.sub(rf"<link[^>]*\bhref=[\"']{base}/([^\"']+\.css)[\"'][^>]*/?>", style, page)
