// Failures of the crypto layer. None of them carries key material or plaintext.

/** A ciphertext (chunk, wrapped key, name or link) failed authentication. */
export class AuthenticationError extends Error {
  constructor (readonly what: string, readonly detail?: Record<string, string | number>) {
    super(`${what} failed authentication`)
    this.name = 'AuthenticationError'
  }
}

/** Bytes that cannot be a valid ciphertext of the expected kind (bad length, encoding). */
export class MalformedCiphertextError extends Error {
  constructor (readonly what: string) {
    super(`${what} is malformed`)
    this.name = 'MalformedCiphertextError'
  }
}
