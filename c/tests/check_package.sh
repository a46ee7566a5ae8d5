#!/bin/sh
# Checks libknhk's packaging (run by `make check-package`, from c/, after `make all`):
#   1. the shared object exports exactly the functions knhk.h declares KNHK_EXPORT;
#   2. its SONAME is $SONAME, with the links libknhk.so -> $SONAME -> $SOFILE;
#   3. a program built with `pkg-config --cflags --libs knhk` against this tree
#      (knhk-uninstalled.pc) runs without LD_LIBRARY_PATH;
#   4. `make install DESTDIR=... PREFIX=...` stages the headers, libraries and knhk.pc, a
#      program built through that knhk.pc runs against the staged library, and
#      `make uninstall` removes them again.
# Environment: CC NM MAKE SONAME SOFILE VERSION (from the Makefile).
# `check_package.sh exports LIB` runs only step 1 and the SONAME check on LIB (NM, SONAME): for
# a cross-compiled shared object (make test-aarch64).
set -eu
fail() { echo "check_package: $*" >&2; exit 1; }
unset LD_LIBRARY_PATH PKG_CONFIG_DISABLE_UNINSTALLED
CWARN="-std=c11 -Wall -Wextra -Werror"
so=build/libknhk.so
[ "${1:-}" = exports ] && so=$2

# 1. exports
want=$(sed -n 's/^KNHK_EXPORT [^(]*[ *]\(knhk_[a-z0-9_]*\)(.*/\1/p' include/knhk.h | sort)
got=$($NM -D --defined-only "$so" | awk '{print $NF}' | sort)
[ -n "$want" ] || fail "no KNHK_EXPORT declarations found in include/knhk.h"
if [ "$want" != "$got" ]; then
  printf '%s\n' "$want" > build/exports.want
  printf '%s\n' "$got" > build/exports.got
  diff build/exports.want build/exports.got >&2 || true
  fail "$so exports differ from knhk.h's KNHK_EXPORT functions (< header, > library)"
fi
echo "exports: $(printf '%s\n' "$got" | wc -l) symbols, all knhk_ API ($NM -D --defined-only $so)"

# 2. SONAME and links
readelf -d "$so" | grep -q "(SONAME).*\[$SONAME\]" \
  || fail "readelf -d $so shows no SONAME $SONAME"
[ "${1:-}" = exports ] && { echo "soname: $SONAME"; exit 0; }
[ "$(readlink build/libknhk.so)" = "$SONAME" ] || fail "build/libknhk.so is not a link to $SONAME"
[ "$(readlink "build/$SONAME")" = "$SOFILE" ] || fail "build/$SONAME is not a link to $SOFILE"
echo "soname: $SONAME (build/libknhk.so -> $SONAME -> $SOFILE)"

# 3. against the build tree, no LD_LIBRARY_PATH
flags=$(PKG_CONFIG_PATH="$PWD" pkg-config --cflags --libs knhk)
[ "$(PKG_CONFIG_PATH="$PWD" pkg-config --modversion knhk)" = "$VERSION" ] \
  || fail "pkg-config --modversion knhk is not $VERSION"
# shellcheck disable=SC2086 # flags is a list of words
$CC $CWARN examples/example.c $flags -o build/example-tree
readelf -d build/example-tree | grep -q "(NEEDED).*\[$SONAME\]" \
  || fail "build/example-tree does not load $SONAME"
./build/example-tree | grep -q 'case amount=5000: complete after 6 steps' \
  || fail "build/example-tree (built against the tree) failed"
./build/example-tree | grep -q 'or-join: notify waits for pack yes, for gift_wrap yes (busy: yes), then fires: complete' \
  || fail "build/example-tree: the OR-join demo failed"
echo "build tree: cc example.c \$(pkg-config --cflags --libs knhk) runs without LD_LIBRARY_PATH"

# 4. staged install
stage="$PWD/build/stage"
prefix=/opt/knhk
rm -rf "$stage"
$MAKE --no-print-directory -s install DESTDIR="$stage" PREFIX="$prefix"
lib="$stage$prefix/lib"
for f in "$stage$prefix/include/knhk.h" "$stage$prefix/include/knhk/version.h" \
  "$lib/libknhk.a" "$lib/$SOFILE" "$lib/pkgconfig/knhk.pc"; do
  [ -f "$f" ] || fail "make install did not write $f"
done
[ "$(readlink "$lib/libknhk.so")" = "$SONAME" ] && [ "$(readlink "$lib/$SONAME")" = "$SOFILE" ] \
  || fail "make install did not link libknhk.so -> $SONAME -> $SOFILE"
grep -qx "prefix=$prefix" "$lib/pkgconfig/knhk.pc" || fail "knhk.pc does not name prefix $prefix"
flags=$(PKG_CONFIG_LIBDIR="$lib/pkgconfig" PKG_CONFIG_PATH="" PKG_CONFIG_SYSROOT_DIR="$stage" \
  pkg-config --cflags --libs knhk)
case "$flags" in *"$stage$prefix/include"*) ;; *) fail "pkg-config gave $flags";; esac
# shellcheck disable=SC2086
$CC $CWARN examples/example.c $flags -o build/example-installed
readelf -d build/example-installed | grep -q "(NEEDED).*\[$SONAME\]" \
  || fail "build/example-installed does not load $SONAME"
# A staged prefix is not on the loader's path (an installed one would be, after ldconfig).
LD_LIBRARY_PATH="$lib" ./build/example-installed | grep -q 'complete after 6 steps' \
  || fail "build/example-installed (built against the staged install) failed"
$MAKE --no-print-directory -s uninstall DESTDIR="$stage" PREFIX="$prefix"
left=$(find "$stage" -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left $left"
echo "install: DESTDIR=build/stage PREFIX=$prefix; a program built through its knhk.pc runs; uninstall removes it"
