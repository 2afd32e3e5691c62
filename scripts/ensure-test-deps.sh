#!/usr/bin/env bash
# What the tests need from Debian, installed when missing (as root; the packages start no service):
#   openssh-server  - the profiler tests start a real sshd on 127.0.0.1
#   chromium        - the report test renders report.html in headless Chromium
set -euo pipefail
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }
  echo "installed ${missing[*]}"
else
  echo "not installed: ${missing[*]}; the tests that need them will be skipped (sudo apt-get install ${missing[*]})" >&2
fi
