# Sourced by the bench scripts. bench_executable PACKAGE BENCH: builds a harness=false bench
# target in the bench profile and prints the path of its executable.
bench_executable() {
  cargo bench -p "$1" --bench "$2" --no-run --locked --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2"
}
