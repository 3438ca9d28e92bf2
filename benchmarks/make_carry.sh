#!/usr/bin/env bash
# Build .carry/site.tar.xz, the serving stack that benchmarks/device_h200.sh unpacks on the GPU machine
# (which has no network): the nvidia-pytriton 0.7.0, tritonclient 2.51.0 and python-rapidjson wheels for
# its Python 3.12, unpacked, less what it does not need (the wheel's bundled libpython 3.13, the Python
# backend stubs of other versions, perf_client), and Debian's libb64-0d (perf_analyzer needs it).
# About 33 MB; carry it with the device tool's carry [".carry"] (it is kept out of git by
# .git/info/exclude, which this script extends).
#
#   bash benchmarks/make_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" "$work/site" "$work/deb" .carry
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/wheels" nvidia-pytriton==0.7.0 tritonclient==2.51.0 python-rapidjson
for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/site"; done
stubs="$work/site/pytriton/tritonserver/python_backend_stubs"
find "$stubs" -mindepth 1 -maxdepth 1 ! -name 3.12 -exec rm -rf {} +
rm -f "$work"/site/nvidia_pytriton.libs/libpython3*.so* "$work"/site/tritonclient-*.data/data/bin/perf_client
# zipfile drops the executable bits
chmod +x "$work"/site/tritonclient-*.data/data/bin/perf_analyzer "$work"/site/pytriton/tritonserver/bin/* "$stubs"/3.12/*
(cd "$work" && apt-get download libb64-0d >/dev/null && dpkg -x libb64-0d_*.deb deb && rm libb64-0d_*.deb)
tar -C "$work" -cf - site deb | xz -T0 -6 > .carry/site.tar.xz.tmp
mv .carry/site.tar.xz.tmp .carry/site.tar.xz
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
ls -l .carry/site.tar.xz
