import { CliError } from './exit-codes'

/** FUSE and mount(8) options passed on to the kernel/libfuse as they are. */
const PASSED = new Set(['ro', 'rw', 'allow_other', 'allow_root', 'default_permissions', 'nosuid', 'suid', 'nodev', 'dev', 'noexec', 'exec', 'noatime', 'atime', 'relatime', 'nodiratime', 'sync', 'async', 'dirsync'])
/** Options that only mean something to mount(8) or fstab. */
const IGNORED = new Set(['defaults', 'auto', 'noauto', 'user', 'nouser', 'users', 'nofail', '_netdev'])

export interface ParsedMountOptions {
  fuse: string[]
  fsname?: string
  /** Ours, for fstab lines (mount.fuse passes everything as -o): consumed, never passed on. */
  passfile?: string
  extpass?: string
  keyfile?: string
  slot?: string
  volumeId?: string
  idle?: string
  logLevel?: string
  nonempty: boolean
  readOnly: boolean
  ephemeral: boolean
}

/** Parses -o a,b,c. An option we do not know is an error, not silently passed to the kernel. */
export function parseMountOptions (specs: string[]): ParsedMountOptions {
  const out: ParsedMountOptions = { fuse: [], nonempty: false, readOnly: false, ephemeral: false }
  for (const spec of specs) {
    for (const opt of spec.split(',').map(s => s.trim()).filter(s => s.length > 0)) {
      const [key] = opt.split('=', 1)
      if (PASSED.has(opt)) {
        out.fuse.push(opt)
        if (opt === 'ro') out.readOnly = true
        if (opt === 'rw') out.readOnly = false
      } else if (IGNORED.has(opt) || key.startsWith('x-')) {
        continue
      } else if (key === 'passfile' && opt.length > 'passfile='.length) {
        out.passfile = opt.slice('passfile='.length)
      } else if (key === 'keyfile' && opt.length > 'keyfile='.length) {
        out.keyfile = opt.slice('keyfile='.length)
      } else if (key === 'volume_id' && opt.length > 'volume_id='.length) {
        out.volumeId = opt.slice('volume_id='.length)
      } else if (key === 'slot' && opt.length > 'slot='.length) {
        out.slot = opt.slice('slot='.length)
      } else if (key === 'extpass' && opt.length > 'extpass='.length) {
        out.extpass = opt.slice('extpass='.length)
      } else if (key === 'idle' && opt.length > 'idle='.length) {
        out.idle = opt.slice('idle='.length)
      } else if (key === 'log_level' && opt.length > 'log_level='.length) {
        out.logLevel = opt.slice('log_level='.length)
      } else if (key === 'fsname') {
        out.fsname = opt.slice('fsname='.length)
      } else if (opt === 'debug') {
        out.fuse.push(opt)  // libfuse request trace (foreground only; it prints plaintext paths)
      } else if (opt === 'nonempty') {
        out.nonempty = true
      } else if (opt === 'ephemeral') {
        out.ephemeral = true
      } else {
        throw new CliError('usage', `unknown mount option '${key}'`)
      }
    }
  }
  return out
}
