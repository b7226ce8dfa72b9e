"""Installable Detectron2 plugin: shared core + the LMSF-A, LGMS, LightMedSeg and baseline projects.

Detectron2 itself is not on the package registry as a wheel; ``make setup`` installs it first
(dev/install_detectron2.sh). Each model project declares itself in the ``medseg_core.projects``
entry-point group, which is how the tools find every model without importing them by name.
"""
from setuptools import setup

PROJECTS = {
    "lmsfa": "projects/LMSFA/lmsfa",
    "lgms": "projects/LGMS/lgms",
    "lightmedseg": "projects/LightMedSeg/lightmedseg",
    "medseg_baselines": "projects/Baselines/medseg_baselines",
}

setup(
    name="medseg-d2",
    version="0.1.0",
    description="Lightweight medical image segmentation (LMSF-A, LGMSNet, LightMedSeg) as a Detectron2 plugin",
    python_requires=">=3.10",
    packages=[
        "medseg_core", "medseg_core.data", "medseg_core.evaluation", "medseg_core.engine",
        "medseg_core.modeling",
    ] + list(PROJECTS),
    package_dir=PROJECTS,
    install_requires=[
        # detectron2 (pb1-detectron2 0.6) is installed by dev/install_detectron2.sh
        "torch>=2.6",
        "torchvision",
        "numpy>=1.24",
        "Pillow>=10",
        "pycocotools>=2.0.7",
        "fvcore>=0.1.5,<0.1.6",
        "opencv-python-headless",
        "timm>=1.0",
        "transformers>=4.40",
        "monai>=1.3",
        "nibabel>=5",
        "scipy",
        "matplotlib",
        "safetensors",
        "onnx",
        "onnxruntime",
        "onnxscript",
        # deployment (medseg_core.deploy): OpenVINO runtime + NNCF INT8 quantisation
        "openvino",
        "nncf",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={
        "medseg_core.projects": [
            "lmsfa = lmsfa.config:add_lmsfa_config",
            "lgms = lgms.config:add_lgms_config",
            "lightmedseg = lightmedseg.config:add_lightmedseg_config",
            "medseg_baselines = medseg_baselines.config:add_baselines_config",
        ],
    },
)
