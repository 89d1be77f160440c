"""Stdlib-only code imported by the add-on, the backend and blender_render alike."""
