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

/**
 * The canonical form of something typed as a recovery key (upper case, grouped with dashes),
 * or null if it is not one: then it is a passphrase, not a mistyped recovery key.
 */
export function normalizeRecoveryKey (typed: Buffer): Buffer | null {
  const symbols: number[] = []
  for (const b of typed) {
    if (b === 0x20 || b === 0x2d || b === 0x09) continue
    const c = b >= 0x61 && b <= 0x7a ? b - 0x20 : b
    if (!ALPHABET.includes(String.fromCharCode(c))) return null
    symbols.push(c)
  }
  if (symbols.length !== SYMBOLS) return null
  const out = Buffer.alloc(SYMBOLS + SYMBOLS / GROUP - 1)
  let at = 0
  symbols.forEach((c, i) => {
    if (i > 0 && i % GROUP === 0) out[at++] = 0x2d
    out[at++] = c
  })
  symbols.fill(0)
  return out
}
