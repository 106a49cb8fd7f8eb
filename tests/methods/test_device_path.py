"""The GPU path's numerics, checked on the CPU: bf16 autocast and channels-last parameters give
the masked-image-modeling loss of the fp32, contiguous run (tiny models, one batch)."""

from __future__ import annotations

import pytest
import torch

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.keyed import image_keys
from medmask.masking import create_mask_strategy
from medmask.methods import create_method
from medmask.models import BF16_EVERYWHERE, autocast, use_channels_last

TINY_MAE = {"name": "mae_vit_tiny_64",
            "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                       "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                       "decoder_num_heads": 2}}
TINY_UNET = {"name": "unet_tiny", "params": {"img_size": 32, "patch_size": 8}}
CPU = torch.device("cpu")


def _batch(size: int = 32, n: int = 8) -> dict[str, torch.Tensor]:
    data = generate(n, size, seed=0)
    return {C.IMAGE: torch.as_tensor(data[C.IMAGE]),
            C.IMAGE_KEY: torch.as_tensor(image_keys(data[C.ID]))}


def _loss_and_grads(model_cfg: dict, mixed: bool | str, channels_last: bool
                    ) -> tuple[float, torch.Tensor]:
    """The MAE batch loss (``medmask.methods``) of a seeded model, and its flat gradient."""
    torch.manual_seed(0)
    config = {"model": model_cfg, "masking": {"name": "random", "ratio": 0.75, "params": {}},
              "seed": 0, "mixed_precision": mixed}
    parts = create_method("mae").build(config, CPU, create_mask_strategy("random"))
    use_channels_last(parts.model, CPU, channels_last)
    loss, images = parts.batch_loss(parts.model, _batch(), 0)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in parts.model.parameters() if p.grad is not None])
    assert images == 8 and loss.dtype == torch.float32
    return loss.item(), grads


@pytest.mark.parametrize("model_cfg", [TINY_MAE, TINY_UNET], ids=["mae_vit", "unet"])
def test_bf16_autocast_on_cpu_matches_fp32(model_cfg):
    fp32, _ = _loss_and_grads(model_cfg, False, False)
    bf16, _ = _loss_and_grads(model_cfg, BF16_EVERYWHERE, False)
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    assert bf16 != fp32  # the bf16 path really ran


@pytest.mark.parametrize("model_cfg", [TINY_MAE, TINY_UNET], ids=["mae_vit", "unet"])
def test_channels_last_on_cpu_runs_and_matches(model_cfg):
    loss, grads = _loss_and_grads(model_cfg, False, False)
    loss_cl, grads_cl = _loss_and_grads(model_cfg, False, True)
    assert loss_cl == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(grads_cl, grads, rtol=1e-4, atol=1e-6)


def test_channels_last_converts_conv_weights_where_asked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3))
    assert use_channels_last(model, CPU) is model  # default: CUDA only, the CPU keeps NCHW
    assert all(p.is_contiguous() for p in model.parameters())
    use_channels_last(model, CPU, True)
    weights = [p for p in model.parameters() if p.ndim == 4]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not weights[1].is_contiguous()


def test_autocast_modes():
    with autocast(CPU, True):  # True means "on CUDA": the CPU stays fp32
        assert not torch.is_autocast_enabled("cpu")
    with autocast(CPU, BF16_EVERYWHERE):
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4)).dtype == (
            torch.bfloat16)
    with pytest.raises(ValueError, match="bf16"):
        autocast(CPU, "fp16")
