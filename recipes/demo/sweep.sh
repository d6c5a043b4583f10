#!/usr/bin/env bash
# The demo's lever sweep (README, "Levers"): one training run per line of a sweep file, each
# evaluated on dev (the set settings are chosen on), then one `snnasr report` over them all.
#
#   OMP_NUM_THREADS=1 ./sweep.sh sweep_levers.txt    # from recipes/demo, after `make .stamps/features`
#
# (one torch thread: on a shared or busy 2-core machine two threads run 5-20x slower).
#
# A sweep-file line is `<run> <config> [key=value ...]`: exp/<run> trained with
# conf/train_<config>.yaml (architecture = <config> up to its first "_") plus the overrides;
# `#` starts a comment.  A run whose exp/<run>/eval_dev/results.json exists is skipped, so an
# interrupted sweep continues where it stopped.  Wall seconds of train + eval per run are
# appended to exp/sweep_times.tsv, and the report is followed by each run's training seconds
# (summed from its metrics.jsonl; on a shared machine compare only runs made under one load).
# SNNASR=/path/to/snnasr if it is not on PATH; EVAL_SET=test scores the chosen runs on test.
set -euo pipefail
set -f  # overrides such as train.curriculum=100*1 are words, not file patterns
SNNASR=${SNNASR:-snnasr}
EVAL_SET=${EVAL_SET:-dev}
[ $# -ge 1 ] || { echo "usage: $0 SWEEP_FILE [OUT_DIR]" >&2; exit 2; }
sweep=$1
[ -f "$sweep" ] || { echo "sweep.sh: $sweep: no such sweep file; give one such as sweep_levers.txt" >&2; exit 2; }
[ -f .stamps/features ] || { echo "sweep.sh: no features in $PWD; run make .stamps/features first" >&2; exit 2; }
out=${2:-exp/$(basename "${sweep%.*}")}
runs=()
while read -r run conf overrides; do
  [ -z "${run:-}" ] || [ "${run:0:1}" = "#" ] && continue
  runs+=("exp/$run")
  [ -f "exp/$run/eval_$EVAL_SET/results.json" ] && continue
  start=$(date +%s)
  resume=""
  compgen -G "exp/$run/checkpoints/*.pt" > /dev/null && resume="--resume"
  # shellcheck disable=SC2086  # the overrides are separate words
  "$SNNASR" train --arch "${conf%%_*}" --exp "$run" --config "conf/train_$conf.yaml" $resume $overrides
  "$SNNASR" eval "exp/$run" --set "$EVAL_SET" --report-ops
  printf '%s\t%s\t%s\t%s\n' "$run" "$EVAL_SET" "$(( $(date +%s) - start ))" "$(cut -d' ' -f1 /proc/loadavg)" >> exp/sweep_times.tsv
done < "$sweep"
"$SNNASR" report --out "$out" "${runs[@]}"
cat "$out/report.md"
echo "training seconds per run (metrics.jsonl):"
for run in "${runs[@]}"; do
  python3 -c 'import json, sys; r = sys.argv[1]; s = sum(json.loads(l).get("seconds", 0) for l in open(r + "/metrics.jsonl")); print(f"{r:<28} {s:7.0f}")' "$run"
done
