import Database from 'better-sqlite3'
import fs from 'fs'
import path from 'path'

export const INDEX_FILE = 'sealfs.index'
const SCHEMA_VERSION = 1

export interface DekRow {
  keyVersion: number
  wrapped: Buffer
  chunkWrites: number
}

/**
 * The SQLite index of wrapped DEKs, keyed by file ID. Each file's header carries the same
 * wrapped DEK, so the index can always be rebuilt from the files; the index is what lets
 * the master key be rotated by rewrapping rows instead of rewriting files, and it keeps
 * each DEK's chunk-write count.
 *
 * Writes are queued and applied in one transaction by flush() (on a timer, fsync and
 * unmount), so no file operation waits on SQLite. Rollback journal, not WAL: the cipher
 * dir may be on NFS, where WAL does not work. TRUNCATE keeps the journal file between
 * transactions: creating and deleting it would change the root directory's mtime.
 */
export class DekIndex {
  readonly #db: Database.Database
  readonly #pending = new Map<string, DekRow | null>()
  readonly #writes = new Map<string, number>()
  readonly #get: Database.Statement
  #write: { put: Database.Statement, del: Database.Statement, addWrites: Database.Statement } | null = null

  /** `readOnly`: opened read-only and never written (a read-only mount writes nothing to the cipher dir). */
  constructor (cipherDir: string, readonly volumeId: string, readonly readOnly = false) {
    const file = path.join(cipherDir, INDEX_FILE)
    if (readOnly) {
      this.#db = new Database(file, { readonly: true, fileMustExist: true })
      this.#db.pragma('busy_timeout = 10000')
      this.#get = this.#db.prepare('SELECT key_version AS keyVersion, wrapped, chunk_writes AS chunkWrites FROM deks WHERE file_id = ?')
      return
    }
    const fresh = !fs.existsSync(file)
    if (fresh) fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_WRONLY | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600))
    this.#db = new Database(file)
    this.#db.pragma('busy_timeout = 10000')
    this.#db.pragma('journal_mode = TRUNCATE')
    this.#db.pragma('synchronous = FULL')
    this.#db.pragma('secure_delete = ON')
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS volume (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS deks (
        file_id BLOB PRIMARY KEY,
        key_version INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        chunk_writes INTEGER NOT NULL DEFAULT 0
      ) WITHOUT ROWID;`)
    const meta = this.#db.prepare('SELECT value FROM volume WHERE key = ?')
    const stored = meta.get('volume_id') as { value: string } | undefined
    if (stored === undefined) {
      const ins = this.#db.prepare('INSERT INTO volume (key, value) VALUES (?, ?)')
      this.#db.transaction(() => { ins.run('schema_version', String(SCHEMA_VERSION)); ins.run('volume_id', volumeId) })()
    } else if (stored.value !== volumeId) {
      throw new Error('the DEK index belongs to another volume')
    }
    this.#get = this.#db.prepare('SELECT key_version AS keyVersion, wrapped, chunk_writes AS chunkWrites FROM deks WHERE file_id = ?')
    this.#write = {
      put: this.#db.prepare('INSERT INTO deks (file_id, key_version, wrapped) VALUES (?, ?, ?) ON CONFLICT(file_id) DO UPDATE SET key_version = excluded.key_version, wrapped = excluded.wrapped'),
      del: this.#db.prepare('DELETE FROM deks WHERE file_id = ?'),
      addWrites: this.#db.prepare('UPDATE deks SET chunk_writes = chunk_writes + ? WHERE file_id = ?')
    }
  }

  put (fileId: Buffer, keyVersion: number, wrapped: Buffer): void {
    this.#pending.set(fileId.toString('hex'), { keyVersion, wrapped, chunkWrites: 0 })
  }

  remove (fileId: Buffer): void {
    const id = fileId.toString('hex')
    this.#pending.set(id, null)
    this.#writes.delete(id)
  }

  countChunkWrites (fileId: Buffer, n: number): void {
    const id = fileId.toString('hex')
    this.#writes.set(id, (this.#writes.get(id) ?? 0) + n)
  }

  get (fileId: Buffer): DekRow | undefined {
    const id = fileId.toString('hex')
    const p = this.#pending.get(id)
    if (p === null) return undefined
    const row = p ?? (this.#get.get(fileId) as DekRow | undefined)
    if (row === undefined) return undefined
    return { ...row, chunkWrites: Number(row.chunkWrites) + (this.#writes.get(id) ?? 0) }
  }

  get dirty (): boolean {
    return this.#pending.size > 0 || this.#writes.size > 0
  }

  /** Applies all queued changes in one transaction. */
  flush (): void {
    const w = this.#write
    if (!this.dirty || w === null) return
    const pending = [...this.#pending]
    const writes = [...this.#writes]
    this.#pending.clear()
    this.#writes.clear()
    this.#db.transaction(() => {
      for (const [id, row] of pending) {
        const key = Buffer.from(id, 'hex')
        if (row === null) w.del.run(key)
        else w.put.run(key, row.keyVersion, row.wrapped)
      }
      for (const [id, n] of writes) w.addWrites.run(n, Buffer.from(id, 'hex'))
    })()
  }

  close (): void {
    this.flush()
    this.#db.close()
  }

  /** Number of files in the index of `cipherDir`, read without unlocking the volume. */
  static countFiles (cipherDir: string): number {
    const db = new Database(path.join(cipherDir, INDEX_FILE), { readonly: true, fileMustExist: true })
    try {
      return (db.prepare('SELECT count(*) AS n FROM deks').get() as { n: number }).n
    } finally {
      db.close()
    }
  }
}
