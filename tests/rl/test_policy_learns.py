"""The learned AHM policy does its job: its masks are harder to reconstruct than random ones.

A seeded run far tinier than the quick default: a U-Net pretrained for a few hundred steps with
random masking (plain torch, 32 px, 64 patches) is the frozen reward network; APPO trains the
policy with 2 EnvRunners for a fixed time; on held-out phantoms the masked-patch reconstruction
loss under policy masks (p = 30% random) must exceed the loss under random masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from medmask import columns as C
from medmask.data import phantom
from medmask.masking import random_mask
from medmask.models import create_model, masked_mean_loss
from medmask.rl import PolicyBudget, ahm_appo_config, policy_vs_random, train_policy

SIZE = 32
PATCH = 4  # 64 patches of 4 px: hardness varies more than over 16 patches of 8 px


def pretrained_reconstruction(images: np.ndarray, steps: int = 300) -> torch.nn.Module:
    """unet_tiny trained by masked reconstruction with random masks (AHM's reward network)."""
    torch.manual_seed(0)
    model = create_model("unet_tiny", img_size=SIZE, patch_size=PATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.as_tensor(images[:, None])
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = x[torch.randint(0, len(x), (32,), generator=generator)]
        mask = random_mask(len(batch), model.grid, 0.75, generator=generator)
        loss = masked_mean_loss(model(batch, mask).patch_loss, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@pytest.mark.slow
@pytest.mark.e2e
def test_trained_policy_masks_are_harder_than_random(ray_session: None, tmp_path) -> None:
    # AHM is tuned on the classic phantom (configs/ahm.yaml)
    train = phantom.generate(256, SIZE, seed=0, variant="classic")[C.IMAGE]
    heldout = phantom.generate(128, SIZE, seed=0, start=256, variant="classic")[C.IMAGE]
    reconstruction = pretrained_reconstruction(train)
    config = ahm_appo_config(
        envs.ENV_ID, {"reconstruction": reconstruction, "images": train},
        num_env_runners=2, num_envs_per_env_runner=8, num_cpus_per_env_runner=0.5,
        train_batch_size=16, lr=3e-3, channels=16, min_time_s_per_iteration=0.5,
        images_per_epoch=256, seed=0,
    )
    history_rows: list[dict] = []
    net, history = train_policy(
        config, PolicyBudget(images_per_epoch=256, time_budget_s=40, checkpoint_every=5),
        checkpoint_dir=tmp_path, on_iteration=lambda i, m: history_rows.append(m),
        progress=False)
    assert len(history) == len(history_rows) >= 5
    check = policy_vs_random(net, reconstruction, heldout, ratio=0.75, random_share=0.3)
    print(f"policy check: {check}; reward {history['charts/mean_reward'].iloc[0]:.5f} -> "
          f"{history['charts/mean_reward'].iloc[-1]:.5f} over {len(history)} iterations")
    assert check["policy_mask_recon_loss"] > check["random_mask_recon_loss"]

    # A re-run continues from the last algorithm checkpoint (every 5 iterations): the history
    # and the env-step count go on from there instead of starting over.
    saved = 5 * (len(history) // 5)
    _, resumed = train_policy(
        config, PolicyBudget(images_per_epoch=256, max_iterations=saved + 2, checkpoint_every=0),
        checkpoint_dir=tmp_path, progress=False)
    assert len(resumed) == saved + 2
    steps = resumed["charts/env_steps"].to_numpy()
    assert steps[saved] > steps[saved - 1] == history["charts/env_steps"].iloc[saved - 1]
