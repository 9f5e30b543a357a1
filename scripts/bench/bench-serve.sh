#!/usr/bin/env bash
# CPU serving benchmark: `forge serve` under 1, 8 and 32 concurrent clients beside transformers'
# `generate` at batch 1, 8 and 32, on the same random ~13M Qwen3 (vocab 512 with the bundled tiny
# tokenizer, hidden 512, 4 layers, f32), in one run. Each request: a 64-token prompt (token ids,
# /v1/completions) continued by exactly 64 greedy tokens (ignore_eos); no two prompts share a
# prefix. Clients send their requests one after another (1 client: 8 requests, 8: 4 each, 32: 2
# each). transformers: one `generate` call over a batch of as many prompts (median of 3 runs after
# a warm-up). Sides are interleaved per concurrency so background load hits both alike.
# Writes benches/results/serve.md. Takes about 2 minutes after the release build.
#
# Usage: scripts/bench/bench-serve.sh    (FORGE_BIN=path: measure that forge binary instead of building one)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"

scripts/setup/setup-python.sh
if [[ -z "${FORGE_BIN:-}" ]]; then
  cargo build --release -p forge-cli --locked
fi
FORGE="${FORGE_BIN:-$CARGO_TARGET_DIR/release/forge}"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
.venv/bin/python scripts/bench/bench_serve.py --make-model "$WORK/model"

"$FORGE" serve --model "$WORK/model" --served-model-name bench --port 0 --max-concurrency 32 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 600); do
  URL="$(grep -o 'http://[^ ]*' "$WORK/serve.out" || true)"
  [[ -n "$URL" ]] && break
  kill -0 "$SERVER_PID" || { cat "$WORK/serve.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$URL" ]] || { echo "forge serve printed no URL" >&2; exit 1; }
echo "forge serve at $URL" >&2

RESULTS="$WORK/results.jsonl"
run() { echo "+ $*" >&2; "$@" | tail -1 | tee -a "$RESULTS"; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for clients in 1 8 32; do
  requests=$(( clients == 1 ? 8 : (clients == 8 ? 4 : 2) ))
  run .venv/bin/python scripts/bench/bench_serve.py --url "$URL" --model bench --clients "$clients" --requests "$requests"
  run .venv/bin/python scripts/bench/bench_decode_torch.py --model "$WORK/model" --batch "$clients" --prompt-len 64 --new-tokens 64
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/serve.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ref = next((r for r in rows if r["impl"] == "transformers"), {})
print("# CPU serving: `forge serve` vs transformers `generate`\n")
print(provenance(sys.argv[2], sys.argv[3]))
print(f"- Reference: torch {ref.get('torch')}, transformers {ref.get('transformers')}: `generate`, greedy, f32, SDPA, DynamicCache, {ref.get('threads')} threads")
print("- Model: random Qwen3 (vocab 512 with the bundled tiny tokenizer, hidden 512, intermediate 1536,")
print("  4 layers, 8 heads / 4 KV heads, head_dim 64, untied, f32), one safetensors file for both sides.")
print("- forge: `forge serve --max-concurrency 32` (release build); N client threads (Python, urllib, on")
print("  the same 2 cores) each POST /v1/completions one after another: a 64-token prompt (token ids,")
print("  no two sharing a prefix) + exactly 64 greedy new tokens (`ignore_eos`). Time = wall time of all")
print("  requests; requests/s and generated tokens/s over it; latency = one request's, median.")
print("- transformers: one `generate` over a batch of N such prompts (the same prompts as requests")
print("  0..N-1), exactly 64 new tokens; median of 3 runs after a warm-up; requests/s = N / time.")
print("- Reproduce: `scripts/bench/bench-serve.sh`\n")
print("| concurrent clients / batch | forge requests | forge s | forge requests/s | forge tokens/s | forge median latency s | transformers s | transformers requests/s | transformers tokens/s | forge / transformers tokens/s | request 0: same greedy tokens |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in sorted({r.get("clients", r.get("batch")) for r in rows}):
    f = next(r for r in rows if r["impl"] == "forge serve" and r["clients"] == n)
    t = next(r for r in rows if r["impl"] == "transformers" and r["batch"] == n)
    same = "yes" if f["first_sequence_tokens"] == t["first_sequence_tokens"] else "no"
    t_rps = n / t["generate_s_median"]
    print(f"| {n} | {f['requests']} | {f['wall_s']:.2f} | {f['requests_per_s']:.2f} | {f['tokens_per_s']:.1f} | {f['latency_s_median']:.3f} | {t['generate_s_median']:.3f} | {t_rps:.2f} | {t['tokens_per_s']:.1f} | **{f['tokens_per_s'] / t['tokens_per_s']:.2f}×** | {same} |")
PY
cat benches/results/serve.md
