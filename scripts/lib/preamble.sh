# The preamble every bash script under scripts/ sources first, in place of the lines each used to
# copy:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/preamble.sh" || exit 1       (scripts/quickstart.sh, scripts/test.sh)
#   . "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1    (scripts/<group>/*.sh)
# It sets
#   - bash's strict mode (set -euo pipefail);
#   - REPO: the repository root, found from this file's own place (scripts/lib/), so it is right
#     whatever the caller's directory and however deep the sourcing script sits. It does not cd
#     there: the scripts that work from the root say `cd "$REPO"`; the others take paths relative
#     to where they are called (a prefix, an output file);
#   - CARGO_TARGET_DIR's default, $HOME/.cache/forge/target (where HOME is set): a target dir outside the clone
#     survives fresh clones and keeps CI fast; correctness never depends on it (scripts/gpu/build-cuda.sh
#     sets its own, target-cuda);
# and defines bench_executable (below). Takes no arguments and prints nothing.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -z "${CARGO_TARGET_DIR:-}" && -n "${HOME:-}" ]]; then
  export CARGO_TARGET_DIR="$HOME/.cache/forge/target"
fi

# bench_executable PACKAGE BENCH: builds a harness=false bench target in the bench profile and
# prints the path of its executable (the bench scripts under scripts/bench/).
bench_executable() {
  cargo bench -p "$1" --bench "$2" --no-run --locked --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2"
}
