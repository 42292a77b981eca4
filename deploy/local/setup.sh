#!/usr/bin/env bash
# `make image-test`'s set-up on a Debian machine without a Docker engine: podman (with runc
# and cgroupfs, deploy/local/containers.conf) and the base images the Containerfiles name.
# Each base image is pulled; where no registry can be reached, a stand-in is built from
# Debian's packages with mmdebstrap and tagged with the same name, so that the
# Containerfiles are built exactly as written.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=$here/containers.conf

if [ "$(id -u)" != 0 ]; then
  echo "error: make image-test runs podman and mmdebstrap as root (sudo make image-test)" >&2
  exit 1
fi
for tool in podman runc mmdebstrap slirp4netns; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing podman, runc, mmdebstrap and slirp4netns from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap slirp4netns uidmap >&2
    break
  fi
done

PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
NODE_IMAGE=docker.io/library/node:20-bookworm-slim
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# As Debian's slim images: no manuals, documentation (but the copyrights) or translations.
SLIM=(
  --variant=minbase
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
)

# base IMAGE CMD [mmdebstrap options...]: IMAGE if present or pullable, else built.
base() {
  local image=$1 cmd=$2
  shift 2
  podman image exists "$image" && return
  if podman pull -q "$image" >/dev/null 2>&1; then
    return
  fi
  echo "no registry reachable: building a stand-in for $image from Debian's packages" >&2
  local tarball
  tarball=$(mktemp --suffix=.tar)
  mmdebstrap --quiet "${SLIM[@]}" "$@" bookworm "$tarball" "${MIRRORS[@]}" >&2
  podman import --quiet --change "CMD [\"$cmd\"]" "$tarball" "$image" >/dev/null
  rm -f "$tarball"
}

# Debian 12's Python (3.11), where the official image has its own build in /usr/local.
base "$PYTHON_IMAGE" python3 --include=python3,python3-venv,ca-certificates

# This machine's Node.js 20 and npm in /usr/local, where the official image has them.
if ! podman image exists "$NODE_IMAGE"; then
  node_bin=$(command -v node || true)
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm || echo /nonexistent)")")")
  if [ -z "$node_bin" ] || [[ "$("$node_bin" --version)" != v20.* ]] || [ ! -f "$npm_dir/package.json" ] \
    || [ ! -f "$(dirname "$node_bin")/../include/node/node.h" ]; then
    echo "error: $NODE_IMAGE cannot be pulled, and building its stand-in needs Node.js 20, its headers and npm here" >&2
    exit 1
  fi
  base "$NODE_IMAGE" node --include=ca-certificates,libstdc++6 \
    --customize-hook="copy-in $node_bin /usr/local/bin" \
    --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules\" \"\$1/usr/local/include\"" \
    --customize-hook="copy-in $(dirname "$node_bin")/../include/node /usr/local/include" \
    --customize-hook="copy-in $npm_dir /usr/local/lib/node_modules" \
    --customize-hook="ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\"" \
    --customize-hook="ln -s ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\""
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'python|node' >&2

# compose.yaml's PostgreSQL (POSTGRES_IMAGE) where the official image cannot be pulled: a
# stand-in from Debian's PostgreSQL 15 with the part of the official entrypoint it uses.
POSTGRES_STANDIN=localhost/postgres-standin:15
if ! podman image exists "$POSTGRES_STANDIN"; then
  echo "building $POSTGRES_STANDIN from Debian's packages" >&2
  tarball=$(mktemp --suffix=.tar)
  mmdebstrap --quiet "${SLIM[@]}" --include=postgresql-15 \
    --essential-hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.conf"' \
    --customize-hook="copy-in $here/postgres-entrypoint.sh /usr/local/bin" \
    bookworm "$tarball" "${MIRRORS[@]}" >&2
  podman import --quiet --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' \
    --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'STOPSIGNAL SIGINT' "$tarball" "$POSTGRES_STANDIN" >/dev/null
  rm -f "$tarball"
fi
