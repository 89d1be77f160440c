"""Headless multi-view rendering of 3D assets into training data for the Step1X-3D texture model.

bpy-free modules (importable without Blender): options, cameras, normalization, encoding, checks,
meta, outputs, batch. bpy modules: scene, render, render_views, worker.
Only `blender_render -> shared` imports are allowed.
"""
