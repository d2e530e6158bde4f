// Durations and sizes as people and systemd write them on command lines and in fstab.
import { CliError } from './exit-codes'

const SECONDS: Record<string, number> = { h: 3600, hr: 3600, hour: 3600, hours: 3600, m: 60, min: 60, minute: 60, minutes: 60, s: 1, sec: 1, second: 1, seconds: 1 }
const TERM = /(\d+)\s*([a-z]+)/gy

/**
 * "90" (seconds), "30s", "10m", "10min", "2h", "1h30m", "1h 30min" (systemd's spellings) →
 * milliseconds; null if it is not a duration.
 */
export function parseDuration (s: string): number | null {
  const t = s.trim()
  if (/^\d+$/.test(t)) return Number(t) * 1000
  if (t === '') return null
  let total = 0
  TERM.lastIndex = 0
  let at = 0
  for (let m = TERM.exec(t); m !== null; m = TERM.exec(t)) {
    const unit = SECONDS[m[2]]
    if (unit === undefined) return null
    total += Number(m[1]) * unit
    at = TERM.lastIndex
    while (t[at] === ' ') at++
    TERM.lastIndex = at
  }
  return at === t.length ? total * 1000 : null
}

const BYTES: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }

/** "67108864", "256M", "256MiB", "1G", "512k" (powers of 1024) → bytes; null if it is not a size. */
export function parseSize (s: string): number | null {
  const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(s.trim())
  if (m === null) return null
  const n = Number(m[1]) * (BYTES[m[2].toLowerCase()] as number)
  return Number.isSafeInteger(n) ? n : null
}

/** A size option's bytes (see parseSize); a usage error if it is not one. */
export function sizeOption (name: string, v: string): number {
  const n = parseSize(v)
  if (n === null) throw new CliError('usage', `${name} takes a size in bytes (a whole number, or with K, M, G: 256M, 1G)`)
  return n
}
