import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

export interface Argon2idParams {
  /** libsodium opslimit: Argon2id passes (t). */
  opslimit: number
  /** libsodium memlimit in bytes (m). */
  memlimit: number
  salt: Buffer
}

/** libsodium MODERATE: t=3, m=256 MiB (about 1.1 s on the reference machine; see docs/SECURITY.md). */
export const DEFAULT_COST = { opslimit: 3, memlimit: 256 * 1024 * 1024 }
/** libsodium INTERACTIVE: t=2, m=64 MiB. A config asking for less is refused (downgrade defence). */
export const MIN_COST = { opslimit: 2, memlimit: 64 * 1024 * 1024 }
/** Upper bounds, so a hostile config cannot make unlock exhaust memory or run for hours. */
export const MAX_COST = { opslimit: 64, memlimit: 4 * 1024 * 1024 * 1024 }
export const SALT_BYTES = 16

/** What is wrong with an Argon2id cost, in words (which bound it crosses), or null if nothing. */
export function costProblem (p: { opslimit: number, memlimit: number }): string | null {
  const mib = (n: number): string => n >= 2 ** 30 && n % 2 ** 30 === 0 ? `${n / 2 ** 30} GiB` : `${n / 2 ** 20} MiB`
  if (!Number.isInteger(p.opslimit) || !Number.isInteger(p.memlimit)) return 'Argon2id parameters must be whole numbers'
  if (p.opslimit < MIN_COST.opslimit) return `Argon2id opslimit ${p.opslimit} is below the floor of ${MIN_COST.opslimit}`
  if (p.opslimit > MAX_COST.opslimit) return `Argon2id opslimit ${p.opslimit} is above the ceiling of ${MAX_COST.opslimit}`
  if (p.memlimit < MIN_COST.memlimit) return `Argon2id memlimit ${mib(p.memlimit)} is below the floor of ${mib(MIN_COST.memlimit)}`
  if (p.memlimit > MAX_COST.memlimit) return `Argon2id memlimit ${mib(p.memlimit)} is above the ceiling of ${mib(MAX_COST.memlimit)}`
  return null
}

export function costIsAcceptable (p: { opslimit: number, memlimit: number }): boolean {
  return Number.isInteger(p.opslimit) && Number.isInteger(p.memlimit) &&
    p.opslimit >= MIN_COST.opslimit && p.memlimit >= MIN_COST.memlimit &&
    p.opslimit <= MAX_COST.opslimit && p.memlimit <= MAX_COST.memlimit
}

/** Argon2id (libsodium crypto_pwhash, version 0x13, one lane) to a 256-bit key. Runs off the JS thread. */
export function deriveFromPassphrase (passphrase: Buffer, params: Argon2idParams): Promise<SecretKey> {
  if (!costIsAcceptable(params)) return Promise.reject(new RangeError('Argon2id parameters out of bounds'))
  const key = SecretKey.alloc()
  return new Promise((resolve, reject) => {
    sodium.crypto_pwhash_async(key.bytes, passphrase, params.salt, params.opslimit, params.memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13, err => {
      if (err) { key.dispose(); reject(err) } else resolve(key)
    })
  })
}
