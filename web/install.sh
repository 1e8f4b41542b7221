#!/bin/sh
# Fetch hls.js from the npm registry (pinned in web/package.json + package-lock.json) and
# copy its minified build where the origin serves it: origin/static/vendor/hls.min.js
# (git-ignored). Run from anywhere: `sh web/install.sh` (the Makefile's `web` target).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -f "$here/package-lock.json" ]; then
    npm ci --prefix "$here" --no-audit --no-fund
else
    npm install --prefix "$here" --no-audit --no-fund
fi
mkdir -p "$root/origin/static/vendor"
cp "$here/node_modules/hls.js/dist/hls.min.js" "$root/origin/static/vendor/hls.min.js"
echo "hls.js $(node -p "require('$here/node_modules/hls.js/package.json').version") -> origin/static/vendor/hls.min.js"
