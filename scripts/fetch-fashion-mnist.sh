#!/usr/bin/env bash
# Fetch the REAL Fashion-MNIST from Debian's package dataset-fashion-mnist into $1 (IDX .gz files).
set -euo pipefail
dest=${1:-data/fashion-mnist}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
if ! apt-get download dataset-fashion-mnist >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    apt-get download dataset-fashion-mnist >/dev/null 2>&1
  else
    echo "make data: 'apt-get download dataset-fashion-mnist' failed; run 'sudo apt-get update' and retry" >&2
    exit 1
  fi
fi
dpkg -x dataset-fashion-mnist_*.deb root
cd - >/dev/null
mkdir -p "$dest.part"
cp "$tmp"/root/usr/share/datasets/fashion-mnist/*-ubyte.gz "$dest.part/"
rm -rf "$dest" && mv "$dest.part" "$dest"
echo "Fashion-MNIST: $(ls "$dest" | wc -l) IDX files in $dest"
