#!/usr/bin/env sh
# Regenerates ffi/src/bindings.rs from c/include/knhk.h (needs libclang: apt install libclang-dev).
set -eu
cd "$(dirname "$0")/.."
cargo build -p knhk-sys --features regenerate
out=$(ls -t target/debug/build/knhk-sys-*/out/bindings.rs | head -n 1)
cp "$out" ffi/src/bindings.rs
echo "updated ffi/src/bindings.rs from $out"
