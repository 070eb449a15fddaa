#!/usr/bin/env bash
# The browser page (examples/web): build it, serve it, or test it in headless Chromium.
#
#   scripts/web.sh build          # examples/web/dist: index.html, main.js, the wasm, the assets
#   scripts/web.sh serve [PORT]   # build, then serve dist on http://127.0.0.1:PORT (8000)
#   scripts/web.sh test           # build, then the browser test on both backends (CI runs it)
#
# Nothing is downloaded but crates (and, for `test`, npm's playwright-core): the wasm target
# comes from rustup, wasm-bindgen-cli is built by cargo at exactly the version of
# examples/web/Cargo.lock, wasm-opt (Debian's binaryen) is used when present. wasm-pack and
# trunk are not used: they download binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
web=examples/web
dist=$web/dist
# The page's own target folder (never the native one: a cargo build there would wait on its lock).
target_dir=${SUPMAE_WEB_TARGET:-$root/$web/target}
# `web` (default): the size-tuned profile (fat LTO, one codegen unit; several minutes longer).
# `release`: plain release, what CI tests (same code, a larger wasm).
profile=${SUPMAE_WEB_PROFILE:-web}

tools() {
    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        echo "== rustup target add wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown
    fi
    # The CLI must be the very version the crate links (wasm-bindgen checks the schema).
    local version
    version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' $web/Cargo.lock)
    if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
        echo "== cargo install wasm-bindgen-cli $version"
        # --locked first; a registry mirror older than the CLI's own lock file lacks some of
        # its locked versions, and then the newest compatible ones are taken.
        # (Built in the page's target folder, so a CI cache of it keeps the build.)
        # A debug build: it compiles in a fraction of the release build's time (which took
        # 16 minutes of CI on 2 cores) and still processes the page's wasm in seconds.
        (
            export CARGO_TARGET_DIR="$target_dir/wasm-bindgen-cli"
            cargo install wasm-bindgen-cli --version "$version" --locked --debug \
                || cargo install wasm-bindgen-cli --version "$version" --debug
        )
    fi
}

build() {
    tools
    echo "== building the wasm (profile $profile, wasm32-unknown-unknown)"
    (cd $web && CARGO_TARGET_DIR="$target_dir" cargo build --profile "$profile" --locked)
    rm -rf "$dist"
    mkdir -p "$dist/pkg" "$dist/assets"
    local wasm="$target_dir/wasm32-unknown-unknown/$profile/supmae_web.wasm"
    if [ "${SUPMAE_WASM_OPT:-1}" != 0 ] && command -v wasm-opt >/dev/null; then
        # Before wasm-bindgen: Debian's binaryen (version 108) run on wasm-bindgen's output
        # breaks its externref table ("WebAssembly.Table.set(): Argument 1 is invalid").
        echo "== wasm-opt -Oz"
        local tmp
        tmp=$(mktemp -d)
        wasm-opt -Oz --strip-debug --strip-producers --enable-bulk-memory \
            --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals \
            --enable-reference-types --enable-multivalue --enable-simd \
            "$wasm" -o "$tmp/supmae_web.wasm"
        wasm="$tmp/supmae_web.wasm"
    fi
    wasm-bindgen --target web --no-typescript --out-dir "$dist/pkg" "$wasm"
    cp $web/index.html $web/main.js $web/style.css "$dist/"
    cp $web/assets/checkpoint.ckpt "$dist/assets/"
    cp crates/supmae-data/assets/fashion-mnist/*.gz "$dist/assets/"
    echo "wasm: $(stat -c %s "$dist/pkg/supmae_web_bg.wasm") bytes; page: $(du -sb "$dist" | cut -f1) bytes ($dist)"
}

native() {
    # The native program and the classify example of the workspace's dev build (CI's test
    # step built them; otherwise they are built here).
    local bin=${CARGO_TARGET_DIR:-$root/target}/debug
    if [ ! -x "$bin/supmae" ] || [ ! -x "$bin/examples/classify" ]; then
        cargo build --workspace --locked --bin supmae --example classify
    fi
    local out=$dist/native
    mkdir -p "$out"
    # Validation image 0 of the page's data as a PGM file.
    python3 - "$dist/assets/t10k-images-idx3-ubyte.gz" "$out/test0.pgm" <<'EOF'
import gzip, sys
data = gzip.open(sys.argv[1]).read()
with open(sys.argv[2], "wb") as f:
    f.write(b"P5\n28 28\n255\n" + data[16:16 + 784])
EOF
    "$bin/supmae" reconstruct --checkpoint "$dist/assets/checkpoint.ckpt" --image "$out/test0.pgm" \
        --mask-ratio 0.75 --seed 7 --scale 1 --out "$out/reconstruction.png" --backend flex \
        | tee "$out/reconstruct.txt"
    "$bin/examples/classify" "$dist/assets/checkpoint.ckpt" | tee "$out/classify.txt"
}

case "${1:-build}" in
build)
    build
    ;;
serve)
    build
    port=${2:-8000}
    echo "== serving $dist on http://127.0.0.1:$port/ (Ctrl-C stops)"
    exec python3 -m http.server "$port" --bind 127.0.0.1 --directory "$dist"
    ;;
test)
    build
    native
    if [ ! -d $web/test/node_modules/playwright-core ]; then
        (cd $web/test && npm ci --no-audit --no-fund)
    fi
    # The 10 MB budget holds for the size-tuned build only.
    SUPMAE_WEB_SIZE_BUDGET=$([ "$profile" = web ] && echo 10000000 || echo 0) \
        node $web/test/browser.mjs "$dist" docs/web.png
    ;;
*)
    echo "usage: scripts/web.sh build | serve [PORT] | test" >&2
    exit 2
    ;;
esac
