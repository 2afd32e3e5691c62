#!/usr/bin/env bash
# An emulated Raspberry Pi 4 userland for `make test-device` (opt-in; needs root):
# arm64 Debian bookworm (Python 3.11, Debian's numpy 1.24 — Raspberry Pi OS Bookworm's versions)
# under qemu-user-static + binfmt_misc, a `pi` user with a venv (--system-site-packages) holding
# onnxruntime and tflite-runtime from PyPI's aarch64 wheels, and sshd in the chroot on 127.0.0.1:PORT.
# Latencies under emulation are meaningless; the aarch64 userland, numpy 1.x and the runtimes are real.
#   scripts/device-emulator.sh start|stop   (EMU_DIR=~/.cache/dcanas/emulator, EMU_PORT=2222)
set -euo pipefail
cd "$(dirname "$0")/.."
# Where the rpi4-emulated profile looks for the key and known_hosts (a fixed place, not the current directory).
DIR=${EMU_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dcanas/emulator}
ROOT=$DIR/rootfs
PORT=${EMU_PORT:-2222}
TARBALL=$DIR/rootfs.tar.zst
# The Debian mirror this machine's apt already uses (EMU_MIRROR overrides); none configured is an error, not a guess.
MIRROR=${EMU_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
[ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
in_root() { chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

stop() {
  [ -f "$DIR/sshd.pid" ] && kill "$(cat "$DIR/sshd.pid")" 2>/dev/null || true
  rm -f "$DIR/sshd.pid"
  for m in proc/cpuinfo dev/pts dev sys proc; do umount -l "$ROOT/$m" 2>/dev/null || true; done
}

if [ "${1:-start}" = stop ]; then stop; exit 0; fi
[ -n "$MIRROR" ] || { echo "device-emulator: no Debian mirror in this machine's apt configuration (/etc/apt/sources.list*); set EMU_MIRROR=URL" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "device-emulator: needs root (debootstrap, chroot, binfmt_misc)" >&2; exit 2; }
t0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null && command -v zstd >/dev/null || \
  { apt-get update -qq >/dev/null; apt-get install -y -qq qemu-user-static binfmt-support debootstrap zstd >/dev/null; }
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
mkdir -p "$DIR"
stop
if [ ! -x "$ROOT/home/pi/venv/bin/python" ]; then
  if [ -f "$TARBALL" ]; then
    echo "unpacking cached rootfs $TARBALL"
    rm -rf "$ROOT"; mkdir -p "$ROOT"; tar -C "$ROOT" -I zstd -xf "$TARBALL"
  else
    echo "building the arm64 rootfs with debootstrap (about 6 minutes) from $MIRROR"
    rm -rf "$ROOT"; mkdir -p "$ROOT/usr/sbin"
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"  # start no services
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-numpy,python3-venv,python3-pip,openssh-server,ca-certificates \
      --foreign bookworm "$ROOT" "$MIRROR" >/dev/null
    in_root /debootstrap/debootstrap --second-stage >/dev/null
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
    in_root update-ca-certificates >/dev/null 2>&1 || true
    in_root useradd -m -s /bin/bash pi
    in_root su pi -c "python3 -m venv --system-site-packages /home/pi/venv && /home/pi/venv/bin/pip install -q --disable-pip-version-check onnxruntime tflite-runtime"
    tar -C "$ROOT" -I 'zstd -10 -T0' -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
  fi
fi
# mounts; a Pi 4 style /proc/cpuinfo (qemu-user passes the host's x86 one through and onnxruntime's cpuinfo crashes on it)
mount -t proc proc "$ROOT/proc"; mount --rbind /sys "$ROOT/sys"; mount --bind /dev "$ROOT/dev"; mount --bind /dev/pts "$ROOT/dev/pts"
cat > "$DIR/cpuinfo" <<'CPU'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2835
Model		: Raspberry Pi 4 Model B Rev 1.4 (emulated)
CPU
mount --bind "$DIR/cpuinfo" "$ROOT/proc/cpuinfo"
mkdir -p "$ROOT/run/sshd"
[ -f "$ROOT/etc/ssh/ssh_host_ed25519_key" ] || in_root ssh-keygen -A >/dev/null
in_root usermod -p '*' pi  # useradd leaves the account locked ('!'), which sshd refuses without PAM; '*' still allows no password
[ -f "$DIR/pi_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$DIR/pi_key"
install -d -m 700 -o "$(in_root id -u pi)" -g "$(in_root id -g pi)" "$ROOT/home/pi/.ssh"
install -m 600 -o "$(in_root id -u pi)" -g "$(in_root id -g pi)" "$DIR/pi_key.pub" "$ROOT/home/pi/.ssh/authorized_keys"
chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/sshd -D -e -p "$PORT" -o ListenAddress=127.0.0.1 \
  -o UsePAM=no -o PasswordAuthentication=no >"$DIR/sshd.log" 2>&1 &
echo $! > "$DIR/sshd.pid"
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")" > "$DIR/known_hosts"
echo "emulated Pi: ssh -i $DIR/pi_key -p $PORT pi@127.0.0.1 ($(($(date +%s) - t0)) s); profile: src/dcanas/devices/profiles/rpi4-emulated.yaml"
