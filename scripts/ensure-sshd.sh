#!/usr/bin/env bash
# The profiler tests start a real OpenSSH sshd on 127.0.0.1; install it when missing (as root).
set -euo pipefail
[ -x /usr/sbin/sshd ] && exit 0
if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq openssh-server >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq openssh-server >/dev/null; }
  echo "installed openssh-server (the package starts no service here)"
else
  echo "openssh-server is not installed: the loopback-sshd tests will be skipped (sudo apt-get install openssh-server)" >&2
fi
