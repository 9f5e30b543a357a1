#!/usr/bin/env bash
# Build the Docker images of the bundled SWE-bench-style tasks (tasks/), offline and without a
# registry or Dockerfile: each project's git history is built on the host (git, fixed names and
# dates, so commit hashes match tasks/bundled.jsonl), uploaded into a container of the base image
# (forge/base:py3, scripts/setup/build-base-image.sh) and `docker commit`ted as
# forge-swe/<project>:<head[:12]>. Idempotent: existing images are kept. The forge-swe tests
# build missing images themselves; this script only does it up front.
#
# Usage: scripts/setup/build-task-images.sh            (needs git, docker, the base image, cargo)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
command -v git >/dev/null || { echo "[build-task-images] ERROR: git not found" >&2; exit 1; }
docker image inspect "${FORGE_SANDBOX_IMAGE:-forge/base:py3}" >/dev/null 2>&1 \
  || { echo "[build-task-images] ERROR: base image missing; run scripts/setup/build-base-image.sh first" >&2; exit 1; }
exec cargo run -q --locked -p forge-swe --bin forge-swe-tasks -- build "$REPO/tasks"
