#!/usr/bin/env bash
# Installs the Debian packages the tests need (the lists in scripts/deps.d/*.txt,
# one package per line, '#' comments). Missing packages are installed with
# apt-get when we are root on Debian; otherwise the one command to run is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(cat scripts/deps.d/*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing test dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing packages for the tests; run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
