#!/usr/bin/env bash
# On the lent GPU machine (Python 3.12, torch + CUDA preinstalled, no network): install what this
# project needs beyond that image into /tmp/site. The packages travel as xz tarballs of installed
# trees (built here with `pip install --target` for cp312 manylinux, pymeshlab without its test
# meshes and the libraries only its unused plugins need, warp without its CPU compiler
# warp-clang.so), because one call carries at most 64 MiB: bundA.tar.xz (diffusers, trimesh,
# xatlas, pymeshlab; 34 MB) and bundB.tar.xz (warp-lang; split into parts bundB.a?) are copied by
# each call from wherever they travelled (.p*/) to /tmp/wparts and unpacked once all parts are
# there. pymeshlab needs libGL, whose Debian packages travel in .gl (see the device tool's README).
#   every call:  bash benchmarks/gpu_setup.sh && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
SITE=${SITE:-/tmp/site} W=${WPARTS:-/tmp/wparts}
if [ -z "${SKIP_GL:-}" ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
mkdir -p "$SITE" "$W"
cp .p*/* "$W"/ 2>/dev/null || true
untar() { python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('$SITE')"; }
if [ ! -d "$SITE"/pymeshlab ] && [ -f "$W"/bundA.tar.xz ]; then untar < "$W"/bundA.tar.xz; fi
if [ ! -d "$SITE"/diffusers-0.42.1.dist-info ] && [ -f "$W"/dist.tar.xz ]; then untar < "$W"/dist.tar.xz; fi
parts=$(ls "$W"/bundB.a? 2>/dev/null | wc -l)
if [ ! -d "$SITE"/warp ] && [ "$parts" -ge "${BUNDB_PARTS:-2}" ]; then cat "$W"/bundB.a? | untar; fi
PYTHONPATH=$SITE python3 -c "
import torch, diffusers, transformers
print('torch', torch.__version__, torch.cuda.get_device_name(0), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)
for name in ('trimesh', 'xatlas', 'pymeshlab', 'warp', 'numba', 'pynvml'):
    try:
        __import__(name); print(name, 'ok')
    except Exception as exc:
        print(name, 'MISSING', type(exc).__name__, exc)
"
