#!/usr/bin/env bash
# Install Detectron2 v0.6 from the package registry into the Python given as $1 (default: python).
#
# Detectron2 has no wheel on the registry. The third-party sdist `pb1-detectron2==0.6` carries
# upstream v0.6's Python code byte for byte but lacks the C++/CUDA sources, so a plain
# `pip install` fails. This script:
#   1. downloads the sdist (torch must already be installed: its setup.py imports torch),
#   2. checks its sha256,
#   3. edits setup.py: no C++ extension, package the model-zoo configs, and do not install
#      upstream's top-level `tools` package (it would shadow this repository's tools/),
#   4. adds our stand-in `detectron2/_C.py` (dev/detectron2_C_standin.py),
#   5. installs the folder without build isolation.
set -euo pipefail
PY=${1:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

if "$PY" -c "import detectron2, detectron2._C as c; assert c.has_cuda() is False" 2>/dev/null; then
  echo "detectron2 already installed in $($PY -c 'import sys; print(sys.prefix)')"; exit 0
fi
"$PY" -c "import torch" || { echo "install torch before detectron2 (its setup.py imports torch)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download --quiet --no-deps --no-build-isolation pb1-detectron2==0.6 -d "$WORK"
echo "$SHA256  $WORK/pb1-detectron2-0.6.tar.gz" | sha256sum -c --quiet -
tar -xzf "$WORK/pb1-detectron2-0.6.tar.gz" -C "$WORK"
SRC="$WORK/pb1-detectron2-0.6"
sed -i \
  -e 's/ext_modules=get_extensions(),/ext_modules=[],/' \
  -e 's|package_data={"detectron2.model_zoo": get_model_zoo_configs()},|package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},|' \
  -e 's|find_packages(exclude=("configs", "tests\*"))|find_packages(exclude=("configs", "tests*", "tools", "tools.*"))|' \
  "$SRC/setup.py"
grep -q 'ext_modules=\[\],' "$SRC/setup.py"
grep -q '"configs/\*\*/\*.yaml"' "$SRC/setup.py"
grep -q '"tools", "tools\.\*"' "$SRC/setup.py"
cp "$HERE/detectron2_C_standin.py" "$SRC/detectron2/_C.py"
# setuptools<82: detectron2.model_zoo imports pkg_resources, which setuptools 82 removed.
"$PY" -m pip install --quiet --no-build-isolation "$SRC" "setuptools>=77.0.3,<82"
"$PY" -c "import detectron2._C as c; assert not c.has_cuda(); print('detectron2 installed (pure-Python, stand-in _C)')"
