"""The HTML templates of the map pages (``maps/templates/``): the hotspot map's panel and style, the scorecard."""

from __future__ import annotations

from pathlib import Path

import jinja2

#: Folder of the templates (installed as package data of ``civicgrid.maps``).
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

#: The templates, HTML-escaped.
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                               autoescape=jinja2.select_autoescape(["html"]))


def render_template(name: str, /, **context) -> str:
    """Render the template ``name`` (e.g. ``"map_panel.html"``) with ``context``."""
    return TEMPLATES.get_template(name).render(**context)


__all__ = ["TEMPLATES", "TEMPLATE_DIR", "render_template"]
