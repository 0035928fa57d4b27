#!/usr/bin/env bash
# Make the Debian bookworm base image without Docker Hub: debootstrap a minbase root file
# system from the Debian mirror apt already uses, cache it as a tarball, `docker import` it.
# Prints the image name (for --build-arg BASE_IMAGE=...). Needs root and DOCKER_HOST.
#   COSMOTRAIN_DEBIAN_MIRROR  default: the first bookworm mirror in /etc/apt/sources*
#   COSMOTRAIN_BASE_IMAGE     default: cosmotrain-base:bookworm
set -euo pipefail

cache=${COSMOTRAIN_ENV_CACHE:-$HOME/.cache/cosmotrain}/base
image=${COSMOTRAIN_BASE_IMAGE:-cosmotrain-base:bookworm}
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}

apt_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
          /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]*/debian/?( |$)' | head -n 1 | tr -d ' ')
  echo "${uri:-http://deb.debian.org/debian}"
}

if "$docker" image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi

mirror=${COSMOTRAIN_DEBIAN_MIRROR:-$(apt_mirror)}
tarball=$cache/bookworm-minbase-$(echo "$mirror" | sha256sum | cut -c1-8).tar
if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "base.sh: debootstrap bookworm from $mirror (~30 s)" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
"$docker" import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
echo "$image"
