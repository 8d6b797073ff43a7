#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input (fuzz/README.md): builds the libFuzzer harnesses with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer into build-fuzz/, then runs each for a bounded time.
#
#   scripts/fuzz.sh                      # every harness, FUZZ_SECONDS (600) each, FUZZ_JOBS (2) at a time
#   FUZZ_SECONDS=60 scripts/fuzz.sh vmx  # only the named harnesses
#
# Each run starts from a copy of fuzz/corpus/NAME (the committed seeds) and fuzz/regressions/NAME; new inputs go to
# build-fuzz/corpus/NAME (merge the interesting ones into fuzz/corpus with FUZZ_MERGE=1). A crash leaves its input in
# build-fuzz/artifacts/NAME/; copy it to fuzz/regressions/NAME/ and fix the bug: the normal build replays it in CI.
# Prints one line per harness: executions, time, executions per second, and whether it stayed clean.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-2}
BUILD=build-fuzz

PACKAGES=(clang libclang-rt-14-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
./scripts/setup.sh ferry >/dev/null  # the project's own dependencies

CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_FUZZ=ON \
  -DFERRY_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target fuzz_all

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$BUILD"/fuzz/fuzz_*; do [ -x "$f" ] && names+=("${f##*/fuzz_}"); done
fi

run_one() {
  local name=$1 corpus=$BUILD/corpus/$1 artifacts=$BUILD/artifacts/$1 log=$BUILD/logs/$1.log
  mkdir -p "$corpus" "$artifacts" "$BUILD/logs"
  [ -d "fuzz/corpus/$name" ] && cp -n fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null || true
  [ -d "fuzz/regressions/$name" ] && cp -n fuzz/regressions/"$name"/* "$corpus"/ 2>/dev/null || true
  local start=$(date +%s) rc=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$BUILD/fuzz/fuzz_$name" -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=25 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?
  local took=$(( $(date +%s) - start ))
  local execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  local verdict=clean
  [ "$rc" -eq 0 ] || verdict="FAILED (exit $rc, see $log and $artifacts)"
  printf '%-20s %12s execs %6ss %10s exec/s  %s\n' "$name" "${execs:-0}" "$took" "$(( ${execs:-0} / (took > 0 ? took : 1) ))" "$verdict"
  if [ "${FUZZ_MERGE:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
    mkdir -p "fuzz/corpus/$name"
    "$BUILD/fuzz/fuzz_$name" -merge=1 "fuzz/corpus/$name" "$corpus" >/dev/null 2>&1 || true
  fi
  [ "$rc" -eq 0 ]
}
export -f run_one
export BUILD SECONDS_EACH

echo "fuzzing ${#names[@]} harness(es), ${SECONDS_EACH}s each, ${JOBS} at a time ($(nproc) cores)"
printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {}
