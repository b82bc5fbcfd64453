"""civicgrid's shared core: the store, times, coordinates, H3 cells, events, their aggregation and statistics.

Nothing here imports from the layers above it (:mod:`civicgrid.grids`, :mod:`civicgrid.maps`,
:mod:`civicgrid.sites`, :mod:`civicgrid.data`, :mod:`civicgrid.api`).
"""
