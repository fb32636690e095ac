#!/usr/bin/env bash
# Install everything kubling needs on Debian 12 (idempotent), then put `kubling` on PATH.
#   ./install.sh            install only
#   ./install.sh --test     also the test tools (pytest, the official client, mypy, ruff)
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v gcc >/dev/null || need_apt+=(gcc python3-dev)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
if ! command -v kubectl >/dev/null; then
  # Debian ships an old kubectl; a 1.27-1.33 kubectl on PATH is preferred when present.
  need_apt+=(kubernetes-client)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "install: creating virtual environment in $here/.venv"
  python3 -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
echo "install: pip install -e .${extra}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"

ln -sf "$here/.venv/bin/kubling" /usr/local/bin/kubling
echo "install: done — kubling is $(command -v kubling)"
