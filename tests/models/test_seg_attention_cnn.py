"""Option 5's encoder: the guide's stages and branches, the order they apply in, the
score-conditioned head, the decoder, and what fine-tuning reads and freezes."""

from __future__ import annotations

import pytest
import torch

from medmask.models import EncoderClassifier, SegAttentionCNN, create_model


def test_the_guides_branches_at_224():
    model = create_model("seg_attention_cnn")
    assert model.channels == (64, 128, 256, 512, 512) and model.embed_dim == 512
    convs = [m for m in model.segmentation if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(256, 128), (128, 64), (64, 1)]
    for attention, c in ((model.attention3, 256), (model.attention4, 512)):
        a, b = [m for m in attention.body if isinstance(m, torch.nn.Conv2d)]
        assert (a.in_channels, a.out_channels, b.out_channels) == (c, c // 8, 1)
    assert model.projection[0].in_features == 513 and model.projection[-1].out_features == 256
    out = model.eval()(torch.rand(1, 1, 224, 224), reconstruct=1)
    assert out.mask.shape == (1, 1, 28, 28) and out.attention4.shape == (1, 1, 14, 14)
    assert out.reconstruction.shape == (1, 1, 224, 224) and out.projection.shape == (1, 256)


def test_attention_and_mask_weighting_apply_in_the_guides_order():
    """stage 3 -> x a3 -> mask m = seg(x) -> x (1 + m) -> stage 4 -> x a4 -> stage 5 + pool;
    the head sees [features, mean(m)]."""
    torch.manual_seed(0)
    model = create_model("seg_attention_cnn_tiny", img_size=32).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        x = model.stages[:3](images)
        x = x * model.attention3(x)
        mask = model.segmentation(x)
        x = model.stages[3](x * (1 + mask))
        features = model.stages[4](x * model.attention4(x))
        head = model.projection(torch.cat([features, mask.mean((1, 2, 3))[:, None]], 1))
        out = model(images)
    assert torch.allclose(out.features, features, atol=1e-6)
    assert torch.allclose(out.mask, mask) and torch.allclose(out.projection, head, atol=1e-6)
    assert torch.allclose(model.encode(images), features, atol=1e-6)
    assert out.reconstruction is None


def test_fine_tuning_reads_encode_and_freezes_head_and_decoder():
    encoder = create_model("seg_attention_cnn_tiny")
    classifier = EncoderClassifier(encoder, num_classes=5, multilabel=True)
    frozen = {id(p) for p in encoder.decoder_parameters()}
    assert {id(p) for p in encoder.decoder.parameters()} <= frozen
    assert not {id(p) for p in encoder.segmentation.parameters()} & frozen
    assert classifier(torch.rand(2, 1, 64, 64)).shape == (2, 5)
    with pytest.raises(ValueError, match="multiple of 32"):
        SegAttentionCNN(img_size=48)
    with pytest.raises(ValueError, match="reconstructs 64-px"):
        encoder(torch.rand(2, 1, 32, 32), reconstruct=1)
