"""The contrastive backbone: the guide's five stages, encode/embed_dim, the classifier path."""

from __future__ import annotations

import pytest
import torch

from medmask.models import ContrastiveCNN, EncoderClassifier, create_model, list_models


def test_the_guides_five_stages_at_224():
    model = create_model("contrastive_cnn")
    assert model.channels == (64, 128, 256, 512, 512) and model.embed_dim == 512
    x = torch.zeros(1, 1, 224, 224)
    sides = []
    for stage in model.stages[:4]:
        x = stage(x)
        sides.append(x.shape[-1])
    assert sides == [112, 56, 28, 14]  # 224 -> 112 -> 56 -> 28 -> 14, then stage 5 -> 1 x 1
    assert model.stages[4](x).shape == (1, 512)
    assert model.projection[0].in_features == 512 and model.proj_dim == 256


def test_tiny_width_encode_and_projection_shapes():
    assert {"contrastive_cnn", "contrastive_cnn_tiny"} <= set(list_models("contrastive"))
    model = create_model("contrastive_cnn_tiny")
    assert model.channels == (8, 16, 32, 64, 64)
    images = torch.rand(3, 1, 32, 32)
    assert model.encode(images).shape == (3, model.embed_dim)
    assert model(images).shape == (3, 32)
    assert create_model("contrastive_cnn_tiny", width=0.25).embed_dim == 128
    with pytest.raises(ValueError, match="no parameter"):
        create_model("contrastive_cnn_tiny", depth=3)
    with pytest.raises(ValueError, match="width > 0"):
        ContrastiveCNN(width=0)


def test_fine_tuning_sees_only_encode_and_freezes_the_projection():
    encoder = create_model("contrastive_cnn_tiny")
    classifier = EncoderClassifier(encoder, num_classes=5, multilabel=True)
    assert classifier(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    assert not any(p.requires_grad for p in encoder.projection.parameters())
    assert all(p.requires_grad for p in encoder.stages.parameters())


def test_regional_attention_pools_inside_each_region():
    model = create_model("contrastive_cnn_tiny", regions=2)
    images = torch.rand(2, 1, 32, 32)
    masks = torch.zeros(2, 2, 32, 32, dtype=torch.bool)
    masks[:, 0, :, :16] = True  # left half
    masks[:, 1, :, 16:] = True  # right half
    features = model.feature_map(images)  # [2, 64, 2, 2] at 32 px
    assert features.shape == (2, 64, 2, 2)
    pooled = model.region_features(features, masks)
    # a region covering only the left column of cells pools only those cells
    left = features[:, :, :, 0]
    weights = pooled[:, 0]
    lo, hi = left.amin(2), left.amax(2)
    assert ((weights >= lo - 1e-5) & (weights <= hi + 1e-5)).all()
    z, regional = model(images, masks)
    assert z.shape == (2, 32) and regional.shape == (2, 2, 32)
    assert torch.allclose(z, model(images), atol=1e-5)
    names = {n for n, _ in model.named_parameters()}
    frozen = {id(p) for p in model.decoder_parameters()}
    assert {"region_attention.weight"} <= names
    assert id(model.region_attention.weight) in frozen
    with pytest.raises(ValueError, match="regions=6"):
        create_model("contrastive_cnn_tiny").region_features(features, masks)
