"""What the AHM study reports about a trained policy, on held-out (test) images.

Every number is a masked-patch reconstruction loss of the frozen reconstruction network on the
test images (higher = harder masks), at the same count floor(r * N), under masks from:

- ``random``: uniform random masks (MAE);
- ``policy_p0`` / ``policy``: the policy's draws at p = 0 and at the configured p;
- ``policy_greedy``: the top-k logits (no randomness);
- ``position_prior``: the training-image mean of the per-image centred logits z - mean(z),
  drawn with the same random share and sampler (what the policy knows without the image);
- ``position_oracle``: every image masks the k positions with the highest training-image mean
  of the oracle's per-patch loss (the best image-independent mask);
- ``oracle``: per image, the top k patches by their mean masked loss over >= 32 random masks
  of that image (an estimate of each patch's hardness; the per-patch loss is nearly additive);
- ``value_greedy``: the top k patches of the value head V (an HPM-style supervised predictor);
- ``saliency``: the top k patches by pixel variance.

Then the **captured share** ``(policy_p0 - random) / (oracle - random)`` (unclipped) with a
bootstrap interval over test images; **compactness** (mean number of masked 4-neighbours of a
masked patch: a policy can raise the loss by removing context rather than by choosing hard
content, so more compact masks than the oracle's need saying); and the per-image **Spearman
correlation** of V with the oracle's estimate, over all patches and over the patches the
policy masks less than 10% of the time (inclusion rate over 64 draws; reported only for images
with at least 3 such patches, their number in ``spearman_rarely_masked_images``).
"""

from __future__ import annotations

import numpy as np
import torch

from medmask.masking import PatchGrid, ahm_mask, inclusion_rate, num_masked, random_mask

RARELY_MASKED = 0.1


def _as_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, np.float32))
    return x[:, None] if x.ndim == 3 else x


def top_k_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool [B, N]: the ``count`` highest scores of every row."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(1, torch.topk(scores, count, dim=1).indices, True)


def per_image_masked_loss(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
                          batch_size: int = 64) -> torch.Tensor:
    """Mean loss over each image's masked patches, [M]."""
    out = []
    for begin in range(0, len(images), batch_size):
        chunk, mask = images[begin:begin + batch_size], masks[begin:begin + batch_size]
        loss = model(chunk, mask).patch_loss.float()
        out.append((loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1))
    return torch.cat(out)


def oracle_patch_loss(model: torch.nn.Module, images: torch.Tensor, ratio: float,
                      draws: int = 32, generator: torch.Generator | None = None,
                      batch_size: int = 64) -> torch.Tensor:
    """Each patch's mean masked loss over ``draws`` random masks of its image, [M, N]."""
    grid: PatchGrid = model.grid
    total = torch.zeros(len(images), grid.num_patches)
    seen = torch.zeros_like(total)
    for _ in range(int(draws)):
        for begin in range(0, len(images), batch_size):
            chunk = images[begin:begin + batch_size]
            mask = random_mask(len(chunk), grid, ratio, generator=generator)
            loss = model(chunk, mask).patch_loss.float()
            total[begin:begin + len(chunk)] += loss * mask
            seen[begin:begin + len(chunk)] += mask
    # A patch no random mask covered (rare for 32 draws) gets the image's mean estimate.
    estimate = total / seen.clamp(min=1)
    fill = (total.sum(1) / seen.sum(1).clamp(min=1))[:, None].expand_as(estimate)
    return torch.where(seen > 0, estimate, fill)


def compactness(masks: torch.Tensor, grid: PatchGrid) -> float:
    """Mean number of masked 4-neighbours per masked patch (0..4)."""
    cells = grid.rows * grid.cols
    full = torch.nn.functional.pad(masks.float(), (0, cells - grid.num_patches))
    m = full.reshape(-1, 1, grid.rows, grid.cols)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    neighbours = torch.nn.functional.conv2d(m, kernel, padding=1)
    return float((neighbours * m).sum() / m.sum().clamp(min=1))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a 1-d tensor, ties sharing their mean rank (float64)."""
    order = values.argsort()
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True,
                                                  return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() + 1) / 2  # mean of positions end-count .. end-1
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman_rows(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Spearman correlation per row of a and b [M, N] (over ``keep``'s True entries), [M]."""
    out = []
    for row in range(a.shape[0]):
        x, y = a[row], b[row]
        if keep is not None:
            x, y = x[keep[row]], y[keep[row]]
        if len(x) < 3:
            out.append(float("nan"))
            continue
        rx, ry = average_ranks(x), average_ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denominator = (rx.norm() * ry.norm()).item()
        out.append((rx @ ry).item() / denominator if denominator > 0 else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


def bootstrap_ratio(numerator: torch.Tensor, denominator: torch.Tensor, draws: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(numerator) / mean(denominator) over resampled rows."""
    rng = np.random.default_rng(seed)
    num, den = numerator.double().numpy(), denominator.double().numpy()
    idx = rng.integers(0, len(num), size=(int(draws), len(num)))
    ratios = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return float(low), float(high)


@torch.no_grad()
def policy_diagnostics(
    policy: torch.nn.Module,
    reconstruction: torch.nn.Module,
    train_images: np.ndarray | torch.Tensor,
    test_images: np.ndarray | torch.Tensor,
    *,
    ratio: float = 0.75,
    random_share: float = 0.3,
    oracle_draws: int = 32,
    position_images: int = 256,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """The study's numbers for ``policy`` (module docstring), as a flat metrics dict.

    Args:
        policy: a :class:`~medmask.rl.MaskingPolicyNet` (``forward`` -> (logits, values)).
        reconstruction: the frozen masked reconstruction model (``.grid``, ``patch_loss``).
        train_images: images the position prior and position oracle are estimated on.
        test_images: held-out images every loss is measured on.
        ratio, random_share: the masking ratio r and the configured random share p.
        oracle_draws: random masks per image for the oracle's per-patch estimate (>= 32).
        position_images: at most this many training images for the position statistics.
        bootstrap: resamples of the test images for the captured share's interval.
        seed: seeds every draw.
    """
    reconstruction, policy = reconstruction.eval(), policy.eval()
    grid: PatchGrid = reconstruction.grid
    count = num_masked(grid.num_patches, ratio)
    x_test = _as_images(test_images)
    x_train = _as_images(train_images)[:position_images]
    gen = torch.Generator().manual_seed(seed)

    def net_out(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [policy(x[b:b + 64]) for b in range(0, len(x), 64)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    z_test, v_test = net_out(x_test)
    z_train, _ = net_out(x_train)
    prior = (z_train - z_train.mean(dim=1, keepdim=True)).mean(dim=0, keepdim=True)
    oracle_test = oracle_patch_loss(reconstruction, x_test, ratio, oracle_draws, gen)
    oracle_train = oracle_patch_loss(reconstruction, x_train, ratio, oracle_draws, gen)
    pixel_var = grid.pool(x_test.pow(2).mean(1)) - grid.pool(x_test.mean(1)).pow(2)

    m = len(x_test)
    masks: dict[str, torch.Tensor] = {
        "random": random_mask(m, grid, ratio, generator=gen),
        "policy_p0": ahm_mask(z_test, grid, ratio, 0.0, gen),
        "policy": ahm_mask(z_test, grid, ratio, random_share, gen),
        "policy_greedy": top_k_mask(z_test, count),
        "position_prior": ahm_mask(prior.expand(m, -1), grid, ratio, random_share, gen),
        "position_oracle": top_k_mask(oracle_train.mean(dim=0, keepdim=True), count
                                      ).expand(m, -1),
        "oracle": top_k_mask(oracle_test, count),
        "value_greedy": top_k_mask(v_test, count),
        "saliency": top_k_mask(pixel_var, count),
    }
    losses = {name: per_image_masked_loss(reconstruction, x_test, mask)
              for name, mask in masks.items()}
    out = {f"test/{name}_mask_loss": float(loss.mean()) for name, loss in losses.items()}
    gain, room = losses["policy_p0"] - losses["random"], losses["oracle"] - losses["random"]
    out["captured_share_p0"] = float(gain.mean() / room.mean())
    out["captured_share_p0_ci_low"], out["captured_share_p0_ci_high"] = bootstrap_ratio(
        gain, room, bootstrap, seed)
    out["policy_p0_beats_position_oracle"] = float(
        losses["policy_p0"].mean() > losses["position_oracle"].mean())
    for name in ("policy_p0", "policy", "random", "oracle"):
        out[f"compactness/{name}"] = compactness(masks[name], grid)
    rate = inclusion_rate(z_test, count, random_share, draws=64, generator=gen)
    out["spearman_v_oracle"] = float(np.nanmean(spearman_rows(v_test, oracle_test).numpy()))
    rarely = spearman_rows(v_test, oracle_test, rate < RARELY_MASKED).numpy()
    out["spearman_rarely_masked_images"] = float(np.isfinite(rarely).sum())
    if np.isfinite(rarely).any():  # images with >= 3 rarely masked patches (often none at
        out["spearman_v_oracle_rarely_masked"] = float(np.nanmean(rarely))  # r = 0.75)
    # The acceptance check's names (policy at the configured p vs random masks).
    out["policy_mask_recon_loss"] = out["test/policy_mask_loss"]
    out["random_mask_recon_loss"] = out["test/random_mask_loss"]
    out["hard_vs_random_ratio"] = out["policy_mask_recon_loss"] / max(
        out["random_mask_recon_loss"], 1e-12)
    return out
