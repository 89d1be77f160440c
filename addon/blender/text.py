"""Labels that wrap at word boundaries to the region's real width (Blender labels never wrap).

The width of a string is measured with blf at the interface's font size times the UI scale, so a
line fills the sidebar as it is drawn, at any zoom and resolution scale; core/wrap.py does the
breaking (only at spaces, never inside a word).
"""
from __future__ import annotations

import blf

from ..core.wrap import wrap

# Pixels (at UI scale 1) a label loses to the panel's margins, a box's padding and the text's own
# inset, and to an icon: measured in a Blender 4.3 window, a 291 px sidebar at scale 1.04 drew
# about 215 px of text in a box before clipping, and an icon moves the text 26 px right.
PANEL_MARGIN = 74
ICON_WIDTH = 25
FALLBACK_CHAR = 7.0  # per character at scale 1, only when blf cannot measure (no font loaded)


def _scale(context) -> float:
    """Blender's interface scale factor (resolution scale x the display's pixel density): its
    `dpi` is 72 at scale 1; the bpy module reports ui_scale 0 without a window."""
    system = getattr(getattr(context, "preferences", None), "system", None)
    dpi = getattr(system, "dpi", 0) or 0
    return dpi / 72.0 if dpi > 0 else (getattr(system, "ui_scale", 0.0) or 1.0)


def measurer(context):
    """A function text -> width in pixels at this window's UI scale."""
    scale = _scale(context)
    try:
        points = context.preferences.ui_styles[0].widget.points
    except (AttributeError, IndexError):
        points = 11
    blf.size(0, points * scale)
    probe = blf.dimensions(0, "abcdefghij")[0]
    if probe <= 0:
        return lambda s: len(s) * FALLBACK_CHAR * scale
    return lambda s: blf.dimensions(0, s)[0]


def available_width(context, icon: bool, extra: float = 0.0) -> float:
    """Pixels a label has in the current region (the sidebar or the preferences)."""
    scale = _scale(context)
    region = getattr(context, "region", None)
    width = region.width if region is not None and region.width > 1 else 600
    return max(60.0 * scale, width - (PANEL_MARGIN + (ICON_WIDTH if icon else 0) + extra) * scale)


def lines(context, message: str, icon: bool = False, extra: float = 0.0) -> list[str]:
    return wrap(message, available_width(context, icon, extra), measurer(context))


def label(layout, context, message: str, icon: str = "NONE", extra: float = 0.0) -> None:
    """`message` as wrapped labels; the icon on the first line, the others indented to match."""
    col = layout.column(align=True)
    for i, line in enumerate(lines(context, message, icon != "NONE", extra)):
        col.label(text=line, icon=icon if i == 0 else ("BLANK1" if icon != "NONE" else "NONE"))
