import json

import pytest
import torch

from medmask.train._checkpoint import StageCache, config_hash, load_checkpoint, save_checkpoint


def test_config_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "ck", {"model": model.state_dict(), "epoch": 4, "meta": {"x": "y"}})
    state = load_checkpoint(tmp_path / "ck")
    assert state["epoch"] == 4 and state["meta"] == {"x": "y"}
    assert torch.equal(state["model"]["weight"], model.weight.detach())


def test_stage_cache_store_and_lookup(tmp_path):
    cache = StageCache(tmp_path / "cache", "pretrain")
    cfg = {"model": "mae_vit_tiny_64", "masking": "rgmim", "ratio": 0.75}
    assert cache.lookup(cfg) is None
    save_checkpoint(tmp_path / "run", {"epoch": 1})
    entry = cache.store(cfg, tmp_path / "run")
    assert cache.lookup(cfg) == entry
    assert load_checkpoint(entry)["epoch"] == 1
    assert cache.lookup({**cfg, "ratio": 0.5}) is None
    assert json.loads((entry / "config.json").read_text()) == cfg  # the key beside the result
    assert entry.parent == tmp_path / "cache" / "pretrain"


def test_a_failed_build_leaves_no_entry(tmp_path):
    cache = StageCache(tmp_path, "policy")
    key = {"policy": 1}
    with pytest.raises(RuntimeError), cache.build(key) as folder:
        (folder / "policy.pt").write_text("half")
        raise RuntimeError("killed")
    assert cache.lookup(key) is None and not list(cache.root.iterdir())
    with cache.build(key) as folder:
        (folder / "policy.pt").write_text("whole")
    assert (cache.lookup(key) / "policy.pt").read_text() == "whole"


def test_the_code_version_names_the_package_and_a_digest():
    from medmask import __version__
    from medmask.train import code_version

    version = code_version()
    assert version.startswith(f"{__version__}+") and len(version.split("+")[1]) == 12
