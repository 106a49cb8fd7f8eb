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


def test_the_code_version_changes_with_the_code_that_defines_a_pretraining(tmp_path):
    import shutil
    from pathlib import Path

    import medmask
    from medmask.train import code_version
    from medmask.train._checkpoint import code_digest

    package = tmp_path / "medmask"
    shutil.copytree(Path(medmask.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert code_version() == f"{medmask.__version__}+{code_digest(package)}"
    before = code_digest(package)
    with (package / "data" / "phantom.py").open("a") as handle:
        handle.write("# a changed phantom\n")
    changed = code_digest(package)
    assert changed != before
    with (package / "eval" / "figures.py").open("a") as handle:  # not part of a pretraining
        handle.write("# a changed figure\n")
    assert code_digest(package) == changed
    with (package / "masking" / "_grid.py").open("a") as handle:
        handle.write("# a changed grid\n")
    assert code_digest(package) != changed
