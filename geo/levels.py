"""Area levels: the district → street → community → micro-grid vocabulary every layer uses.

A city is cut into districts (区县), streets (街道), communities (社区) and micro-grids (网格), each level inside
the one before. The first three are rows of the ``areas`` table (its ``level`` column); micro-grids are the
``grids`` table. Every located event, site and case carries the code of each level in a column named after
it (:data:`LEVEL_COLUMNS`).
"""

from __future__ import annotations

from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.texts import pairs, text

#: Area levels, coarsest first (``grid`` is the micro-grid).
LEVELS: tuple[str, ...] = ("district", "street", "community", "grid")
#: The levels stored in the ``areas`` table (micro-grids have their own ``grids`` table).
AREA_LEVELS: tuple[str, ...] = LEVELS[:3]
#: Level -> the column holding its code in ``events``, ``sites`` and ``cases``.
LEVEL_COLUMNS: dict[str, str] = {level: f"{level}_code" for level in LEVELS}
#: Level -> the level that contains it (``None`` for districts).
PARENT_LEVEL: dict[str, str | None] = {"district": None, "street": "district", "community": "street",
                                       "grid": "community"}
#: Level -> (Chinese name, English name) (``[level]`` of the text catalogue, :mod:`civicgrid.geo.texts`).
LEVEL_NAMES: dict[str, tuple[str, ...]] = {level: pairs("level")[level] for level in LEVELS}


def check_level(level: str, *, levels: tuple[str, ...] = LEVELS, name: str = "level") -> str:
    """Return ``level`` if it is one of ``levels``.

    Parameters
    ----------
    level
        The level asked for.
    levels
        The levels allowed (default: all of :data:`LEVELS`; :data:`AREA_LEVELS` where micro-grids do not apply).
    name
        The parameter's name, for the message.

    Raises
    ------
    InvalidParameterError
        ``level`` is not one of ``levels``; the message lists them.
    """
    if level not in levels:
        msg = f"unknown {name} {level!r}; use one of {', '.join(levels)}"
        raise InvalidParameterError(msg)
    return level


def level_name(level: str, *, lang: str = "zh") -> str:
    """The name of ``level`` in ``lang`` (``zh`` or ``en``): 街道 / Street."""
    return text(f"level.{check_level(level)}", lang)

