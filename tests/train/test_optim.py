import math

import pytest
import torch

from medmask.train._optim import (
    OptimizerConfig,
    build_optimizer,
    build_scheduler,
    warmup_cosine_factor,
)


def test_rgmim_table1_defaults_and_linear_scaling():
    cfg = OptimizerConfig()
    assert (cfg.base_lr, cfg.weight_decay, cfg.betas) == (1.5e-4, 0.05, (0.9, 0.95))
    assert cfg.absolute_lr(256) == pytest.approx(1.5e-4)
    assert cfg.absolute_lr(64) == pytest.approx(1.5e-4 / 4)


def test_no_decay_on_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, OptimizerConfig(), 128)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and len(decay["params"]) == 1  # the Linear weight
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(1.5e-4 * 128 / 256)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_warmup_then_half_cosine():
    cfg = OptimizerConfig(warmup_epochs=2)
    assert warmup_cosine_factor(1.0, 10, cfg, 1.0) == pytest.approx(0.5)
    assert warmup_cosine_factor(2.0, 10, cfg, 1.0) == pytest.approx(1.0)
    half_way = 0.5 * (1 + math.cos(math.pi / 2))
    assert warmup_cosine_factor(6.0, 10, cfg, 1.0) == pytest.approx(half_way)
    assert warmup_cosine_factor(10.0, 10, cfg, 1.0) == pytest.approx(0.0)


def test_scheduler_steps_per_batch():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimizerConfig(base_lr=1.0, reference_batch=1), 1)
    sched = build_scheduler(opt, OptimizerConfig(warmup_epochs=1), steps_per_epoch=4, epochs=2)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert lrs[4] == pytest.approx(1.0)


def test_ahm_step_decay_is_ten_percent_every_three_epochs() -> None:
    # AHM V-B: Adam, lr 3e-4, "10% decay every 3 epochs" (unscaled by the batch size).
    cfg = OptimizerConfig(base_lr=3e-4, optimizer="adam", scale_lr=False, schedule="step",
                          decay_every_epochs=3, decay_factor=0.9, weight_decay=0.0)
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg, batch_size=4)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    sched = build_scheduler(opt, cfg, steps_per_epoch=2, epochs=9)
    lrs = []
    for _ in range(18):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    per_epoch = lrs[::2]  # epochs 0..8
    expected = [3e-4] * 3 + [2.7e-4] * 3 + [2.43e-4] * 3
    assert per_epoch == pytest.approx(expected, rel=1e-9)


def test_optimizer_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of"):
        OptimizerConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="schedule must be one of"):
        OptimizerConfig(schedule="linear")


def _mae(classifier: bool = False):
    from medmask.models import EncoderClassifier, create_model

    encoder = create_model("mae_vit_tiny_64", patch_size=8, embed_dim=32, depth=3, num_heads=2,
                           decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    return EncoderClassifier(encoder, num_classes=4) if classifier else encoder


def test_no_decay_rule_on_the_mae_own_parameter_names():
    from medmask.train._optim import parameter_groups

    encoder = _mae()  # the pretraining model: decoder and mask token trained
    skipped = {n for g in parameter_groups(encoder, 0.05) if g["weight_decay"] == 0.0
               for n in g["names"]}
    for name in ("pos_embed", "cls_token", "mask_token", "decoder_pos_embed",
                 "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "norm.bias"):
        assert name in skipped, name
    decayed = {n for g in parameter_groups(encoder, 0.05) if g["weight_decay"] == 0.05
               for n in g["names"]}
    assert {"patch_embed.proj.weight", "blocks.2.mlp.fc1.weight",
            "decoder_embed.weight"} <= decayed


def test_layer_wise_lr_decay_groups_follow_mae_layer_ids():
    from medmask.train._optim import parameter_groups

    classifier = _mae(classifier=True)  # 3 blocks: layers 0 (embeddings) .. 4 (norm, head)
    scale = {n: g["lr_scale"] for g in parameter_groups(classifier, 0.05, 0.75)
             for n in g["names"]}
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.75 ** 4)
    assert scale["encoder.cls_token"] == pytest.approx(0.75 ** 4)
    assert scale["encoder.pos_embed"] == pytest.approx(0.75 ** 4)
    assert scale["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.75 ** 3)
    assert scale["encoder.blocks.2.mlp.fc2.weight"] == pytest.approx(0.75 ** 1)
    assert scale["encoder.norm.weight"] == pytest.approx(1.0)
    assert scale["head.weight"] == pytest.approx(1.0)
    assert not any("decoder" in n for n in scale)  # the classifier freezes the decoder
    opt = build_optimizer(classifier, OptimizerConfig(base_lr=1e-3, layer_decay=0.75), 256)
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == pytest.approx([1e-3 * 0.75 ** k for k in (4, 3, 2, 1, 0)])
    # the schedule scales every group by the same factor: ratios between layers are kept
    sched = build_scheduler(opt, OptimizerConfig(base_lr=1e-3, layer_decay=0.75,
                                                 warmup_epochs=1), steps_per_epoch=4, epochs=3)
    for _ in range(6):
        opt.step()
        sched.step()
    head = max(g["lr"] for g in opt.param_groups)
    first = min(g["lr"] for g in opt.param_groups)
    assert first / head == pytest.approx(0.75 ** 4)
    with pytest.raises(ValueError, match="layer_decay"):
        OptimizerConfig(layer_decay=0.0)
