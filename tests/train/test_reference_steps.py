"""Refactors change no number: three pretraining steps and one fine-tuning step, in-process
(no Ray), on fixed phantom batches, give the masks and losses recorded before the rooms were
reshaped (commit 634a5b3, this machine: bit-identical).

Masks are compared exactly (their SHA-256); losses to 1e-6 relative, since float kernels may
differ in the last bits on another CPU.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from medmask.data.phantom import generate
from medmask.keyed import image_keys, mask_seeds
from medmask.masking import create_mask_strategy
from medmask.models import EncoderClassifier, create_model, masked_mean_loss
from medmask.train import OptimizerConfig, build_optimizer, build_scheduler

EXPECTED = {
    "masks": ["d98d3e34a1299b5b", "2de69eb18857ad5a", "a65050c53bd52aa7"],
    "losses": [2.437743902206421, 2.460968494415283, 2.331634759902954],
    "finetune_loss": 1.387237787246704,
    "after_step": -2.062762975692749,
}


def reference_steps() -> dict:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batch = generate(16, 32, seed=3, variant="classic")  # the phantom of 634a5b3
        images = torch.from_numpy(batch["image"])[:, None].float()
        organs = torch.from_numpy(batch["organs"])
        keys = image_keys(batch["id"])
        model = create_model("mae_vit_tiny_64", img_size=32, patch_size=4, embed_dim=32,
                             depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                             decoder_num_heads=2)
        cfg = OptimizerConfig(base_lr=4e-3, warmup_epochs=1)
        optimizer = build_optimizer(model, cfg, 16)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=3, epochs=2)
        strategy = create_mask_strategy("rgmim")
        out: dict = {"masks": [], "losses": []}
        for step in range(3):
            mask = strategy({"organs": organs, "mask_seed": mask_seeds(keys, 0, step)},
                            model.grid, 0.75)
            loss = masked_mean_loss(model(images, mask).patch_loss.float(), mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            out["masks"].append(hashlib.sha256(mask.numpy().tobytes()).hexdigest()[:16])
            out["losses"].append(loss.item())
        classifier = EncoderClassifier(model, num_classes=4)
        optimizer = build_optimizer(classifier, OptimizerConfig(base_lr=8e-3), 16)
        loss = F.cross_entropy(classifier(images), torch.from_numpy(batch["label"]).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out["finetune_loss"] = loss.item()
        out["after_step"] = classifier(images).sum().item()
        return out
    finally:
        torch.set_num_threads(threads)


def test_reference_steps_are_unchanged():
    got = reference_steps()
    assert got["masks"] == EXPECTED["masks"]
    assert got["losses"] == pytest.approx(EXPECTED["losses"], rel=1e-6)
    assert got["finetune_loss"] == pytest.approx(EXPECTED["finetune_loss"], rel=1e-6)
    assert got["after_step"] == pytest.approx(EXPECTED["after_step"], rel=1e-6)
