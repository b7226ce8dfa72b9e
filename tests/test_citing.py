"""Licence and citations: LICENSE, CITATION.cff, and one BibTeX record per work across the READMEs."""
import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READMES = ["README.md"] + [f"projects/{p}/README.md" for p in ("LMSFA", "LGMS", "LightMedSeg", "Baselines")]
# Works the README must cite: the three models, every baseline family and the libraries.
REQUIRED = {
    "lmsfa", "dong2025lgmsnet", "tyagi2026lightmedseg", "he2017maskrcnn", "bolya2019yolact",
    "wang2020solov2", "liu2021swin", "cheng2022mask2former", "woo2023convnextv2", "yolov8_ultralytics",
    "yolo11_ultralytics", "ronneberger2015unet", "valanarasu2022unext", "oktay2018attention",
    "zhou2018unetpp", "tang2024cmunext", "chen2024tinyunet", "hatamizadeh2022unetr",
    "hatamizadeh2021swinunetr", "myronenko2018segresnet", "isensee2021nnunet", "cardoso2022monai",
    "wu2019detectron2", "rw2019timm", "wolf2020transformers",
}


def _entries(path):
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    section = text.split("\n## Citing\n", 1)
    assert len(section) == 2, f"{path} has no Citing section"
    blocks = re.findall(r"```bibtex\n(.*?)```", section[1], flags=re.S)
    entries = {}
    for block in blocks:
        for m in re.finditer(r"@(\w+)\{([^,]+),(.*?)\n\}", block, flags=re.S):
            entries[m.group(2)] = m.group(0)
            assert m.group(3).count("{") == m.group(3).count("}"), (path, m.group(2))
    return entries


def test_every_readme_cites_and_records_agree():
    main = _entries("README.md")
    assert REQUIRED <= set(main), REQUIRED - set(main)
    for path in READMES[1:]:
        entries = _entries(path)
        assert entries, path
        for key, record in entries.items():
            assert main.get(key) == record, f"{path}: @{key} differs from README.md's"


def test_licence_and_citation_file():
    licence = open(os.path.join(REPO, "LICENSE"), encoding="utf-8").read()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    cff = yaml.safe_load(open(os.path.join(REPO, "CITATION.cff"), encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    setup_py = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
    assert f'version="{cff["version"]}"' in setup_py
    titles = {r["title"].split(":")[0] for r in cff["references"]}
    assert {"LMSF-A", "Thinning a medical image segmentation model via dual-level multiscale fusion",
            "LightMedSeg"} <= titles
