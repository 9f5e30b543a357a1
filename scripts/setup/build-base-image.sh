#!/usr/bin/env bash
# Build the sandbox base image WITHOUT a container registry:
#   debootstrap a minimal Debian (variant minbase, same suite as this machine), add python3,
#   pytest, git, patch, strip caches/docs, then `docker import` the root filesystem and tag it.
#
# Usage: scripts/setup/build-base-image.sh [TAG]        (default TAG: forge/base:py3, or $FORGE_BASE_IMAGE)
#   FORCE=1             rebuild even if the tag exists
#   FORGE_DEBIAN_MIRROR override the mirror (default: read from this machine's apt sources)
#   FORGE_DEBIAN_SUITE  override the suite  (default: this machine's VERSION_CODENAME)
#
# Idempotent: exits at once when the tag already exists. Needs root (debootstrap) and docker.
# Size (measured, bookworm, amd64): 190,726,037 bytes (182 MiB) uncompressed, one layer; a full
# build takes ~66 s here. See benches/results/sandbox.md.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1

TAG="${1:-${FORGE_BASE_IMAGE:-forge/base:py3}}"
PACKAGES="python3,python3-pytest,git,patch,bash,coreutils,procps"

log() { echo "[build-base-image] $*" >&2; }
die() { echo "[build-base-image] ERROR: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker CLI not found; install docker and start the Docker Engine"
docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine (is dockerd running? is DOCKER_HOST right?)"

if [[ "${FORCE:-0}" != "1" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "image $TAG already exists ($(docker image inspect -f '{{.Size}}' "$TAG") bytes); nothing to do (FORCE=1 to rebuild)"
  exit 0
fi

[[ "$(id -u)" == "0" ]] || die "debootstrap needs root; run as root"

# --- suite: the host's own -------------------------------------------------------------------
SUITE="${FORGE_DEBIAN_SUITE:-}"
if [[ -z "$SUITE" ]]; then
  # shellcheck disable=SC1091
  SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
fi
[[ -n "$SUITE" ]] || die "cannot tell the Debian suite (no VERSION_CODENAME in /etc/os-release); set FORGE_DEBIAN_SUITE"

# --- mirror: from this machine's apt sources (deb822 .sources and one-line .list) --------------
find_mirror() {
  local f
  # deb822: a stanza whose Suites contains exactly $SUITE; take its first URI.
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uris != "" && hit) { split(uris, u, " "); print u[1]; exit } uris=""; hit=0 }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, ""); uris=$0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); n=split($0, s, " "); for (i=1;i<=n;i++) if (s[i]==suite) hit=1 }
      END { flush() }' "$f"
  done
  # one-line format: deb [opts] URI SUITE COMPONENTS...
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    awk -v suite="$SUITE" '
      $1=="deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1)==suite) { print $i; exit } }' "$f"
  done
}
MIRROR="${FORGE_DEBIAN_MIRROR:-$(find_mirror | head -n1)}"
[[ -n "$MIRROR" ]] || die "no apt source for suite '$SUITE' in /etc/apt/sources.list{,.d}; set FORGE_DEBIAN_MIRROR"
log "suite=$SUITE mirror=$MIRROR tag=$TAG"

# --- debootstrap ------------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap via apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

WORK="$(mktemp -d /tmp/forge-rootfs.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"

KEYRING_ARGS=()
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && KEYRING_ARGS=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

log "debootstrap (a few minutes)..."
debootstrap --variant=minbase "${KEYRING_ARGS[@]}" --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# --- shrink -----------------------------------------------------------------------------------
chroot "$ROOT" apt-get clean >/dev/null 2>&1 || true
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/cache/debconf/*-old \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
       "$ROOT"/usr/share/lintian "$ROOT"/usr/share/linda "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* \
       "$ROOT"/tmp/* "$ROOT"/var/tmp/*
find "$ROOT"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
find "$ROOT"/usr/lib/python3* -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null || true
# git's identity for commits made inside sandboxes
cat >"$ROOT/etc/gitconfig" <<'GIT'
[user]
	name = forge
	email = forge@localhost
[safe]
	directory = *
GIT

# --- import -----------------------------------------------------------------------------------
log "docker import -> $TAG"
tar --numeric-owner -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'WORKDIR /' \
  --change 'CMD ["/bin/bash"]' \
  - "$TAG" >/dev/null

SIZE=$(docker image inspect -f '{{.Size}}' "$TAG")
log "built $TAG: $SIZE bytes ($((SIZE / 1024 / 1024)) MiB)"
docker run --rm --network none "$TAG" sh -c 'python3 --version && python3 -m pytest --version && git --version && patch --version | head -n1' >&2
