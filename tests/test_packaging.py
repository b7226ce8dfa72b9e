"""Packaging: lazy project loading, project manifests, extras and the console scripts.

The wheel itself (built, installed with the core dependencies only into a fresh venv, trained
from) is checked by ``dev/check_wheel.sh`` (``make check-wheel``, run by CI).
"""
import ast
import json
import os
import subprocess
import sys

import pytest

from medseg_core import extras, projects
from medseg_core.config import load_config, read_config_tree
from medseg_core.extras import MissingExtraError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(REPO, "configs", "quick_schedules")
PROJECT_MODULES = ("lmsfa", "lgms", "lightmedseg", "medseg_baselines")


def _run_python(code: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def _setup_py_literal(name: str):
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no literal {name}")


@pytest.mark.parametrize("config, expected", [
    ("lmsfa_instant_test.yaml", ["lmsfa"]),
    ("unet_instant_test.yaml", ["lgms"]),
    ("mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml", []),
    ("lightmedseg_instant_test.yaml", ["lightmedseg"]),
])
def test_a_config_imports_only_the_projects_it_names(config, expected):
    """In a fresh interpreter, loading a config imports exactly the projects it needs."""
    code = (
        "import sys, json; from medseg_core.config import load_config; "
        f"cfg = load_config({os.path.join(QUICK, config)!r}); "
        f"print(json.dumps([m for m in {PROJECT_MODULES!r} if m in sys.modules]))"
    )
    assert json.loads(_run_python(code)) == expected


def test_config_keys_are_those_of_the_needed_projects():
    cfg = load_config(os.path.join(QUICK, "lmsfa_instant_test.yaml"))
    assert "LMSFA" in cfg.MODEL and "YOLO" in cfg.INPUT
    assert not {"TIMM", "MASK2FORMER", "LGMS", "LIGHTMEDSEG"} & set(cfg.MODEL)
    # a key of a project the file does not name pulls that project in (command-line override)
    cfg = load_config(os.path.join(QUICK, "lmsfa_instant_test.yaml"), ["MODEL.UNET.DIMS", "[8, 16, 32, 64, 128]"])
    assert list(cfg.MODEL.UNET.DIMS) == [8, 16, 32, 64, 128] and "LGMS" in cfg.MODEL


def test_manifests_list_exactly_what_each_project_registers():
    """Import each project in a fresh interpreter and compare its new registry names and config
    nodes with its manifest (an incomplete manifest would make lazy loading fall back to all)."""
    code = r'''
import importlib, json
from medseg_core.config import get_project_cfg
from medseg_core import projects as P
for m in P._CORE_REGISTERING_MODULES:
    importlib.import_module(m)
regs = {key: getattr(importlib.import_module(mod), attr) for key, mod, attr in P.REGISTRY_KEYS}
def names():
    return {key: {n for n, _ in reg} for key, reg in regs.items()}
def leaves(node, prefix=""):
    out = set()
    for k, v in node.items():
        out |= leaves(v, prefix + k + ".") if isinstance(v, dict) else {prefix + k}
    return out
base_keys = leaves(get_project_cfg([]))
result = {}
for p in P.installed_projects():
    before = names()
    fn = p.load()
    after = names()
    provided = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
    new_keys = leaves(get_project_cfg([fn])) - base_keys
    result[p.name] = {"provided": provided, "new_keys": sorted(new_keys), "manifest": p.manifest}
print(json.dumps(result))
'''
    result = json.loads(_run_python(code))
    assert set(result) == set(PROJECT_MODULES)
    for name, r in result.items():
        manifest = r["manifest"]
        assert manifest is not None, f"{name} has no manifest.py"
        declared = {k: sorted(v) for k, v in manifest["PROVIDES"].items() if v}
        assert declared == r["provided"], f"{name}/manifest.py PROVIDES"
        nodes = manifest["CONFIG_NODES"]
        assert all(any(k.startswith(n + ".") for n in nodes) for k in r["new_keys"]), name
        assert all(any(k.startswith(n + ".") for k in r["new_keys"]) for n in nodes), name
        for extra in [manifest["REQUIRES_EXTRA"]] + [
                e for m in manifest["NAME_EXTRAS"].values() for e in m.values()]:
            assert extra == "" or extra in extras.EXTRA_MODULES, (name, extra)


def test_a_missing_extra_stops_with_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(extras.EXTRA_MODULES, "baselines", ("timm", "no_such_module_for_this_test"))
    m2f = os.path.join(QUICK, "mask2former_R50_instant_test.yaml")
    with pytest.raises(MissingExtraError) as e:
        load_config(m2f)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(m2f + ": MODEL.META_ARCHITECTURE 'HFMask2Former'")
    assert msg.endswith("no_such_module_for_this_test (not installed): pip install 'medseg-d2[baselines]'")
    with pytest.raises(MissingExtraError, match=r"pip install 'medseg-d2\[baselines\]'"):
        extras.require_extra("baselines", "the medseg_baselines project")
    # the other projects are unaffected
    assert load_config(os.path.join(QUICK, "lmsfa_instant_test.yaml")).MODEL.META_ARCHITECTURE == "LMSFA"
    monkeypatch.setitem(extras.EXTRA_MODULES, "volumetric", ("no_such_module_for_this_test",))
    with pytest.raises(MissingExtraError, match=r"'VolumetricSegmentor' needs .*medseg-d2\[volumetric\]"):
        load_config(os.path.join(QUICK, "lgmsnet3d_instant_test.yaml"))


def test_unknown_name_loads_every_project_and_reports_the_name():
    with pytest.raises(Exception, match="NoSuchArch"):
        from detectron2.modeling import build_model
        build_model(load_config(None, ["MODEL.META_ARCHITECTURE", "NoSuchArch", "MODEL.DEVICE", "cpu"]))
    tree = {"MODEL": {"META_ARCHITECTURE": "NoSuchArch"}}
    assert [p.name for p in projects.projects_needed(tree)] == sorted(PROJECT_MODULES)


def test_read_config_tree_follows_bases_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  META_ARCHITECTURE: A\n  LMSFA:\n    NUM_CLASSES: 4\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leaf.yaml").write_text("_BASE_: ../base.yaml\nMODEL:\n  META_ARCHITECTURE: B\n")
    tree = read_config_tree(str(tmp_path / "sub" / "leaf.yaml"), ["MODEL.BACKBONE.NAME", "X", "TEST.EVALUATORS", "['coco']"])
    assert tree == {"MODEL": {"META_ARCHITECTURE": "B", "LMSFA": {"NUM_CLASSES": 4}, "BACKBONE": {"NAME": "X"}},
                    "TEST": {"EVALUATORS": ["coco"]}}
    assert read_config_tree(str(tmp_path / "missing.yaml")) is None


def test_setup_extras_and_console_scripts_match_the_package():
    setup_extras = _setup_py_literal("EXTRAS")
    for extra, modules in extras.EXTRA_MODULES.items():
        dists = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in setup_extras[extra]}
        assert dists == {m.lower() for m in modules}, extra
    from medseg_core.console import CONSOLE_SCRIPTS
    declared = dict(s.replace(" ", "").split("=") for s in _setup_py_literal("CONSOLE_SCRIPTS"))
    assert declared == {k: f"medseg_core.console:{v}" for k, v in CONSOLE_SCRIPTS.items()}
    assert set(_setup_py_literal("BUNDLED")) == {"tools", "demo", "configs"}


def test_console_script_runs_the_tool_and_finds_shipped_configs(capsys, monkeypatch):
    from medseg_core import console

    cfg = console.config_file("quick_schedules/lmsfa_instant_test.yaml")
    assert os.path.isfile(cfg)
    monkeypatch.setattr(sys, "argv", ["medseg-model-card", "--config-file", cfg, "--json", "--no-fvcore",
                                      "TEST.COMPLEXITY_INPUT_SHAPE", "(3,64,64)"])
    assert console.model_card() == 0
    card = json.loads(capsys.readouterr().out)
    assert card["meta_architecture"] == "LMSFA" and card["params"] > 0
    assert console.print_config_path(["quick_schedules/no_such.yaml"]) == 2
