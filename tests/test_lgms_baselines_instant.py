"""The U-Net, CMUNeXt and TinyU-Net instant tests train and evaluate end to end on the smoke set."""
import pytest

from test_lgms_configs import run_instant_test


@pytest.mark.parametrize("name", ["unet", "cmunext", "tinyunet"])
def test_baseline_instant_test_trains_and_evaluates(name, tmp_path):
    run_instant_test(name, tmp_path)
