#!/usr/bin/env bash
# Create (once) and print the path of the project's virtual environment.
# The venv lives outside the clone, keyed by a hash of the dependency files, so repeated
# runs reuse it while a fresh machine (or a changed pyproject.toml) builds it from scratch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
key=$(cat "$root/pyproject.toml" "$root/.ci/venv.sh" | sha256sum | cut -c1-16)
cache=${MEDMASK_VENV_CACHE:-$HOME/.cache/medmask}
venv="$cache/venv-$key"
mkdir -p "$cache"
# One builder at a time: a second clone (or make target) waits here, then finds it complete.
exec 9>"$cache/.lock-$key"
flock 9
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "medmask: building virtual environment $venv (a few minutes on a fresh machine)" >&2
  rm -rf "$venv"
  python3.11 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  # torch first, exact pins: taken from the machine's local files where they lie there.
  "$venv/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" >&2
  # Only the dependencies are installed, never the project: one cached venv serves every clone,
  # and each clone puts its own sources on the path with PYTHONPATH (the Makefile exports it),
  # which the raylet and every Ray worker inherit.
  "$venv/bin/python" - "$root/pyproject.toml" > "$cache/requirements-$key.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
  "$venv/bin/python" -m pip install --quiet -r "$cache/requirements-$key.txt" >&2
  touch "$venv/.complete"
fi
flock -u 9
echo "$venv"
