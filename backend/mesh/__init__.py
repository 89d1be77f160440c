"""The mesh toolkit both engines share: clean, decimate, UV, rasteriser, bake, inpaint, GLB export."""
import warnings

# numba probes for TBB before falling back to OpenMP and warns on every process start when the
# installed TBB is older than it likes; the fallback is what we want, so the warning is noise.
warnings.filterwarnings("ignore", message="The TBB threading layer requires TBB version")
