"""Every entry point runs as ``python experiments/x.py`` from anywhere, with no PYTHONPATH:
the README's commands on a fresh clone (the scripts put the clone's sources on the path
before they import medmask)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=lambda p: p.stem)
def test_entry_point_imports_without_pythonpath(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script), "--cfg", "job"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{script.name}:\n{done.stderr[-2000:]}"
    assert "seed" in done.stdout  # Hydra printed the composed config
