#!/usr/bin/env bash
# Build flux-core and flux-sched (Fluxion) from their upstream release sources into a prefix.
#
#   scripts/build-flux.sh [--prefix DIR] [--sources DIR] [--no-deps] [--force] [--dry-run]
#
# --prefix   where to install (default: $FLUX_PREFIX, else /opt/flux when it can be written,
#            else ~/.local/flux -- the places fluxqr.flux.env looks)
# --sources  a directory holding flux-core-$CORE.tar.gz and flux-sched-$SCHED.tar.gz (release
#            tarballs or git-tree archives); without it they are downloaded from the upstream
#            GitHub releases into the build directory
# --no-deps  do not apt-get the build dependencies (report missing ones instead)
# --force    rebuild even when the prefix already holds this build
# --check    build nothing: exit 0 when a Flux with Fluxion is on PATH or in the prefix
# --dry-run  build nothing: say what would be built, where, from what, and what is missing
#
# Nothing of Flux is kept in the fluxqr tree: sources are unpacked and built under $BUILD_DIR
# (default: a temporary directory, removed afterwards) and installed into the prefix. A stamp
# file in the prefix records the versions, so a second run is a no-op.
set -euo pipefail

CORE_VERSION=${FLUX_CORE_VERSION:-0.88.0}
SCHED_VERSION=${FLUX_SCHED_VERSION:-0.54.0}
PREFIX=${FLUX_PREFIX:-}
SOURCES=${FLUX_SOURCES:-}
DEPS=1
FORCE=0
CHECK=0
DRY=0
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

die() { echo "build-flux: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --sources) [ $# -ge 2 ] || die "--sources needs a directory"; SOURCES=$2; shift 2 ;;
        --sources=*) SOURCES=${1#*=}; shift ;;
        --no-deps) DEPS=0; shift ;;
        --force) FORCE=1; shift ;;
        --check) CHECK=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

has_fluxion() {  # has_fluxion FLUX-EXECUTABLE
    local prefix
    prefix=$(cd "$(dirname "$1")/.." && pwd)
    "$1" version >/dev/null 2>&1 && { [ -e "$prefix/libexec/flux/cmd/flux-ion-resource.py" ] \
        || [ -e "$prefix/lib/flux/cmd/flux-ion-resource.py" ]; }
}
# The default prefixes, in the order fluxqr.flux.env searches them.
DEFAULT_PREFIXES="/opt/flux ${HOME:+$HOME/.local/flux}"
writable() {  # writable DIR: DIR, or the nearest existing parent, can be written
    local d=$1
    while [ ! -e "$d" ]; do d=$(dirname "$d"); done
    [ -d "$d" ] && [ -w "$d" ]
}
if [ "$CHECK" = 1 ]; then
    if command -v flux >/dev/null && has_fluxion "$(command -v flux)"; then exit 0; fi
    for p in ${PREFIX:-$DEFAULT_PREFIXES}; do
        [ -x "$p/bin/flux" ] && has_fluxion "$p/bin/flux" && exit 0
    done
    echo "build-flux: no Flux with Fluxion on PATH or in ${PREFIX:-$DEFAULT_PREFIXES}:" \
         "building it" >&2
    exit 1
fi
if [ -z "$PREFIX" ]; then
    for p in $DEFAULT_PREFIXES; do
        if writable "$p"; then PREFIX=$p; break; fi
    done
    [ -n "$PREFIX" ] || die "none of $DEFAULT_PREFIXES can be written (use --prefix DIR)"
fi

STAMP="$PREFIX/.fluxqr-build"
WANT="flux-core $CORE_VERSION flux-sched $SCHED_VERSION"
if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
        && "$PREFIX/bin/flux" version >/dev/null 2>&1; then
    echo "build-flux: $WANT already installed in $PREFIX"
    exit 0
fi

# Debian packages flux-core and flux-sched need (from their scripts/install-deps-deb.sh;
# real package names, not virtual ones like liblua5.1-dev, which dpkg-query never reports
# installed).
DEB_DEPS="autoconf automake libtool make pkg-config libc6-dev libzmq3-dev uuid-dev
libjansson-dev liblz4-dev libarchive-dev libhwloc-dev libsqlite3-dev lua5.1 liblua5.1-0-dev
lua-posix python3-dev python3-cffi python3-ply python3-setuptools python3-yaml
python3-jsonschema jq libboost-dev libboost-graph-dev libedit-dev libyaml-cpp-dev ninja-build
cmake curl ca-certificates"

missing_debs() {
    local p missing=""
    for p in $DEB_DEPS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $p"
    done
    echo "$missing"
}

if [ "$DRY" = 1 ]; then
    echo "build-flux: would build $WANT into $PREFIX" \
         "($(writable "$PREFIX" && echo writable || echo NOT writable))"
    if [ -n "$SOURCES" ]; then
        for f in "flux-core-$CORE_VERSION.tar.gz" "flux-sched-$SCHED_VERSION.tar.gz"; do
            echo "build-flux: source $SOURCES/$f$([ -f "$SOURCES/$f" ] || echo ' (MISSING)')"
        done
    else
        echo "build-flux: sources downloaded from the flux-framework GitHub releases"
    fi
    if command -v dpkg-query >/dev/null; then
        MISSING=$(missing_debs)
        echo "build-flux: missing build dependencies:${MISSING:- none}"
    fi
    exit 0
fi

if command -v dpkg-query >/dev/null; then
    MISSING=$(missing_debs)
    if [ -n "$MISSING" ]; then
        if [ "$DEPS" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "build-flux: installing build dependencies:$MISSING"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            # shellcheck disable=SC2086
            apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
        else
            die "missing build dependencies:$MISSING (install them, e.g. apt-get install$MISSING)"
        fi
    fi
fi

# flux-core's Python bindings need an interpreter with cffi, ply and yaml: Debian's.
PYTHON=${FLUX_PYTHON:-/usr/bin/python3}
"$PYTHON" -c "import cffi, ply, yaml" 2>/dev/null \
    || die "$PYTHON lacks cffi/ply/yaml (set FLUX_PYTHON to an interpreter that has them)"

OWN_BUILD_DIR=0
if [ -z "${BUILD_DIR:-}" ]; then
    BUILD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fluxqr-flux-build.XXXXXX")
    OWN_BUILD_DIR=1
fi
cleanup() { if [ "$OWN_BUILD_DIR" = 1 ]; then rm -rf "$BUILD_DIR"; fi; }
trap cleanup EXIT
mkdir -p "$BUILD_DIR"

fetch() {  # fetch NAME VERSION -> path of the archive
    local name=$1 version=$2 file="$1-$2.tar.gz"
    if [ -n "$SOURCES" ]; then
        [ -f "$SOURCES/$file" ] || die "$SOURCES/$file not found (--sources must hold $file)"
        echo "$SOURCES/$file"
        return
    fi
    local url="https://github.com/flux-framework/$name/releases/download/v$version/$file"
    echo "build-flux: downloading $url" >&2
    curl -fsSL -o "$BUILD_DIR/$file" "$url" \
        || die "could not download $url (use --sources DIR with the release tarballs)"
    echo "$BUILD_DIR/$file"
}

unpack() {  # unpack ARCHIVE -> the top directory
    local top
    top=$(tar -tzf "$1" | head -1 | cut -d/ -f1)
    tar -xzf "$1" -C "$BUILD_DIR"
    echo "$BUILD_DIR/$top"
}

mkdir -p "$PREFIX" || die "cannot create $PREFIX (choose another --prefix)"
[ -w "$PREFIX" ] || die "$PREFIX is not writable (choose another --prefix)"
LOG="$BUILD_DIR/build.log"
run() {  # run a build step quietly, showing the log's tail when it fails
    if ! "$@" >>"$LOG" 2>&1; then
        tail -40 "$LOG" >&2
        die "step failed: $* (full log: $LOG)"
    fi
}

echo "build-flux: building flux-core $CORE_VERSION into $PREFIX"
CORE_SRC=$(unpack "$(fetch flux-core "$CORE_VERSION")")
(
    cd "$CORE_SRC"
    # Git-tree archives carry no configure script: generate it, telling it the version
    # (there is no git metadata to read it from).
    if [ ! -x configure ]; then
        export FLUX_VERSION=$CORE_VERSION
        run ./autogen.sh
    fi
    run env PYTHON="$PYTHON" ./configure --prefix="$PREFIX" --disable-docs
    run make -j"$JOBS"
    run make install
)

echo "build-flux: building flux-sched $SCHED_VERSION into $PREFIX"
SCHED_SRC=$(unpack "$(fetch flux-sched "$SCHED_VERSION")")
(
    cd "$SCHED_SRC"
    [ -f flux-sched.ver ] || echo "$SCHED_VERSION" > flux-sched.ver
    export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig:${PKG_CONFIG_PATH:-}"
    export PATH="$PREFIX/bin:$PATH"
    run cmake -S . -B build -G Ninja -DCMAKE_INSTALL_PREFIX="$PREFIX" \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENABLE_DOCS=OFF
    run ninja -C build -j"$JOBS"
    run ninja -C build install
)

"$PREFIX/bin/flux" version >/dev/null || die "the installed flux does not run"
echo "$WANT" > "$STAMP"
echo "build-flux: installed $WANT in $PREFIX"
