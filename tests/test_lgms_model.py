"""LGMSNet / U-Net / CMUNeXt as Detectron2 models: counts, outputs, losses and learning."""
import os

import pytest
import torch
import torch.nn.functional as F

from detectron2.utils.events import EventStorage

from lgms.losses import binary_bce_dice_loss, multiclass_ce_dice_loss
from medseg_core.engine.trainer import MedSegTrainer
from medseg_core.testing import load_test_cfg

KVASIR = "configs/Kvasir-SemanticSegmentation"


def _cfg(repo_root, name, *opts):
    return load_test_cfg(os.path.join(repo_root, KVASIR, name), "DATASETS.VALIDATE", "False", *opts)


@pytest.mark.parametrize(
    "config, expected",
    [("lgmsnet_256.yaml", 2_321_393), ("unet_256.yaml", 34_527_041), ("cmunext_256.yaml", 3_149_185),
     ("tinyunet_256.yaml", 481_105)],
)
def test_exact_parameter_counts(repo_root, config, expected):
    # LGMSNet: the released SegmsNet (paper 2.32 M); U-Net: LGMSNet Table 1 (34.52 M);
    # CMUNeXt: its paper (3.14 M); TinyU-Net: its paper (0.48 M)
    model = MedSegTrainer.build_model(_cfg(repo_root, config))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_multiclass_head_adds_only_classifier_weights(repo_root):
    model = MedSegTrainer.build_model(_cfg(repo_root, "lgmsnet_256.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7"))
    assert sum(p.numel() for p in model.parameters()) == 2_321_393 + 6 * 17
    with pytest.raises(ValueError, match="count the background"):
        MedSegTrainer.build_model(_cfg(repo_root, "lgmsnet_256.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1"))


def test_binary_inference_outputs_two_channels_any_input_size(repo_root):
    torch.manual_seed(0)
    model = MedSegTrainer.build_model(_cfg(repo_root, "lgmsnet_256.yaml")).eval()
    # 100 x 140 is not a multiple of 32: padded inside, cropped back; original size 150 x 210
    batch = [{"image": torch.randint(0, 255, (3, 100, 140)).float(), "height": 150, "width": 210}]
    with torch.no_grad():
        (out,) = model(batch)
        x = (batch[0]["image"][None] - model.pixel_mean) / model.pixel_std
        z = model.complexity_forward(F.pad(x, (0, 20, 0, 28)))
    assert out["sem_seg"].shape == (2, 150, 210)
    assert out["sem_seg_model_res"].shape == (2, 100, 140)
    assert torch.all(out["sem_seg"][0] == 0) and torch.all(out["sem_seg_model_res"][0] == 0)
    assert z.shape == (1, 1, 128, 160)  # raw network logits on the padded grid
    assert torch.allclose(z[0, 0, :100, :140], out["sem_seg_model_res"][1], atol=1e-5)
    # argmax of [0, z] is the authors' sigmoid(z) > 0.5
    fg = out["sem_seg_model_res"].argmax(0) == 1
    assert torch.equal(fg, torch.sigmoid(out["sem_seg_model_res"][1]) > 0.5)


def test_eq9_loss_matches_the_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 5)
    target = (torch.rand(2, 4, 5) > 0.5).long()
    loss = binary_bce_dice_loss(logits, target)
    p, y = torch.sigmoid(logits[:, 0]), target.float()
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], y)
    dice = ((2 * (p * y).sum((1, 2)) + 1e-5) / (p.sum((1, 2)) + y.sum((1, 2)) + 1e-5)).mean()
    assert loss["loss_bce"].item() == pytest.approx(0.5 * bce.item(), rel=1e-6)
    assert loss["loss_dice"].item() == pytest.approx(1 - dice.item(), rel=1e-6)
    # ignored pixels change nothing, whatever the logits there
    t2 = target.clone()
    t2[:, :, -1] = 255
    l2 = binary_bce_dice_loss(logits, t2)
    l3 = binary_bce_dice_loss(torch.cat([logits[..., :-1], 100 * torch.ones(2, 1, 4, 1)], -1), t2)
    assert l2["loss_bce"].item() == pytest.approx(l3["loss_bce"].item(), rel=1e-6)
    assert l2["loss_dice"].item() == pytest.approx(l3["loss_dice"].item(), rel=1e-6)


def test_multiclass_loss_ignores_255_and_rejects_bad_labels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0] = 255
    loss = multiclass_ce_dice_loss(logits, target)
    assert loss["loss_ce"].item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item())
    sum(loss.values()).backward()
    assert torch.all(logits.grad[0, :, 0] == 0)  # no gradient from ignored pixels
    with pytest.raises(ValueError, match="not class ids 0..2"):
        multiclass_ce_dice_loss(logits, torch.full((1, 4, 4), 5))


def _foreground_iou(model, batch):
    model.eval()
    with torch.no_grad():
        outs = model([{"image": b["image"]} for b in batch])
    model.train()
    pred = torch.stack([o["sem_seg"].argmax(0) for o in outs]) == 1
    gt = torch.stack([b["sem_seg"] for b in batch]) == 1
    return float((pred & gt).sum() / (pred | gt).sum().clamp(min=1))


def test_binary_0_255_masks_train_the_foreground(repo_root):
    """A few steps on the 0/255 smoke masks lower the loss and raise the foreground IoU."""
    torch.manual_seed(0)
    cfg = load_test_cfg(
        os.path.join(repo_root, "configs/quick_schedules/lgmsnet_instant_test.yaml"), "DATASETS.VALIDATE", "False",
        "INPUT.RANDOM_ROTATE90", "False", "INPUT.RANDOM_FLIP", "none", "SOLVER.IMS_PER_BATCH", "2",
    )
    model = MedSegTrainer.build_model(cfg)
    optimizer = MedSegTrainer.build_optimizer(cfg, model)
    batch = next(iter(MedSegTrainer.build_train_loader(cfg)))
    assert all(int(b["sem_seg"].max()) == 1 for b in batch)  # 255 -> 1, not ignore
    before = _foreground_iou(model, batch)
    losses = []
    with EventStorage(0):
        for _ in range(20):
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    after = _foreground_iou(model, batch)
    assert losses[-1] < 0.6 * losses[0]
    assert after > before + 0.3 and after > 0.5
