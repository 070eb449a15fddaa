#!/usr/bin/env bash
# Builds and runs README.md's "Using the library" example as a user would: in a fresh crate
# outside the workspace, with `supmae` as a path dependency (default features) and the
# workspace's Cargo.lock as its starting versions. Fails when the example does not compile,
# does not run, or prints no loss.
#
#   scripts/readme-example.sh            (CARGO_TARGET_DIR is honoured)
#   SUPMAE_README_FEATURES=wgpu scripts/readme-example.sh   (supmae features on top of its defaults)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)/readme-example
mkdir -p "$dir/src"
features=""
if [ -n "${SUPMAE_README_FEATURES:-}" ]; then
    features=$(printf '"%s", ' ${SUPMAE_README_FEATURES//,/ })
fi
cat >"$dir/Cargo.toml" <<TOML
[package]
name = "readme-example"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
supmae = { path = "$root/crates/supmae", features = [$features] }

# Not used by the example: the std feature of bitflags, which the workspace's clap (through
# rustix) turns on. With it the scratch crate resolves the wgpu stack's features as the
# workspace does and reuses its build instead of compiling the whole stack again (6 minutes
# of CI); the example itself still sees only supmae.
bitflags = { version = "2", features = ["std"] }

# Its own workspace, whatever folder it lands in.
[workspace]
TOML
# The workspace's profiles (dependencies optimised in dev builds), so that with
# CARGO_TARGET_DIR pointing at the workspace's target folder the example reuses its build.
awk '/^\[profile/ { on = 1 } /^\[/ && !/^\[profile/ { on = 0 } on' "$root/Cargo.toml" >>"$dir/Cargo.toml"
# The first Rust block after the "Using the library" heading, verbatim.
awk '/^## Using the library/ { section = 1 }
     section && /^```rust$/ { inside = 1; next }
     inside && /^```$/ { exit }
     inside { print }' "$root/README.md" >"$dir/src/main.rs"
grep -q 'fn main' "$dir/src/main.rs" || { echo "no example with fn main in README.md's 'Using the library'" >&2; exit 1; }
cp "$root/Cargo.lock" "$dir/Cargo.lock"
out=$(cd "$dir" && cargo run --quiet)
echo "$out"
grep -q "reconstruction loss" <<<"$out"
echo "README example: built and ran outside the workspace ($dir)"
