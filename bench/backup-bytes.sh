#!/bin/bash
# Cipher-dir bytes an incremental rsync sends: one byte changed in a 100 MiB file; one file added to 10,000.
set -e
# Needs rsync. Writes about 250 MB under /var/tmp, removed at the end.
W=$(mktemp -d /var/tmp/sealfs-backup-bytes.XXXXXX); mkdir -p $W/c $W/m $W/backup
trap 'fusermount3 -u $W/m 2>/dev/null || true; rm -rf $W' EXIT
printf 'pw\n' > $W/pass
S=$(cd "$(dirname "$0")/.." && pwd)/bin/sealfs.js
node $S init --passfile $W/pass --kdf-opslimit 2 --kdf-memlimit 67108864 $W/c >/dev/null
node $S mount --passfile $W/pass $W/c $W/m
head -c 100M /dev/urandom > $W/m/big
mkdir $W/m/many; python3 -c "
import os
for i in range(10000):
    open('$W/m/many/f%d' % i, 'wb').write(os.urandom(200 + i % 3000))"
node $S umount $W/m; sleep 1
rsync -a $W/c/ $W/backup/
node $S mount --passfile $W/pass $W/c $W/m
printf 'X' | dd of=$W/m/big bs=1 seek=52428800 conv=notrunc status=none
node $S umount $W/m; sleep 1
echo "one byte changed in a 100 MiB file:"; rsync -a --no-whole-file --stats $W/c/ $W/backup/ | grep -E "Number of regular files transferred|Literal data|Total bytes sent"
node $S mount --passfile $W/pass $W/c $W/m
head -c 1000 /dev/urandom > $W/m/many/new
node $S umount $W/m; sleep 1
echo "one file added to 10,000:"; rsync -a --no-whole-file --stats $W/c/ $W/backup/ | grep -E "Number of regular files transferred|Literal data|Total bytes sent"
