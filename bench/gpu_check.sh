#!/usr/bin/env bash
# On a CUDA machine, in under 5 minutes: the conformance tests, the book's code against gptlab's on
# the GPU (bench/gpu_conformance.py: logits, decoding, training losses, training tokens/s), the
# decoding benchmark on the GPU (bench/bench_generate.py), then every ratio to the book in one table.
# Without a CUDA device it says so and exits 0.
#
#   bench/gpu_check.sh               # from anywhere; uses .venv/bin/python of this checkout (or $PY)
#   bench/gpu_check.sh --dry-run     # print the steps, run nothing
#   bench/gpu_check.sh --cpu-smoke   # the same steps on the CPU at smoke sizes (checks the script)
#
# Outputs (CSVs with .meta.json sidecars, one log per step) go to $OUT/gpu_check when OUT is set,
# else to results/bench/gpu_check. Exit status: 0 when every step passed or there is no CUDA
# device; 1 when a step failed (every step runs first); 2 for a usage error.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PY:-.venv/bin/python}
DEST=${OUT:-results/bench}/gpu_check
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
mode=gpu
case "${1:-}" in
  "") ;;
  --dry-run) mode=dry ;;
  --cpu-smoke) mode=cpu ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "gpu_check.sh: unknown option '$1' (use --dry-run, --cpu-smoke or --help)" >&2; exit 2 ;;
esac
if [ ! -x "$PY" ]; then
  echo "gpu_check.sh: no Python at $PY; run 'make install' or set PY" >&2
  exit 2
fi

if [ "$mode" = gpu ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA device: skipping the GPU part (torch sees no GPU here; --cpu-smoke runs the same steps on the CPU)"
  exit 0
fi

if [ "$mode" = cpu ]; then
  device=cpu
  sizes=(--smoke)
  gen_sizes=(--smoke)
else
  device=cuda
  sizes=()
  gen_sizes=(--tokens 64 256 --repeats 3)
fi

# name, then the command; each step's output goes to the console and to $DEST/<name>.log.
STEPS=()
step() { STEPS+=("$1"); eval "CMD_$1=(\"\${@:2}\")"; }
step device "$PY" -c 'import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda)
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i), "bf16" if torch.cuda.is_bf16_supported() else "no bf16")'
if [ "$mode" != cpu ]; then
  # The book-conformance tests run on the CPU wherever they run; here they check this machine's torch.
  step tests "$PY" -m pytest -q -p no:cacheprovider tests/test_conformance.py tests/test_fast.py
fi
step conformance "$PY" bench/gpu_conformance.py --device "$device" "${sizes[@]}" --out "$DEST/gpu_conformance.csv"
step generate "$PY" bench/bench_generate.py --device "$device" "${gen_sizes[@]}" --out "$DEST/generate.csv"

if [ "$mode" = dry ]; then
  for name in "${STEPS[@]}"; do
    eval "cmd=(\"\${CMD_$name[@]}\")"
    printf '%s:' "$name"; printf ' %q' "${cmd[@]}"; printf '\n'
  done
  echo "outputs: $DEST"
  if ! "$PY" bench/bench_train.py --help 2>/dev/null | grep -q -- '--device'; then
    echo "note: bench/bench_train.py has no --device option: training is timed on the GPU by gpu_conformance.py"
  fi
  exit 0
fi

mkdir -p "$DEST"
failed=()
start=$SECONDS
for name in "${STEPS[@]}"; do
  eval "cmd=(\"\${CMD_$name[@]}\")"
  echo "== $name ($((SECONDS - start)) s in)"
  if ! timeout "$STEP_TIMEOUT" "${cmd[@]}" 2>&1 | tee "$DEST/$name.log"; then
    failed+=("$name")
    echo "== $name FAILED (log: $DEST/$name.log)"
  fi
done

if "$PY" bench/bench_train.py --help 2>/dev/null | grep -q -- '--device'; then
  echo "== train ($((SECONDS - start)) s in)"
  if ! timeout "$STEP_TIMEOUT" "$PY" bench/bench_train.py --device "$device" "${sizes[@]}" --rounds 1 \
    --out "$DEST/train.csv" 2>&1 | tee "$DEST/train.log"; then
    failed+=(train)
  fi
else
  echo "note: bench/bench_train.py has no --device option: training is timed on the GPU by gpu_conformance.py"
fi

echo
echo "== ratios to the book on $device ($((SECONDS - start)) s in all)"
"$PY" - "$DEST" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

dest = Path(sys.argv[1])
found = False
for name, label, ratio in (
    ("gpu_conformance.csv", "train tokens/s", "ratio_vs_book"),
    ("train.csv", "train", "ratio_vs_book"),
    ("generate.csv", "decode tokens/s", "speedup_vs_book"),
):
    path = dest / name
    if not path.is_file():
        continue
    df = pd.read_csv(path)
    if ratio not in df.columns:
        continue
    for row in df.to_dict("records"):
        what = row.get("variant") or row.get("method")
        extra = f", {row['new_tokens']} new tokens" if "new_tokens" in row else ""
        extra += f", metric {row['metric']}" if "metric" in row else ""
        if pd.notna(row[ratio]):
            print(f"{label:<16} {what:<24} x book {row[ratio]:6.2f}{extra}")
            found = True
if not found:
    print("no ratios were written")
EOF

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]} (logs in $DEST)"
  exit 1
fi
echo "all steps passed; outputs in $DEST"
