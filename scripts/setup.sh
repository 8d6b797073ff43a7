#!/usr/bin/env bash
# Installs ferry's build and run-time dependencies (Debian 12) and builds it into build/.
# Idempotent: packages already present are not reinstalled; the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libssl-dev libzstd-dev libnbd-dev nlohmann-json3-dev libcli11-dev libpugixml-dev
  libsqlite3-dev libcpp-httplib-dev libboost-dev libspdlog-dev
  libgtest-dev libgmock-dev libbenchmark-dev libxml2-utils
  qemu-utils qemu-system-x86 tar python3
)
# `setup.sh ferry` builds only the binary (what the demos need); without arguments everything, tests included.
TARGETS=("$@")
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm run the SMS API tests with the official AWS SDK; any install that provides the commands will do.
[ ${#TARGETS[@]} -gt 0 ] || { command -v node >/dev/null && command -v npm >/dev/null; } || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The SDK tests' node_modules, from the committed lock file: installed when missing or older than the lock file.
if [ ${#TARGETS[@]} -eq 0 ] && { [ ! -d tests/sdk/node_modules ] || [ tests/sdk/package-lock.json -nt tests/sdk/node_modules ]; }; then
  echo "setup: npm ci in tests/sdk" >&2
  npm ci --prefix tests/sdk --no-audit --no-fund >/dev/null
  touch tests/sdk/node_modules
fi

BUILD_TYPE=${FERRY_BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DFERRY_WERROR=ON ${FERRY_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)" ${TARGETS[@]:+--target "${TARGETS[@]}"}
