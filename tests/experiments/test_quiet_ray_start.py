"""A local Ray start keeps its INFO notices ("Started a local Ray instance", Ray 2.60's
token-auth notice) off the console unless ``verbose=true`` (a real Ray in a fresh interpreter:
Ray sets up its logging handlers at import)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTICES = ("Started a local Ray instance", "Token authentication is enabled")


def start_local_ray(verbose: bool, tmp_path: Path) -> str:
    code = ("import sys; sys.path.insert(0, 'experiments'); from omegaconf import OmegaConf; "
            "import _common, ray; "
            f"_common.init_ray(OmegaConf.create({{'num_cpus': 1}}), verbose={verbose}); "
            "print(ray.get(ray.remote(lambda: 'ran').remote())); ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["MEDMASK_RLLIB_LOG"] = str(tmp_path / "rllib.log")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ran" in result.stdout
    return result.stdout + result.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_a_quiet_local_start_prints_no_ray_notices(verbose, tmp_path):
    console = start_local_ray(verbose, tmp_path)
    shown = [notice for notice in NOTICES if notice in console]
    if verbose:  # the notices exist: the quiet case below is not vacuous
        assert "Started a local Ray instance" in console, console
    else:
        assert not shown, console
