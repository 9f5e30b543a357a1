#!/usr/bin/env bash
# CPU training-step benchmark, forge vs PyTorch + transformers, side by side in one run:
# forward + backward of a ~20M Qwen3 (vocab 8192, hidden 512, 4 layers, 8/4 heads, batch 2×256),
# with and without activation recomputation, plus a long-sequence run (2×1024) where activations
# dominate memory. Runs are interleaved (forge, torch, forge, torch ...) so background load hits
# both alike. Writes benches/results/cpu-train-step.md.
#
# Usage: scripts/bench/bench-cpu.sh [STEPS]    (default 10 measured steps after 2 warm-up steps)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
STEPS="${1:-10}"

scripts/setup/setup-python.sh
BENCH="$(bench_executable forge-model train_step)"

RESULTS="$(mktemp)"
run() { echo "+ $*" >&2; "$@" | tail -1 | tee -a "$RESULTS"; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for seq in 256 1024; do
  steps="$STEPS"; [[ "$seq" == 1024 ]] && steps=3
  run "$BENCH" --seq "$seq" --steps "$steps"
  run .venv/bin/python scripts/bench/bench_torch.py --seq "$seq" --steps "$steps"
  run "$BENCH" --seq "$seq" --steps "$steps" --recompute
  run .venv/bin/python scripts/bench/bench_torch.py --seq "$seq" --steps "$steps" --gradient-checkpointing
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/cpu-train-step.md <<'PY'
import json, sys, platform
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print("# CPU training step: forge vs PyTorch + transformers\n")
print(provenance(sys.argv[2], sys.argv[3]))
torch = next((r for r in rows if r['impl'] == 'pytorch'), {})
print(f"- Reference: torch {torch.get('torch')}, transformers {torch.get('transformers')} (SDPA attention, f32)")
print("- Step = forward + backward (no optimizer) of a 20,976,640-parameter Qwen3, f32, all cores;")
print("  median of the measured steps. Peak RSS = process high-water mark (PyTorch's includes ~710 MiB of")
print("  imported libraries, reported separately as the RSS before the model was built). Peak live heap")
print("  (forge only) = high-water mark of the bytes allocated and not yet freed; the rest of forge's peak")
print("  RSS is memory malloc keeps resident after frees. Where the memory goes: benches/results/recompute-memory.md")
print("- Reproduce: `scripts/bench/bench-cpu.sh`\n")
print("| impl | tokens/step | recompute | step s (median) | tokens/s | peak RSS MiB | RSS before model MiB | peak − before MiB | peak live heap MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    rec = r.get("recompute", r.get("gradient_checkpointing"))
    live = f"{r['peak_live_heap_mib']:.0f}" if "peak_live_heap_mib" in r else "—"
    print(f"| {r['impl']} | {r['tokens_per_step']} | {'yes' if rec else 'no'} | {r['step_s_median']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['rss_before_model_mib']:.0f} | {r['peak_rss_mib'] - r['rss_before_model_mib']:.0f} | {live} |")
def find(impl, tokens, rec):
    for r in rows:
        if r["impl"] == impl and r["tokens_per_step"] == tokens and bool(r.get("recompute", r.get("gradient_checkpointing"))) == rec:
            return r
print()
for tokens in (512, 2048):
    f, t = find("forge", tokens, False), find("pytorch", tokens, False)
    fr, tr = find("forge", tokens, True), find("pytorch", tokens, True)
    if f and t:
        print(f"- {tokens} tokens/step: forge/PyTorch throughput = **{f['tokens_per_s'] / t['tokens_per_s']:.2f}×** (target ≥ 0.8×);"
              f" forge peak memory with/without recompute = **{fr['peak_rss_mib'] / f['peak_rss_mib']:.2f}** (target ≤ 0.5)"
              f" (peak live heap: {fr['peak_live_heap_mib'] / f['peak_live_heap_mib']:.2f})"
              f"; PyTorch's own ratio {(tr['peak_rss_mib'] - tr['rss_before_model_mib']) / (t['peak_rss_mib'] - t['rss_before_model_mib']):.2f} (excluding imports)")
PY
cat benches/results/cpu-train-step.md
