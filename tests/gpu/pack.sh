#!/usr/bin/env bash
# pack.sh — build the GPU check here and pack what a bare GPU machine needs to run it into .gpu/
# (ignored by git): the binaries (bin/), the shared libraries they need that a CUDA image may
# lack (lib/: HDF5, jansson, OpenSSL's libcrypto, the reference BLAS, ...; not glibc and not the
# CUDA libraries, which the GPU machine has), and the shared data the tests read (data/).
# tests/gpu/run.sh uses .gpu/ when it is there and builds from source when it is not.
#
# The CPU backend in this build links the reference BLAS (-Dblas=netlib) instead of OpenBLAS:
# it is the CPU side of CUDA-vs-CPU comparisons on small models, and it keeps .gpu/ small
# (OpenBLAS alone is 36 MB). Usage: tests/gpu/pack.sh   (then carry .gpu to the GPU machine)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
data=${KS_SHARED_DATA:-../shared/data}
build=build-gpu
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dcuda=enabled -Dblas=netlib --buildtype=release >/dev/null
fi
ninja -C "$build" >/dev/null
rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib .gpu/data
bins=("$build/tests/test_cuda" "$build/bench/bench_cuda" "$build/cli/koalascope")
for b in "${bins[@]}"; do
    [ -x "$b" ] || { echo "pack.sh: $b was not built" >&2; exit 1; }
    cp "$b" .gpu/bin/
done
# Libraries every Linux (glibc, libgcc, libstdc++) or every CUDA install has stay behind.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libgcc_s\.so|libstdc\+\+\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libopenblas\.so|libblas\.so)'
for b in "${bins[@]}"; do
    ldd "$b" | awk '/=> \//{print $1, $3}' | while read -r name path; do
        if [[ $name =~ $skip ]]; then continue; fi
        cp -L "$path" ".gpu/lib/$name"
    done
done
# the reference BLAS under the name the binaries ask for
cp -L /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 .gpu/lib/libblas.so.3
if [ -d "$data/stories260K" ]; then
    mkdir -p .gpu/data/stories260K
    cp -L "$data"/stories260K/* .gpu/data/stories260K/
else
    echo "pack.sh: no shared data at $data (set KS_SHARED_DATA): the stories260K checks will fail" >&2
fi
du -sh .gpu .gpu/* | sed 's/^/pack.sh: /'
