import sodium from 'sodium-native'

/**
 * Recovery keys: 28 symbols from 30 that cannot be mistaken for one another when read
 * aloud or copied by hand (no 0/O, 1/I/L, U), in 7 groups of 4 (137 bits). What a person
 * types is normalized first: case, spaces and dashes do not matter.
 */
const ALPHABET = '23456789ABCDEFGHJKMNPQRSTVWXYZ'
const SYMBOLS = 28
const GROUP = 4

/** A new recovery key, as printed: `XXXX-XXXX-...` (ASCII bytes, in a Buffer the caller zeroes). */
export function newRecoveryKey (): Buffer {
  const out = Buffer.alloc(SYMBOLS + SYMBOLS / GROUP - 1)
  const r = Buffer.alloc(1)
  let at = 0
  for (let i = 0; i < SYMBOLS;) {
    sodium.randombytes_buf(r)
    if (r[0] >= 240) continue  // 240 = 8 x 30: no bias towards the first symbols
    if (i > 0 && i % GROUP === 0) out[at++] = 0x2d
    out[at++] = ALPHABET.charCodeAt(r[0] % ALPHABET.length)
    i++
  }
  r.fill(0)
  return out
}

/** Byte -> symbol value + 1 (0: not a symbol); lower case maps as upper case. */
const SYMBOL = new Uint8Array(256)
for (let i = 0; i < ALPHABET.length; i++) {
  const c = ALPHABET.charCodeAt(i)
  SYMBOL[c] = i + 1
  if (c >= 0x41 && c <= 0x5a) SYMBOL[c + 0x20] = i + 1
}

/**
 * The canonical form of something typed as a recovery key (upper case, grouped with dashes),
 * or null if it is not one: then it is a passphrase, not a mistyped recovery key. Works byte
 * by byte into a Buffer the caller zeroes: what was typed never becomes a JS string.
 */
export function normalizeRecoveryKey (typed: Buffer): Buffer | null {
  const out = Buffer.alloc(SYMBOLS + SYMBOLS / GROUP - 1)
  let n = 0
  for (const b of typed) {
    if (b === 0x20 || b === 0x2d || b === 0x09) continue
    const v = SYMBOL[b]
    if (v === 0 || n === SYMBOLS) {
      out.fill(0)
      return null
    }
    const at = n + Math.floor(n / GROUP)
    if (n > 0 && n % GROUP === 0) out[at - 1] = 0x2d
    out[at] = ALPHABET.charCodeAt(v - 1)
    n++
  }
  if (n !== SYMBOLS) {
    out.fill(0)
    return null
  }
  return out
}
