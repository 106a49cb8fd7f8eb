import pytest
import torch
from torch import nn

from medmask.models import (
    EncoderClassifier,
    TimmEncoder,
    create_model,
    load_local_weights,
)


class StubEncoder(nn.Module):
    """An encoder whose forward must never run: the classifier may use encode only."""

    embed_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.scale * images.flatten(1)[:, :3]

    def forward(self, *args, **kwargs):
        raise AssertionError("EncoderClassifier called forward instead of encode")


def test_classifier_uses_encode_only():
    encoder = StubEncoder()
    classifier = EncoderClassifier(encoder, num_classes=2)
    with torch.no_grad():
        classifier.head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
        classifier.head.bias.copy_(torch.tensor([0.5, -1.0]))
    images = torch.arange(8.0).reshape(2, 1, 2, 2)  # features = 2 * [0, 1, 2] and 2 * [4, 5, 6]
    logits = classifier(images)
    assert logits.tolist() == [[0.5, 5.0], [8.5, 21.0]]
    assert encoder.calls == 1 and not classifier.multilabel
    assert EncoderClassifier(StubEncoder(), 5, multilabel=True).multilabel


def test_freeze_encoder_trains_only_the_head():
    encoder = create_model("mae_vit_tiny_64", depth=1, decoder_depth=1)
    classifier = EncoderClassifier(encoder, num_classes=4, freeze_encoder=True)
    classifier.train()
    assert not encoder.training and classifier.head.training
    assert not any(p.requires_grad for p in encoder.parameters())
    classifier(torch.rand(2, 1, 64, 64)).sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert classifier.head[1].weight.grad is not None
    trainable = [n for n, p in classifier.named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]  # MAE's probe: BN without affine


def test_full_finetuning_trains_the_encoder_but_not_the_unused_decoder():
    encoder = create_model("mae_vit_tiny_64", depth=1, decoder_depth=1)
    classifier = EncoderClassifier(encoder, num_classes=4)
    classifier(torch.rand(2, 1, 64, 64)).sum().backward()
    for name, p in encoder.named_parameters():
        is_decoder = name.startswith("decoder") or name == "mask_token"
        assert p.requires_grad != is_decoder, name
        if p.requires_grad:
            assert p.grad is not None, name  # DDP needs every trainable parameter used
    unet_classifier = EncoderClassifier(create_model("unet_tiny"), num_classes=2)
    unet_classifier(torch.rand(2, 1, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in unet_classifier.parameters() if p.requires_grad)


def test_non_encoders_are_rejected():
    with pytest.raises(ValueError, match="not an encoder"):
        EncoderClassifier(nn.Linear(3, 3), num_classes=2)


def test_resnet50_baseline_is_grayscale_with_2048_features():
    encoder = create_model("resnet50")
    assert isinstance(encoder, TimmEncoder) and encoder.embed_dim == 2048
    assert encoder.backbone.conv1.in_channels == 1
    classifier = EncoderClassifier(encoder, num_classes=4).eval()
    assert classifier(torch.rand(2, 1, 64, 64)).shape == (2, 4)


def test_load_local_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = create_model("unet_tiny")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(1)
    target = create_model("unet_tiny")
    report = load_local_weights(target, path)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_load_local_weights_adapts_rgb_stems_and_reports_heads(tmp_path):
    import timm

    rgb = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1000)
    path = tmp_path / "imagenet_resnet18.pth"
    torch.save(rgb.state_dict(), path)
    encoder = TimmEncoder("resnet18", in_chans=1)
    report = load_local_weights(encoder.backbone, path)
    assert report.adapted == ["conv1.weight"]
    assert report.unexpected == ["fc.weight", "fc.bias"]
    assert report.missing == []
    torch.testing.assert_close(encoder.backbone.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert "loaded" in report.summary()


def test_load_local_weights_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ValueError, match="nope.pth.*does not exist"):
        load_local_weights(create_model("unet_tiny"), missing)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(ValueError, match="unrelated.pth"):
        load_local_weights(create_model("unet_tiny"), unrelated)
