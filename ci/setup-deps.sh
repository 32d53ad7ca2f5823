#!/usr/bin/env bash
# Debian packages the build and the tests need (idempotent; root).
#   mesa-vulkan-drivers libvulkan1: lavapipe, so the GPU backend's WGSL shaders run on a CPU-only machine.
#   libclang-dev libopenmpi-dev openmpi-bin: the `mpi` feature (bindgen needs libclang; tests/mpi.rs runs mpiexec).
#     Install one MPI only: with both Open MPI and MPICH, mpicc and mpiexec may belong to different ones.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
#   libhdf5-dev: Keras .h5 import (feature h5, hdf5-metno). python3-venv python3-pip: ci/python-tests.sh's fresh venv.
#   postgresql postgresql-server-dev-15: the PostgreSQL tests (ci/start-pg.sh) and building pgvector below
#     (server-dev upgrades the server to the same minor release and pulls clang-14 for PGXS; docs/toolchain.md, pitfall 9).
#   chromium fonts-dejavu-core: tests/serve.rs renders the `serve` page in headless Chromium.
PKGS=(mesa-vulkan-drivers libvulkan1 unzip libclang-dev libopenmpi-dev openmpi-bin libhdf5-dev python3-venv python3-pip
      postgresql postgresql-server-dev-15)
#   The `video` feature (ffmpeg-next links FFmpeg 5.1) and tests/video.rs (clips made with the ffmpeg CLI).
PKGS+=(pkg-config libavcodec-dev libavformat-dev libavfilter-dev libavutil-dev libswscale-dev ffmpeg)
PKGS+=(chromium fonts-dejavu-core)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pgvector (the `vector` type for the PostgreSQL sink and `search --db`): not packaged for bookworm, so build
# 0.8.0 against PostgreSQL 15 from Debian trixie's *source* package, fetched with a private apt config (the
# system's sources are not touched), or from a local copy of the same tarball (PGVECTOR_TARBALL=…orig.tar.gz).
# OPTFLAGS="": the Makefile's default -march=native would make a non-portable build.
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGVECTOR_SHA256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
if [ ! -f "$($PG_CONFIG --pkglibdir)/vector.so" ] || [ ! -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  W=$(mktemp -d)
  if [ -n "${PGVECTOR_TARBALL:-}" ] && [ -f "$PGVECTOR_TARBALL" ]; then
    cp "$PGVECTOR_TARBALL" "$W/pgvector_0.8.0.orig.tar.gz"
  else
    mkdir -p "$W/lists/partial" "$W/cache/archives/partial"
    URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$URI" ] || URI=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$URI" ] || URI=http://deb.debian.org/debian
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\n' "$URI" > "$W/trixie-src.sources"
    O=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$W" -o "Dir::State::Lists=$W/lists" -o "Dir::Cache=$W/cache")
    $SUDO apt-get "${O[@]}" -o APT::Sandbox::User=root update -qq
    (cd "$W" && $SUDO apt-get "${O[@]}" -o APT::Sandbox::User=root source --download-only -qq pgvector=0.8.0-1)
  fi
  echo "$PGVECTOR_SHA256  $(ls "$W"/pgvector_0.8.0.orig.tar.gz)" | sha256sum -c --quiet -
  tar xzf "$W"/pgvector_0.8.0.orig.tar.gz -C "$W"
  make -s -C "$W"/pgvector-0.8.0 OPTFLAGS="" PG_CONFIG=$PG_CONFIG -j"$(nproc)" >/dev/null
  $SUDO make -s -C "$W"/pgvector-0.8.0 OPTFLAGS="" PG_CONFIG=$PG_CONFIG install >/dev/null
  $SUDO rm -rf "$W"
fi
