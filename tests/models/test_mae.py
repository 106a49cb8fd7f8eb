import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from medmask.masking import PatchGrid, random_mask
from medmask.models import MaskedAutoencoderViT, create_model, load_local_weights, masked_mean_loss


@pytest.fixture
def model() -> MaskedAutoencoderViT:
    torch.manual_seed(0)
    return create_model("mae_vit_tiny_64").eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def _mask(model, batch, ratio, seed=0):
    return random_mask(batch, model.grid, ratio, generator=torch.Generator().manual_seed(seed))


def test_shapes(model, images):
    out = model(images, _mask(model, 3, 0.75))
    assert out.prediction.shape == (3, 1, 64, 64)
    assert out.patch_loss.shape == (3, 64)
    assert model.encode(images).shape == (3, 128)
    assert model.grid == PatchGrid(64, 64, patch_size=8)


def test_patchify_follows_the_grid_boxes(model, images):
    patches = model.patchify(images)
    assert patches.shape == (3, 64, 64)
    h0, h1, w0, w1 = model.grid.boxes()[13]
    assert torch.equal(patches[1, 13], images[1, 0, h0:h1, w0:w1].reshape(-1))
    assert torch.equal(model.unpatchify(patches), images)


def test_encoder_sees_only_visible_tokens(model, images):
    seen = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    model(images, _mask(model, 3, 0.75))
    model(images, _mask(model, 3, 0.0))
    model.encode(images)
    assert seen == [16 + 1, 64 + 1, 64 + 1]  # N_visible + cls


def test_masked_pixels_do_not_reach_the_encoder(model, images):
    mask = _mask(model, 3, 0.75)
    ids_keep = model.visible_ids(mask, 3)
    masked_k = int(mask[0].nonzero()[0])
    visible_k = int((~mask[0]).nonzero()[0])
    with torch.no_grad():
        base = model.forward_encoder(images, ids_keep)
        for k, should_change in ((masked_k, False), (visible_k, True)):
            h0, h1, w0, w1 = model.grid.boxes()[k]
            changed = images.clone()
            changed[0, 0, h0:h1, w0:w1] += 5.0
            latent = model.forward_encoder(changed, ids_keep)
            assert torch.equal(latent[1:], base[1:])  # other images untouched
            assert (not torch.equal(latent[0], base[0])) == should_change


def test_visible_ids_are_the_unmasked_patches_in_order(model):
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, [0, 5, 63]] = True
    mask[1, [1, 2, 3]] = True
    ids = model.visible_ids(mask, 2)
    assert ids.shape == (2, 61)
    assert ids[0].tolist() == [k for k in range(64) if k not in (0, 5, 63)]
    assert ids[1].tolist() == [0] + list(range(4, 64))


def test_patch_loss_is_the_mse_of_each_patch(model, images):
    mask = _mask(model, 3, 0.5)
    with torch.no_grad():
        out = model(images, mask)
    for b, k in ((0, 0), (1, 37), (2, 63)):
        h0, h1, w0, w1 = model.grid.boxes()[k]
        diff = out.prediction[b, :, h0:h1, w0:w1] - images[b, :, h0:h1, w0:w1]
        assert out.patch_loss[b, k].item() == pytest.approx(diff.pow(2).mean().item(), rel=1e-5)
    # the training loss is eq. 5 over the masked patches only
    manual = (out.prediction - images).pow(2)[model.grid.pixel_mask(mask)[:, None]].mean()
    assert masked_mean_loss(out.patch_loss, mask).item() == pytest.approx(manual.item(), rel=1e-5)


def test_norm_pix_loss_uses_normalized_targets(images):
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_64", norm_pix_loss=True).eval()
    with torch.no_grad():
        out = model(images, _mask(model, 3, 0.75))
    target = model.patchify(images)
    mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
    normalized_prediction = (model.patchify(out.prediction) - mean) / std
    expected = (normalized_prediction - (target - mean) / std).pow(2).mean(-1)
    torch.testing.assert_close(out.patch_loss, expected, rtol=1e-4, atol=1e-5)


def test_sincos_position_embeddings_are_fixed_2d_tables():
    model = create_model("mae_vit_tiny_64", pos_embed="sincos")
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    table = model.pos_embed[0]
    assert torch.equal(table[0], torch.zeros(128))  # cls
    # patch 10 = row 1, col 2: [sin(row), sin(col), cos(row), cos(col)] at frequency 1
    k = 1 + 10
    expected = torch.tensor([1.0, 2.0, 1.0, 2.0])
    got = table[k, [0, 32, 64, 96]]
    torch.testing.assert_close(got, torch.cat([expected[:2].sin(), expected[2:].cos()]))
    assert model.decoder_pos_embed.shape == (1, 65, 64)
    assert create_model("mae_vit_tiny_64").pos_embed.requires_grad  # learnable 1-D default


def test_bad_masks_and_configs_raise(model, images):
    uneven = torch.zeros(3, 64, dtype=torch.bool)
    uneven[0, 0] = True
    with pytest.raises(ValueError, match="same number"):
        model(images, uneven)
    with pytest.raises(ValueError, match=r"mask must be bool \[3, 64\]"):
        model(images, torch.zeros(3, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="every patch"):
        model(images, torch.ones(3, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"images must be \[B, 1, 64, 64\]"):
        model(torch.rand(3, 1, 32, 32), _mask(model, 3, 0.75))
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        MaskedAutoencoderViT(img_size=64, patch_size=8, pos_embed="rope")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MaskedAutoencoderViT(img_size=60, patch_size=8)


def test_encode_is_gap_of_layernormed_tokens(model, images):
    with torch.no_grad():
        x = model.patch_embed(images) + model.pos_embed[:, 1:]
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(3, -1, -1)
        z = model.blocks(torch.cat([cls, x], 1))
        expected = model.norm(z)[:, 1:].mean(1)  # RGMIM eq. 4
        torch.testing.assert_close(model.encode(images), expected)


def test_timm_vit_weights_load_into_the_encoder(tmp_path):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=64, patch_size=8, in_chans=3, embed_dim=128, depth=4,
                            num_heads=4, num_classes=10)
    path = tmp_path / "imagenet_vit.pth"
    torch.save(vit.state_dict(), path)
    model = create_model("mae_vit_tiny_64")
    report = load_local_weights(model, path)
    assert report.adapted == ["patch_embed.proj.weight"]  # RGB stem -> grayscale
    assert set(report.unexpected) == {"head.weight", "head.bias"}
    assert report.mismatched == []
    assert all(k.startswith("decoder") or k == "mask_token" for k in report.missing)
    assert torch.equal(model.blocks[2].attn.qkv.weight, vit.blocks[2].attn.qkv.weight)
    assert torch.equal(model.pos_embed, vit.pos_embed)
    torch.testing.assert_close(model.patch_embed.proj.weight,
                               vit.patch_embed.proj.weight.sum(1, keepdim=True))
    assert timm.__version__  # the loaded names are timm's


def test_pretraining_on_phantoms_beats_the_visible_mean_baseline():
    """Uniform-noise images can be "learned" by predicting 0.5; phantoms cannot: after a short
    pretraining the masked-pixel error on held-out phantoms must beat the zero-parameter
    visible-mean prediction on the same masks by a margin."""
    from medmask import columns as C
    from medmask.data.phantom import generate
    from medmask.eval import visible_mean_loss
    from medmask.masking import apply_patch_mask

    torch.manual_seed(0)
    data = generate(288, 32, 0)
    images = torch.from_numpy(data[C.IMAGE])[:, None]
    train, held_out = images[:256], images[256:]
    model = create_model("mae_vit_tiny_64", img_size=32, patch_size=4, embed_dim=48, depth=2,
                         num_heads=4, decoder_embed_dim=48, decoder_depth=1,
                         decoder_num_heads=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)
    for step in range(100):
        batch = train[(step * 32) % 256:(step * 32) % 256 + 32]
        mask = random_mask(32, model.grid, 0.75, generator=generator)
        loss = masked_mean_loss(model(batch, mask).patch_loss, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    mask = random_mask(32, model.grid, 0.75, generator=torch.Generator().manual_seed(9))
    hidden = apply_patch_mask(torch.ones_like(held_out), model.grid, mask) == 0
    with torch.no_grad():
        prediction = model(held_out, mask).prediction
    mse = float(((prediction - held_out).square() * hidden).sum() / hidden.sum())
    baseline = float(visible_mean_loss(held_out, hidden).mean())
    assert mse < 0.7 * baseline, f"MAE {mse:.4f} vs visible mean {baseline:.4f}"


def test_decoder_puts_the_visible_token_back_at_its_patch_position(model, images):
    """With one patch visible, the decoder's input holds that patch's encoder token at its own
    position (plus its position embedding) and the mask token everywhere else."""
    n = model.grid.num_patches
    k = 37
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, k] = False
    seen = {}
    hook = model.decoder_blocks.register_forward_pre_hook(
        lambda module, args: seen.setdefault("x", args[0].detach().clone()))
    with torch.no_grad():
        model(images[:1], mask)
        latent = model.forward_encoder(images[:1], torch.tensor([[k]]))
        expected_k = model.decoder_embed(latent)[0, 1] + model.decoder_pos_embed[0, 1 + k]
        filler = model.mask_token[0, 0] + model.decoder_pos_embed[0, 1:]
    hook.remove()
    x = seen["x"][0, 1:]  # drop the cls token
    assert torch.allclose(x[k], expected_k, atol=1e-6)
    others = torch.arange(n) != k
    assert torch.allclose(x[others], filler[others], atol=1e-6)


def test_visible_patch_embedding_equals_timm_patch_embed_conv():
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_64", in_chans=3, depth=1).eval()
    rgb = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.patch_embed(rgb) + model.pos_embed[:, 1:]  # timm's conv path
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1)
        expected = model.norm(model.blocks(torch.cat([cls, tokens], 1)))
        torch.testing.assert_close(model.forward_encoder(rgb), expected, rtol=1e-4, atol=1e-5)
        ids_keep = torch.tensor([[0, 9, 63], [5, 6, 7]])
        kept = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, 128))
        expected = model.norm(model.blocks(torch.cat([cls, kept], 1)))
        torch.testing.assert_close(model.forward_encoder(rgb, ids_keep), expected,
                                   rtol=1e-4, atol=1e-5)
