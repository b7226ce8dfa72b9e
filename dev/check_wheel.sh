#!/usr/bin/env bash
# CI step "the wheel works on its own" (make check-wheel): build the wheel from a clean copy of
# the source, install it with only the CORE dependencies into a fresh venv (torch, Detectron2 via
# dev/install_detectron2.sh, then the wheel), and from a folder that is not a checkout:
#   1. train the LMSF-A instant config with the console script medseg-train (shipped config),
#   2. draw its predictions on the smoke validation set with medseg-demo,
#   3. check that a baseline (needs the `baselines` extra) fails with ONE line naming the extra,
#      both on `import medseg_baselines` and on training a Mask2Former config.
# Usage: bash dev/check_wheel.sh [python that builds the wheel, default .venv/bin/python]
#
# torch + Detectron2 (the prerequisites, about 5.7 GB, most of the time) are installed into a
# base venv kept in $MEDSEG_WHEEL_CHECK_CACHE (default ~/.cache/medseg-d2), keyed by the
# constraints and the Detectron2 install files; each check hard-links a copy of it and installs
# the wheel and its core dependencies there, so a base holds nothing of this package. A missing
# base is built first (the full install); MEDSEG_WHEEL_CHECK_CACHE=none never keeps one.
# By default (MEDSEG_WHEEL_CHECK_BASE=link, and the build venv has torch + Detectron2) no base is
# downloaded: dev/clone_distributions.py hard-links exactly those distributions and their
# requirements from the build venv (the same files; on a cold CI machine the full install took
# 22 minutes). MEDSEG_WHEEL_CHECK_BASE=install forces the install from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BUILD_PY=${1:-.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/medseg-wheel-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CACHE=${MEDSEG_WHEEL_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medseg-d2}
KEY=$(cat requirements/constraints.txt dev/install_detectron2.sh dev/detectron2_C_standin.py \
      <(python3 -VV) | sha256sum | cut -c1-16)
export PIP_CONSTRAINT="$REPO/requirements/constraints.txt"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export XDG_CACHE_HOME="$WORK/cache"  # the generated smoke set goes here, not into $HOME
unset PYTHONPATH MEDSEG_SMOKE_DIR
t0=$(date +%s)
step() { echo "[check-wheel +$(( $(date +%s) - t0 ))s] $*"; }

step "building the wheel from a clean copy of the source"
mkdir "$WORK/src" "$WORK/dist" "$WORK/run"
tar --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=./output --exclude=./datasets \
    --exclude='__pycache__' --exclude=./.git -cf - . | tar -xf - -C "$WORK/src"
"$BUILD_PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/medseg_d2-*.whl)

build_base() {  # a venv with only torch and Detectron2 (what the README says to install first)
  python3 -m venv "$1"
  "$1/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 "setuptools>=77.0.3,<82" wheel
  bash dev/install_detectron2.sh "$1/bin/python"
}
if [ "${MEDSEG_WHEEL_CHECK_BASE:-link}" = link ] && "$BUILD_PY" -c "import torch, detectron2" 2>/dev/null; then
  # Default: the prerequisites the build venv already holds, hard-linked (seconds, no download).
  step "fresh venv: torch, torchvision, Detectron2 (+ their requirements) linked from the build venv"
  "$BUILD_PY" -m venv --without-pip "$WORK/venv"
  "$BUILD_PY" dev/clone_distributions.py "$WORK/venv" torch torchvision pb1-detectron2 pip setuptools wheel
elif [ "$CACHE" = none ]; then
  step "fresh venv: torch and Detectron2"
  build_base "$WORK/venv"
else
  BASE="$CACHE/wheel-check-base-$KEY"
  if [ ! -x "$BASE/bin/python" ]; then
    step "building the base venv (torch, Detectron2) in $BASE"
    mkdir -p "$CACHE"
    rm -rf "$BASE.partial"
    build_base "$BASE.partial"
    mv "$BASE.partial" "$BASE"
  fi
  step "fresh venv: a hard-linked copy of the base venv (torch, Detectron2 only)"
  cp -al "$BASE" "$WORK/venv" 2>/dev/null || { rm -rf "$WORK/venv"; cp -a "$BASE" "$WORK/venv"; }  # other file system: copy
  sed -i "s|$BASE.partial|$WORK/venv|g; s|$BASE|$WORK/venv|g" "$WORK/venv/pyvenv.cfg"
fi
V="$WORK/venv/bin"
"$V/python" -c "import torch, detectron2" || { echo "FAIL: torch / detectron2 missing in the venv" >&2; exit 1; }
for mod in medseg_core lmsfa; do
  if "$V/python" -P -c "import $mod" 2>/dev/null; then echo "FAIL: $mod is already in the fresh venv" >&2; exit 1; fi
done
step "installing the wheel with its core dependencies"
"$V/python" -m pip install --quiet "$WHEEL"
"$V/python" -m pip check
for mod in timm transformers monai onnxruntime; do
  if "$V/python" -P -c "import $mod" 2>/dev/null; then echo "FAIL: $mod is installed by the core install" >&2; exit 1; fi
done

cd "$WORK/run"  # not a checkout: everything must come from the installed package
CFG=$("$V/medseg-config" quick_schedules/lmsfa_instant_test.yaml)
case "$CFG" in "$WORK/venv/"*) ;; *) echo "FAIL: config not from the wheel: $CFG" >&2; exit 1;; esac

step "medseg-train: LMSF-A instant config"
"$V/medseg-train" --config-file "$CFG" OUTPUT_DIR "$WORK/run/lmsfa" MODEL.DEVICE cpu > train.log 2>&1 \
  || { tail -40 train.log; echo "FAIL: medseg-train" >&2; exit 1; }
test -f "$WORK/run/lmsfa/model_final.pth" || { tail -40 train.log; echo "FAIL: no model_final.pth" >&2; exit 1; }
grep -q "segm" train.log || { tail -40 train.log; echo "FAIL: no segm evaluation in the log" >&2; exit 1; }

step "medseg-demo: ground truth | prediction on smoke_peld_val"
"$V/medseg-demo" --config-file "$CFG" --gt-dataset smoke_peld_val --output "$WORK/run/demo" \
  --opts MODEL.WEIGHTS "$WORK/run/lmsfa/model_final.pth" MODEL.DEVICE cpu > demo.log 2>&1 \
  || { tail -40 demo.log; echo "FAIL: medseg-demo" >&2; exit 1; }
ls "$WORK/run/demo"/*.png > /dev/null || { tail -20 demo.log; echo "FAIL: the demo wrote no overlay" >&2; exit 1; }

step "a baseline without the baselines extra: one line naming it"
expect="pip install 'medseg-d2[baselines]'"
if "$V/python" -c "import medseg_baselines" 2> import.err; then echo "FAIL: import medseg_baselines worked" >&2; exit 1; fi
last=$(tail -1 import.err)
case "$last" in *"$expect"*) ;; *) cat import.err; echo "FAIL: import error does not name the extra" >&2; exit 1;; esac
M2F=$("$V/medseg-config" quick_schedules/mask2former_R50_instant_test.yaml)
set +e
"$V/medseg-train" --config-file "$M2F" OUTPUT_DIR "$WORK/run/m2f" MODEL.DEVICE cpu > m2f.out 2> m2f.err
rc=$?
set -e
lines=$(grep -c . m2f.err || true)
if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -qF "$expect" m2f.err; then
  cat m2f.err; echo "FAIL: medseg-train of a baseline config: rc $rc, $lines stderr lines (want 2, 1)" >&2; exit 1
fi
echo "  import medseg_baselines -> $last"
echo "  medseg-train mask2former -> $(cat m2f.err)"
step "wheel check passed"
