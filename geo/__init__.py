"""civicgrid's shared core: the store, times, coordinates, H3 cells, events, their aggregation and statistics.

Nothing here imports from the layers above it (:mod:`civicgrid.grids`, :mod:`civicgrid.maps`,
:mod:`civicgrid.sites`, :mod:`civicgrid.data`, :mod:`civicgrid.api`).
"""

import logging

# The library emits log records and never shows them itself: an application configures logging (the CLI with
# --log-level, see civicgrid.geo.logs); without that, nothing is printed.
logging.getLogger("civicgrid").addHandler(logging.NullHandler())
