"""Installable Detectron2 plugin: shared core + the LMSF-A, LGMS, LightMedSeg and baseline projects.

Detectron2 itself is not on the package registry as a wheel; ``make setup`` installs it first
(dev/install_detectron2.sh). Each model project declares itself in the ``medseg_core.projects``
entry-point group (and ships a ``manifest.py``), which is how the tools find every model without
importing them by name, and how a config imports only the projects it needs.

Installs:
    pip install medseg-d2                 # core: Detectron2 deps, LMSF-A, LGMSNet-2D, shared package
    pip install 'medseg-d2[baselines]'    # + timm / transformers (Swin, Mask2Former, ...)
    pip install 'medseg-d2[volumetric]'   # + MONAI / nibabel (LightMedSeg, LGMSNet-3D, NIfTI data)
    pip install 'medseg-d2[deploy]'       # + ONNX, onnxruntime, OpenVINO / NNCF
    pip install 'medseg-d2[all]'          # everything, with pytest (what `make setup` installs)

The wheel also carries ``tools/``, ``demo/`` and ``configs/`` (under ``medseg_core/_bundled``)
for the console scripts (``medseg-train``, ``medseg-demo``, ... see medseg_core/console.py).
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))

PROJECTS = {
    "lmsfa": "projects/LMSFA/lmsfa",
    "lgms": "projects/LGMS/lgms",
    "lightmedseg": "projects/LightMedSeg/lightmedseg",
    "medseg_baselines": "projects/Baselines/medseg_baselines",
}

CORE = [
    # detectron2 (pb1-detectron2 0.6) is installed by dev/install_detectron2.sh
    "torch>=2.6",
    "torchvision",
    "numpy>=1.24",
    "Pillow>=10",
    "PyYAML",
    "pycocotools>=2.0.7",
    "fvcore>=0.1.5,<0.1.6",
    "opencv-python-headless",
    "safetensors",
    "scipy",  # Welch test of the comparison tool
]

# Optional groups. medseg_core/extras.py names the modules of each (tests/test_packaging.py
# keeps the two in step); a missing one stops with a line naming `pip install 'medseg-d2[extra]'`.
EXTRAS = {
    "baselines": ["timm>=1.0", "transformers>=4.40"],
    "volumetric": ["monai>=1.3", "nibabel>=5", "einops"],  # einops: MONAI UNETR / SwinUNETR
    "deploy": ["onnx", "onnxruntime", "onnxscript", "openvino==2026.4.1", "nncf==3.4.0"],
    "test": ["pytest"],
}
EXTRAS["all"] = sorted({req for group in EXTRAS.values() for req in group})

CONSOLE_SCRIPTS = [
    "medseg-train = medseg_core.console:train",
    "medseg-demo = medseg_core.console:demo",
    "medseg-model-card = medseg_core.console:model_card",
    "medseg-compare = medseg_core.console:compare",
    "medseg-export = medseg_core.console:export",
    "medseg-benchmark = medseg_core.console:benchmark",
    "medseg-quickstart = medseg_core.console:quickstart",
    "medseg-config = medseg_core.console:print_config_path",
]

BUNDLED = ("tools", "demo", "configs")  # copied into medseg_core/_bundled of the wheel


class BuildPyWithTools(build_py):
    """build_py that also copies tools/, demo/ and configs/ into the built medseg_core package."""

    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, "medseg_core", "_bundled")
        for folder in BUNDLED:
            dst = os.path.join(target, folder)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(
                os.path.join(HERE, folder), dst,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "output*"),
            )


setup(
    name="medseg-d2",
    version="0.1.0",
    description="Lightweight medical image segmentation (LMSF-A, LGMSNet, LightMedSeg) as a Detectron2 plugin",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["medseg_core", "medseg_core.*"]) + [
        f"{name}{sub}" for name, path in PROJECTS.items()
        for sub in [""] + ["." + p for p in find_packages(where=os.path.join(HERE, path))]
    ],
    package_dir=PROJECTS,
    install_requires=CORE,
    extras_require=EXTRAS,
    cmdclass={"build_py": BuildPyWithTools},
    entry_points={
        "medseg_core.projects": [
            "lmsfa = lmsfa.config:add_lmsfa_config",
            "lgms = lgms.config:add_lgms_config",
            "lightmedseg = lightmedseg.config:add_lightmedseg_config",
            "medseg_baselines = medseg_baselines.config:add_baselines_config",
        ],
        "console_scripts": CONSOLE_SCRIPTS,
    },
)
