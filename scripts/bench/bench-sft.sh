#!/usr/bin/env bash
# SFT step (forward, backward, clipping, AdamW) on CPU: forge vs PyTorch + transformers, side by
# side in one run, for the tiny config and a ~50M-parameter Qwen3 (batch 2×512).
# Writes benches/results/sft-cpu.md.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
scripts/setup/setup-python.sh
BENCH="$(bench_executable forge-train sft_step)"
RESULTS="$(mktemp)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for model in tiny 50m; do
  "$BENCH" --model "$model" | tail -1 | tee -a "$RESULTS"
  .venv/bin/python scripts/bench/bench_sft_torch.py --model "$model" | tail -1 | tee -a "$RESULTS"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/sft-cpu.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("# SFT step on CPU: forge vs PyTorch + transformers\n")
print(provenance(sys.argv[2], sys.argv[3]))
print("- Step = forward + backward + clip_grad_norm(1.0) + AdamW (fp32), batch 2×512 random tokens, f32; median of 10 steps.")
print("- Reproduce: `scripts/bench/bench-sft.sh`\n")
print("| model | impl | params | tokens/s | step s | peak RSS MiB | RSS before model MiB |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['impl']} | {r['params']:,} | {r['tokens_per_s']:.0f} | {r['step_s_median']:.3f} | {r['peak_rss_mib']:.0f} | {r['rss_before_model_mib']:.0f} |")
print()
for m in ("tiny", "50m"):
    f = next(r for r in rows if r["impl"] == "forge" and r["model"] == m)
    t = next(r for r in rows if r["impl"] == "pytorch" and r["model"] == m)
    print(f"- {m}: forge/PyTorch tokens/s = **{f['tokens_per_s'] / t['tokens_per_s']:.2f}×** (target ≥ 0.8×)")
PY
cat benches/results/sft-cpu.md
