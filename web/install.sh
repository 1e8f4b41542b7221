#!/bin/sh
# Fetch the web players from the npm registry (pinned in web/package.json +
# package-lock.json) and copy their builds where the origin serves them,
# origin/static/vendor/ (git-ignored):
#   hls.min.js         hls.js: castway's watch pages, and the player tests
#   shaka-player.js    Shaka Player: the player tests (tests/players)
#   video.min.js       video.js with VHS (@videojs/http-streaming): the player tests
# Run from anywhere: `sh web/install.sh` (the Makefile's `web` target).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -f "$here/package-lock.json" ]; then
    npm ci --prefix "$here" --no-audit --no-fund
else
    npm install --prefix "$here" --no-audit --no-fund
fi
vendor="$root/origin/static/vendor"
modules="$here/node_modules"
mkdir -p "$vendor"
cp "$modules/hls.js/dist/hls.min.js" "$vendor/hls.min.js"
cp "$modules/shaka-player/dist/shaka-player.compiled.js" "$vendor/shaka-player.js"
cp "$modules/video.js/dist/video.min.js" "$vendor/video.min.js"
version() { node -p "require('$modules/$1/package.json').version"; }
echo "hls.js $(version hls.js), shaka-player $(version shaka-player)," \
     "video.js $(version video.js) (VHS $(version @videojs/http-streaming)) -> origin/static/vendor/"
