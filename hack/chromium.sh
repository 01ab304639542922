#!/usr/bin/env bash
# Makes sure headless Chromium is installed, for the browser tests of the issuer (issuer/browser_test.go),
# and prints its path. Debian's chromium package, through apt-get; needs root (CI and the dev machines run
# as root). Prints nothing and exits 0 when it cannot be installed: the browser tests then skip, saying so.
set -euo pipefail

for bin in chromium chromium-browser google-chrome; do
	if path=$(command -v "$bin" 2>/dev/null); then
		echo "$path"
		exit 0
	fi
done

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "hack/chromium.sh: chromium is not installed and apt-get cannot be run here; the browser tests will skip" >&2
	exit 0
fi
echo "hack/chromium.sh: installing chromium (Debian package) for the browser tests..." >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >&2; then
	echo "hack/chromium.sh: installing chromium failed; the browser tests will skip" >&2
	exit 0
fi
command -v chromium || echo "hack/chromium.sh: the chromium package installed no chromium command; the browser tests will skip" >&2
