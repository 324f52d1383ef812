#!/usr/bin/env bash
# Render an evaluation report (the index.html of `funnel report` or `funnel evaluate --report`) in headless
# Chromium and save a PNG screenshot of it: the check that the page opens in a real browser and shows its plots.
#
# Usage:  docs/screenshot.sh REPORT_DIR_OR_INDEX_HTML [OUT.png]      (default OUT: docs/report-screenshot.png)
#
# Needs Chromium (Debian/Ubuntu: apt-get install -y chromium; or set CHROMIUM=/path/to/chrome). Nothing is
# fetched from the network: the page and its images are local files, and the flags below turn off Chromium's
# own background traffic. A throwaway profile directory is used and removed afterwards.
#
# Example, from the repository root:
#   funnel report runs/digits-f-nsf digits/test.csv --ood digits/ood.csv -o reports/digits-f-nsf
#   docs/screenshot.sh reports/digits-f-nsf docs/report-screenshot.png
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

page="$1"
[[ -d "$page" ]] && page="$page/index.html"
if [[ ! -f "$page" ]]; then
    echo "error: $page does not exist; pass a report folder or its index.html" >&2
    exit 2
fi
out="${2:-docs/report-screenshot.png}"

browser="${CHROMIUM:-}"
if [[ -z "$browser" ]]; then
    for candidate in chromium chromium-browser google-chrome; do
        if command -v "$candidate" >/dev/null; then
            browser="$candidate"
            break
        fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "error: no Chromium found; install it (apt-get install -y chromium) or set CHROMIUM=/path/to/chrome" >&2
    exit 2
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
# An absolute path: Chromium resolves --screenshot against its own working directory.
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --no-first-run --user-data-dir="$profile" --hide-scrollbars \
    --screenshot="$out_abs" --window-size=1280,2000 "$url" 2>/dev/null

if [[ ! -s "$out_abs" ]]; then
    echo "error: Chromium wrote no screenshot of $url" >&2
    exit 1
fi
echo "$out"
