# Key-service slots: recipes. Not a script to run as a whole; each block adds one slot.
#
# A key-service slot hands a random 256-bit slot secret to a program that keeps it the way a
# KMS keeps a key. sealfs writes the secret (64 hex digits and a newline) to --wrap-cmd's
# stdin and stores what it prints; to unlock, it writes that back to --unwrap-cmd's stdin and
# reads the secret from its stdout. The commands given here run with /bin/sh -c (at unlock,
# the two built-in unwrap commands run as a fixed argv without a shell). Enrolment runs the
# unwrap once at once, so a slot that cannot open is never stored. Such slots are tried first
# and without asking whenever no --passfile/--keyfile/--extpass is given: `sealfs mount` and
# fstab lines then unlock by themselves while the service answers. Keep a passphrase or
# recovery slot too, unless losing the service should mean losing the data.
#
# The unwrap command is stored in sealfs.conf, which anyone who can write the cipher dir can
# edit, so sealfs runs it only if it is one of the built-in ones (`clevis decrypt`,
# `systemd-creds decrypt --name=sealfs - -`) or a line of /etc/sealfs/unwrap-commands
# (owned by root, writable by no one else). For the others below, add the exact string:
#   install -D -m 0644 /dev/null /etc/sealfs/unwrap-commands   # once
#   echo 'age -d -i /root/sealfs-age.key' >> /etc/sealfs/unwrap-commands
#
# Every `key add` first unlocks with an existing slot (here: asks for the passphrase).
CIPHER=/srv/cipher

# Tang (network-bound: opens only where the Tang server is reachable). Tested by npm test.
sealfs key add --name tang \
  --wrap-cmd 'clevis encrypt tang "{\"url\":\"http://tang.example.lan\"}" -y' \
  --unwrap-cmd 'clevis decrypt' "$CIPHER"

# TPM2 (opens only on this machine, with Secure Boot state PCR 7 unchanged).
sealfs key add --name tpm \
  --wrap-cmd 'clevis encrypt tpm2 "{\"pcr_ids\":\"7\"}"' \
  --unwrap-cmd 'clevis decrypt' "$CIPHER"

# Tang and TPM2 both required (Shamir secret sharing, threshold 2 of 2).
sealfs key add --name tang-and-tpm \
  --wrap-cmd 'clevis encrypt sss "{\"t\":2,\"pins\":{\"tang\":[{\"url\":\"http://tang.example.lan\"}],\"tpm2\":{}}}" -y' \
  --unwrap-cmd 'clevis decrypt' "$CIPHER"

# systemd-creds with the host key (/var/lib/systemd/credential.secret; --with-key=tpm2 or
# host+tpm2 bind it to the TPM as well). Tested by npm test.
sealfs key add --name host \
  --wrap-cmd 'systemd-creds encrypt --with-key=host --name=sealfs - -' \
  --unwrap-cmd 'systemd-creds decrypt --name=sealfs - -' "$CIPHER"

# A cloud KMS: AWS KMS through the aws CLI (credentials from its usual configuration).
# Disabling or scheduling the deletion of the KMS key disables the slot everywhere.
sealfs key add --name aws-kms \
  --wrap-cmd 'aws kms encrypt --key-id alias/sealfs --plaintext fileb:///dev/stdin --query CiphertextBlob --output text' \
  --unwrap-cmd 'base64 -d | aws kms decrypt --ciphertext-blob fileb:///dev/stdin --query Plaintext --output text | base64 -d' "$CIPHER"

# Google Cloud KMS.
sealfs key add --name gcp-kms \
  --wrap-cmd 'gcloud kms encrypt --location=global --keyring=sealfs --key=volume --plaintext-file=- --ciphertext-file=-' \
  --unwrap-cmd 'gcloud kms decrypt --location=global --keyring=sealfs --key=volume --ciphertext-file=- --plaintext-file=-' "$CIPHER"

# age, with an identity file kept elsewhere (a hardware token with age-plugin-yubikey, say).
sealfs key add --name age \
  --wrap-cmd 'age -r age1examplerecipientxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' \
  --unwrap-cmd 'age -d -i /root/sealfs-age.key' "$CIPHER"

# Then, at boot, an fstab line needs no passfile:
#   /srv/cipher  /srv/plain  fuse.sealfs  _netdev,nofail  0 0
# (_netdev for Tang or a cloud KMS: the network must be up before the unlock.)
