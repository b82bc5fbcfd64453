"""Rendering folium/branca pages without running their data as templates.

branca (0.8) renders each :class:`branca.element.MacroElement`'s ``header``/``html``/``script`` macro and adds the
output to the page as ``branca.element.Element(output)``, which compiles that output as a *new* Jinja template
when the page renders. Everything a macro printed — a GeoJSON layer's properties, a tooltip's text, a popup's
HTML — is then executed: a city's area called ``{{ 7919*7 }}`` is shown as 55433, and Jinja expressions in
imported labels run on the server. :func:`install` replaces ``MacroElement.render`` by the same steps adding
the output verbatim (:class:`RawHtml`); :mod:`civicgrid.maps` installs it on import, before any page renders.
"""

from __future__ import annotations

import branca.element


class RawHtml(branca.element.Element):
    """HTML (or a script) added to a page verbatim.

    ``branca.element.Element(text)`` compiles ``text`` as a Jinja template, so ``{{ … }}`` in a city's own
    label (an area, site or problem type name shown in a panel) would run on the server. This element renders
    its text as it is; escape what is not yours before building it.
    """

    def __init__(self, text: str):
        super().__init__()
        self._name = "RawHtml"
        self.text = text

    def render(self, **kwargs) -> str:
        return self.text


def _render_macro(self, **kwargs) -> None:
    """``MacroElement.render`` of branca 0.8 with the macros' output added verbatim."""
    figure = self.get_root()
    if not isinstance(figure, branca.element.Figure):
        msg = "You cannot render this Element if it is not in a Figure."
        raise TypeError(msg)
    macros = self._template.module.__dict__
    for part in ("header", "html", "script"):
        macro = macros.get(part)
        if macro is not None:
            getattr(figure, part).add_child(RawHtml(macro(self, kwargs)), name=self.get_name())
    for element in self._children.values():
        element.render(**kwargs)


def install() -> None:
    """Make every folium/branca page render its macros' output verbatim (idempotent)."""
    branca.element.MacroElement.render = _render_macro
