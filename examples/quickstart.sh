#!/usr/bin/env bash
# A first sealfs volume: create, mount, write, look at the ciphertext, unmount, remount.
# Run it as root (or with access to /dev/fuse) after README's set-up: `bash examples/quickstart.sh`
# in the project, or `bash /usr/lib/node_modules/sealfs/examples/quickstart.sh` after the packed
# install. It uses the sealfs beside it (this package's bin/), else `sealfs` on PATH, and works
# in a new temporary directory, which it removes at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -f "$here/../bin/sealfs.js" ]; then
  sealfs() { node "$here/../bin/sealfs.js" "$@"; }
else
  sealfs() { command sealfs "$@"; }
fi
work=$(mktemp -d)
cleanup() {
  sealfs umount "$work/plain" 2>/dev/null || true
  if mountpoint -q "$work/plain"; then echo "$work/plain is still mounted; left $work in place" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

mkdir -p "$work/cipher" "$work/plain"     # init and mount need both directories to exist
umask 077
printf 'an example passphrase, use your own\n' > "$work/passfile"

sealfs --version
sealfs init --passfile "$work/passfile" "$work/cipher"
sealfs mount --passfile "$work/passfile" "$work/cipher" "$work/plain"
echo "hello, sealfs" > "$work/plain/greeting.txt"
mkdir "$work/plain/notes"
ln -s ../greeting.txt "$work/plain/notes/link"

echo "--- plaintext view"; ls -lR "$work/plain"
echo "--- cipher dir";     ls -lR "$work/cipher"

sealfs umount "$work/plain"              # returns once the daemon has exited
sealfs mount --passfile "$work/passfile" "$work/cipher" "$work/plain"
cat "$work/plain/notes/link"
