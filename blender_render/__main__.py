"""`python -m blender_render INPUT OUTDIR [options]`: render one object with the bpy module."""
import sys

import bpy  # noqa: F401  (import bpy before anything that may load pymeshlab)

from blender_render.render_views import main

sys.exit(main(sys.argv[1:]))
