#!/usr/bin/env bash
# Wheels that tools/gpu_check.py needs on a GPU machine whose Python already has PyTorch,
# torchvision, timm, transformers, onnx, onnxruntime, OpenCV, SciPy, matplotlib and safetensors
# (the workplace's GPU image, Python 3.12) but not Detectron2 and the rest of our dependencies.
# Writes them to .gpu_carry/ (add it to .git/info/exclude); about 10 MB.
#
#   bash dev/gpu_carry.sh [PYTHON_VERSION]          # default 3.12; run on this (CPU) machine
#
# Then on the GPU machine, from the repository root (everything offline):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_carry/*.whl
#   export PYTHONPATH=$PWD:$PWD/projects/LMSFA:$PWD/projects/LGMS:$PWD/projects/LightMedSeg:$PWD/projects/Baselines:/tmp/site
#   python3 tools/gpu_check.py --output /tmp/gpu_check
# (.gpu_carry also holds this repository's own wheel: its entry points name the model projects.)
set -euo pipefail
PYVER=${1:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
OUT=$ROOT/.gpu_carry
rm -rf "$OUT" && mkdir -p "$OUT"
pin() { grep -i "^$1==" "$ROOT/requirements/constraints.txt" | head -n 1; }

# binary (or pure) wheels for the target Python, pinned to the tested versions
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT" "$(pin pycocotools)" "$(pin monai)" "$(pin nibabel)" "$(pin omegaconf)" "$(pin yacs)" "$(pin termcolor)"
# pure-Python packages published as source only: build py3 wheels here
"$PY" -m pip wheel --quiet --no-deps -w "$OUT" "$(pin fvcore)" "$(pin iopath)" "$(pin antlr4-python3-runtime)"
# Detectron2: the same checksum-verified, patched source as dev/install_detectron2.sh, as a wheel
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download --quiet --no-deps --no-build-isolation pb1-detectron2==0.6 -d "$WORK"
echo "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29  $WORK/pb1-detectron2-0.6.tar.gz" | sha256sum -c --quiet -
tar -xzf "$WORK/pb1-detectron2-0.6.tar.gz" -C "$WORK"
SRC="$WORK/pb1-detectron2-0.6"
sed -i \
  -e 's/ext_modules=get_extensions(),/ext_modules=[],/' \
  -e 's|package_data={"detectron2.model_zoo": get_model_zoo_configs()},|package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},|' \
  -e 's|find_packages(exclude=("configs", "tests\*"))|find_packages(exclude=("configs", "tests*", "tools", "tools.*"))|' \
  "$SRC/setup.py"
cp "$ROOT/dev/detectron2_C_standin.py" "$SRC/detectron2/_C.py"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" "$SRC"
# this repository (entry points of the model projects; the code itself runs from the checkout)
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" "$ROOT"
ls -la "$OUT"
du -sh "$OUT"
