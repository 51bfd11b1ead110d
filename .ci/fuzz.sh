#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time (FUZZ_SECONDS each, default 30) from
# the seed corpus in fuzz/corpus/<target>/, and fails on any crash, overflow, failed
# assertion or hang, printing the path of the input that caused it (rerun it with
# `cargo fuzz run <target> <path>`).
#
# cargo-fuzz wants nightly flags (-Z, sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. No sanitizer (`-s none`): Berth forbids unsafe code, so
# AddressSanitizer has little to find, and without it the one build is much faster and
# each target runs more inputs. Overflow checks and debug assertions stay on.
#
# What the fuzzer generates goes to a scratch folder, not to the repository's corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FLAGS=(--sanitizer none)
started=$(date +%s)

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
# The lock file is committed: refuse to run with one that would change.
cargo fetch --locked --manifest-path fuzz/Cargo.toml --target x86_64-unknown-linux-gnu
cargo fuzz build "${FLAGS[@]}"
echo "fuzz: installed and built in $(($(date +%s) - started)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
# `seeds` is the corpus generator, not a target.
for target in $(cargo fuzz list | grep -vx seeds); do
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  t0=$(date +%s)
  # -timeout: one input taking longer is a hang. -rss_limit_mb: runaway memory is a crash.
  if cargo fuzz run "${FLAGS[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$scratch/$target.log" 2>&1; then
    echo "fuzz: $target: ok in $(($(date +%s) - t0)) s, $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$target.log" | grep -o '[0-9]*$') inputs"
  else
    echo "fuzz: $target: FAILED after $(($(date +%s) - t0)) s"
    # The panic (or libFuzzer's reason: timeout, out of memory), then how it ended.
    grep -m1 -A2 -E "panicked at|ERROR: libFuzzer" "$scratch/$target.log" || true
    tail -25 "$scratch/$target.log"
    for input in "fuzz/artifacts/$target"/*; do
      [ -f "$input" ] && echo "fuzz: $target: crashing input: $input (cargo fuzz run ${FLAGS[*]} $target $input)"
    done
    failed+=("$target")
  fi
done

# The build is about 1-2 GiB; what follows needs the room (FUZZ_KEEP_TARGET=1 keeps it).
if [ "${FUZZ_KEEP_TARGET:-0}" != 1 ]; then
  rm -rf fuzz/target
fi
echo "fuzz: total $(($(date +%s) - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
