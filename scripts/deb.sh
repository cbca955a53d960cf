#!/bin/bash
# make deb: the Debian package, built with dpkg-buildpackage from a copy
# of the working tree (tracked files and new ones git does not ignore,
# as they are now, changes included: the package is of what `make`
# builds), in OUT/cbtfs-VERSION, since dpkg-buildpackage writes its
# results into the parent directory.  Leaves OUT/cbtfs_VERSION_ARCH.deb
# (and its -dbgsym), and fails if lintian finds an error or a warning
# that debian/cbtfs.lintian-overrides does not justify.
#   usage: scripts/deb.sh [OUT]      (default: build/deb)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build/deb}
version=$(cat "$top/VERSION")

# debian/changelog is kept (a source package needs it, and its date
# makes the build reproducible), so it must name the version VERSION does.
cv=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
if [ "$cv" != "$version" ]; then
    echo "deb: debian/changelog's newest entry is $cv but VERSION says $version;" \
         "add an entry for $version at its top" >&2
    exit 1
fi

src=$out/cbtfs-$version
rm -rf "$out"
mkdir -p "$src"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked files deleted in the working tree are listed too: skip them.
    git -C "$top" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            [ -e "$top/$f" ] && printf '%s\0' "$f"
        done | tar -C "$top" --null -T - -cf - | tar -C "$src" -xf -
else                            # a tarball: all of it but what make built
    tar -C "$top" --exclude=./build --exclude=./cbtfs -cf - . | tar -C "$src" -xf -
fi

(cd "$src" && dpkg-buildpackage -us -uc -b)

changes=$(ls "$out"/cbtfs_"$version"_*.changes)
lintian --fail-on error,warning \
    "$changes"
ls "$out"/*.deb
