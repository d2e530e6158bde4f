#!/usr/bin/env bash
# A first sealfs volume: create, mount, write, look at the ciphertext, unmount, remount.
# Run from the project root after the README's set-up command (needs root or /dev/fuse access).
set -euo pipefail
work=$(mktemp -d)
trap 'sealfs umount "$work/plain" 2>/dev/null || true; rm -rf "$work"' EXIT
sealfs() { node "$(dirname "$0")/../bin/sealfs.js" "$@"; }

mkdir "$work/cipher" "$work/plain"
umask 077
printf 'an example passphrase, use your own\n' > "$work/passfile"

sealfs init --passfile "$work/passfile" "$work/cipher"
sealfs mount --passfile "$work/passfile" "$work/cipher" "$work/plain"
echo "hello, sealfs" > "$work/plain/greeting.txt"
mkdir "$work/plain/notes"
ln -s ../greeting.txt "$work/plain/notes/link"

echo "--- plaintext view"; ls -lR "$work/plain"
echo "--- cipher dir";     ls -lR "$work/cipher"

sealfs umount "$work/plain"
sleep 1
sealfs mount --passfile "$work/passfile" "$work/cipher" "$work/plain"
cat "$work/plain/notes/link"
