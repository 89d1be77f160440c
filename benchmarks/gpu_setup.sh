#!/usr/bin/env bash
# On the lent GPU machine (Python 3.12, torch + CUDA preinstalled, no network): install the wheels
# this project needs beyond that image. They travel split into parts (.c0 .. .c4, ignored by git)
# because one call carries at most 64 MiB; each call appends its part under /tmp/wparts. Extra
# wheels (e.g. the pinned transformers) travel whole in .c5; pymeshlab needs libGL, whose Debian
# packages travel in .gl (see the device tool's README).
#   part calls:  mkdir -p /tmp/wparts && cp .cN/* /tmp/wparts/
#   last call:   bash benchmarks/gpu_setup.sh && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ ! -d /tmp/site/pymeshlab ]; then
  mkdir -p /tmp/w
  cat /tmp/wparts/wpart.* > /tmp/w/wheels.tar
  tar xf /tmp/w/wheels.tar -C /tmp/w
  cp .c5/*.whl /tmp/w/ 2>/dev/null || true
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/w/*.whl
fi
PYTHONPATH=/tmp/site python3 -c "import torch, diffusers, trimesh, xatlas, pymeshlab, warp, numba; \
print('torch', torch.__version__, 'cuda', torch.cuda.get_device_name(0), 'diffusers', diffusers.__version__, 'warp', warp.__version__)"
