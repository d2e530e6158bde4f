const ALPHABET = /^[A-Za-z0-9_-]*$/

export function encode (b: Buffer): string {
  return b.toString('base64url')
}

/** Strict: only the canonical unpadded encoding of some byte string decodes (no name malleability). */
export function decodeCanonical (s: string): Buffer | null {
  if (!ALPHABET.test(s) || s.length % 4 === 1) return null
  const b = Buffer.from(s, 'base64url')
  return b.toString('base64url') === s ? b : null
}
