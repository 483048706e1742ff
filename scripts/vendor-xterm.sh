#!/usr/bin/env bash
# Vendor xterm.js (the browser terminal of `labkit serve`'s web page) into the package:
#   npm pack @xterm/xterm and @xterm/addon-fit (the npm registry only; nothing is built or run),
#   then copy the built files and each package's LICENSE into labkit/door/static/vendor/.
# Usage: scripts/vendor-xterm.sh   (run again after changing a version below; commit the result)
# Needs npm (Debian's npm package). The files are served as they are: no bundler, no node at run time.
set -euo pipefail

XTERM_VERSION=6.0.0
FIT_VERSION=0.11.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST="$ROOT/labkit/door/static/vendor"
command -v npm >/dev/null || { echo "vendor-xterm: npm is missing: sudo apt-get install npm" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
npm pack --silent "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$FIT_VERSION" >/dev/null
mkdir xterm fit
tar -xzf "xterm-xterm-$XTERM_VERSION.tgz" -C xterm --strip-components=1
tar -xzf "xterm-addon-fit-$FIT_VERSION.tgz" -C fit --strip-components=1
for f in xterm/lib/xterm.js xterm/css/xterm.css xterm/LICENSE fit/lib/addon-fit.js fit/LICENSE; do
  [ -f "$f" ] || { echo "vendor-xterm: $f is not in the package (its layout changed?)" >&2; exit 1; }
done

mkdir -p "$DEST"
cp xterm/lib/xterm.js xterm/css/xterm.css "$DEST/"
cp xterm/LICENSE "$DEST/LICENSE.xterm"
cp fit/lib/addon-fit.js "$DEST/"
cp fit/LICENSE "$DEST/LICENSE.addon-fit"
# the built files end with a source map reference to a file not vendored: dropped (the
# browser's console would otherwise report a missing file, which the page never serves)
sed -i '/^\/\/# sourceMappingURL=/d' "$DEST/xterm.js" "$DEST/addon-fit.js"

cat >"$DEST/README.md" <<EOF
# Vendored xterm.js

The browser terminal of \`labkit serve\`'s web page (labkit/door/web.py), copied from npm by
\`scripts/vendor-xterm.sh\` (run it again to update; do not edit these files):

| file | package | version | licence |
|------|---------|---------|---------|
| xterm.js, xterm.css | @xterm/xterm | $XTERM_VERSION | MIT (LICENSE.xterm) |
| addon-fit.js | @xterm/addon-fit | $FIT_VERSION | MIT (LICENSE.addon-fit) |

The built files are UMD bundles: loaded by a plain \`<script>\` they define \`window.Terminal\`
and \`window.FitAddon.FitAddon\`. Their \`sourceMappingURL\` line is removed (no source maps
are vendored).
EOF
( cd "$DEST" && sha256sum xterm.js xterm.css addon-fit.js ) >"$DEST/SHA256SUMS"
echo "vendor-xterm: @xterm/xterm $XTERM_VERSION and @xterm/addon-fit $FIT_VERSION in ${DEST#"$ROOT"/}"
