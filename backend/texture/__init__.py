"""Stage 2 of Step1X-3D: paint a mesh from a reference image.

SDXL with the MV-Adapter generates 6 geometry-conditioned orthographic views (kept consistent by
texture sync during the first half of denoising); the views are baked into a UV texture, unseen
texels are inpainted and the mesh is exported as a GLB with a PBR material.
"""
