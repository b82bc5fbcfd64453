"""Offline folium rendering: base layers, legends, the hotspot map and its vendored assets.

Sits above :mod:`civicgrid.grids` and below :mod:`civicgrid.sites`; nothing here serves HTTP.
"""
