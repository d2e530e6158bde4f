// npm run bench:crypto — the native chunk cipher's seal and open throughput on one core,
// next to `openssl speed -evp aes-256-gcm` at the same buffer size, measured in one run.
// Usage: node dist/bench/crypto.js [chunkSize ...]   (default: 4096 16384 32768 65536 131072)
import { execFileSync } from 'child_process'
import { ChunkCipher } from '../src/crypto/chunk-cipher'
import { SecretKey } from '../src/crypto/secret-key'

const RUN_BYTES = 1024 * 1024   // one call seals a 1 MiB run, as a large FUSE request would
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2)

function mbps (bytes: number, ns: bigint): number {
  return bytes / (Number(ns) / 1e9) / 1e6
}

function measure (fn: () => void): number {
  let bytes = 0
  const start = process.hrtime.bigint()
  const end = start + BigInt(SECONDS * 1e9)
  let now = start
  while (now < end) {
    for (let i = 0; i < 8; i++) { fn(); bytes += RUN_BYTES }
    now = process.hrtime.bigint()
  }
  return mbps(bytes, now - start)
}

function opensslSpeed (size: number): number {
  const out = execFileSync('openssl', ['speed', '-evp', 'aes-256-gcm', '-bytes', String(size), '-seconds', String(SECONDS)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  const line = out.split('\n').find(l => l.startsWith('AES-256-GCM'))
  if (line === undefined) throw new Error('unexpected openssl speed output')
  return Number(line.trim().split(/\s+/).pop()!.replace(/k$/, '')) / 1000  // 1000s of bytes/s -> MB/s
}

const sizes = process.argv.slice(2).map(Number)
const key = SecretKey.random()
const prefix = Buffer.alloc(32, 7)
console.log(`chunk cipher vs openssl speed -evp aes-256-gcm (one core, ${SECONDS} s each, MB/s = 10^6 B/s)`)
console.log('chunk size | seal MB/s | open MB/s | openssl MB/s | seal/openssl | open/openssl')
for (const size of sizes.length > 0 ? sizes : [4096, 16384, 32768, 65536, 131072]) {
  const cc = new ChunkCipher(size)
  const plain = Buffer.alloc(RUN_BYTES, 1)
  const sealed = Buffer.alloc(cc.sealedSize(RUN_BYTES))
  const out = Buffer.alloc(RUN_BYTES)
  cc.sealSync(key, prefix, 0, plain, sealed)
  const seal = measure(() => { cc.sealSync(key, prefix, 0, plain, sealed) })
  const open = measure(() => { cc.openSync(key, prefix, 0, sealed, out) })
  const ossl = opensslSpeed(size)
  console.log(`${String(size).padStart(10)} | ${seal.toFixed(0).padStart(9)} | ${open.toFixed(0).padStart(9)} | ${ossl.toFixed(0).padStart(12)} | ${(seal / ossl).toFixed(2).padStart(12)} | ${(open / ossl).toFixed(2).padStart(12)}`)
}
key.dispose()
