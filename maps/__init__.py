"""Offline folium rendering: base layers, legends, the hotspot map and its vendored assets.

Sits above :mod:`civicgrid.grids` and below :mod:`civicgrid.sites`; nothing here serves HTTP.

* :mod:`civicgrid.maps.offline`: pages without CDN links (``render_offline``, ``inline_assets``, the vendored files);
* :mod:`civicgrid.maps.basemaps`: background tiles (``BASEMAPS``, ``TILES``) and the Tianditu key;
* :mod:`civicgrid.maps.layers`: compact folium layers (packed H3 hexagons, circle markers, outlines);
* :mod:`civicgrid.maps.legend`: colour classes and legend labels of the heat layer;
* :mod:`civicgrid.maps.hotspot`: the planners' hotspot map (``hotspot_map``);
* :mod:`civicgrid.maps.pages`: the HTML templates (``maps/templates/``).
"""

from civicgrid.maps import _branca

_branca.install()  # before any page renders: macros' output is never compiled again as a template
