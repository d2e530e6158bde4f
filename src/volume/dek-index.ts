import Database from 'better-sqlite3'
import fs from 'fs'
import path from 'path'
import { Worker } from 'worker_threads'
import type { IndexBatch, IndexBatchDone } from './index-writer'

export const INDEX_FILE = 'sealfs.index'
const SCHEMA_VERSION = 1

export interface DekRow {
  keyVersion: number
  wrapped: Buffer
  chunkWrites: number
}

/** The index's tables, made if missing; throws if the index is another volume's. */
function createSchema (db: Database.Database, volumeId: string): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS volume (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS deks (
      file_id BLOB PRIMARY KEY,
      key_version INTEGER NOT NULL,
      wrapped BLOB NOT NULL,
      chunk_writes INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;`)
  const stored = db.prepare('SELECT value FROM volume WHERE key = ?').get('volume_id') as { value: string } | undefined
  if (stored === undefined) {
    const ins = db.prepare('INSERT INTO volume (key, value) VALUES (?, ?)')
    db.transaction(() => { ins.run('schema_version', String(SCHEMA_VERSION)); ins.run('volume_id', volumeId) })()
  } else if (stored.value !== volumeId) {
    throw new Error('the DEK index belongs to another volume')
  }
}

/**
 * The SQLite index of wrapped DEKs, keyed by file ID. Each file's header carries the same
 * wrapped DEK, so the index can always be rebuilt from the files; the index is what lets
 * the master key be rotated by rewrapping rows instead of rewriting files, and it keeps
 * each DEK's chunk-write count.
 *
 * Writes are queued and applied in one transaction by flush() (on a timer and at close),
 * in a worker thread (index-writer.ts): no file operation waits on SQLite, and the JS thread
 * never waits for its fsyncs. Reads see queued and in-flight rows first. Rollback journal,
 * not WAL: the cipher dir may be on NFS, where WAL does not work. TRUNCATE keeps the journal
 * file between transactions: creating and deleting it would change the root directory's mtime.
 */
export class DekIndex {
  /** Null for a read-only mount of a volume whose index is missing or damaged (reads need it only for old headers). */
  readonly #db: Database.Database | null
  readonly #pending = new Map<string, DekRow | null>()
  readonly #writes = new Map<string, number>()
  /** Batches handed to the writer and not yet committed: still what reads must see. */
  readonly #inFlight = new Map<number, IndexBatch>()
  readonly #get: Database.Statement | null
  #writer: Worker | null = null
  #nextBatch = 1
  #closed: Promise<void> | null = null
  /** A flush has failed and none has succeeded since (said once, not at every retry). */
  #failing = false
  /** Where a failed flush is reported (the batch is queued again). */
  onError: (message: string) => void = () => undefined

  /** `readOnly`: opened read-only and never written (a read-only mount writes nothing to the cipher dir). */
  /** `cipherDir` null: no index at all (read-only, see #db). */
  constructor (cipherDir: string | null, readonly volumeId: string, readonly readOnly = false) {
    if (cipherDir === null) {
      this.#db = null
      this.#get = null
      this.readOnly = true
      return
    }
    const file = path.join(cipherDir, INDEX_FILE)
    if (readOnly) {
      const db = new Database(file, { readonly: true, fileMustExist: true })
      try {
        db.pragma('busy_timeout = 10000')
        this.#get = db.prepare('SELECT key_version AS keyVersion, wrapped, chunk_writes AS chunkWrites FROM deks WHERE file_id = ?')
      } catch (e) {
        db.close()
        throw e
      }
      this.#db = db
      return
    }
    const fresh = !fs.existsSync(file)
    if (fresh) fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_WRONLY | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600))
    const db = new Database(file)
    try {
      db.pragma('busy_timeout = 10000')
      db.pragma('journal_mode = TRUNCATE')
      db.pragma('synchronous = FULL')
      db.pragma('secure_delete = ON')
      createSchema(db, volumeId)
    } catch (e) {
      db.close()  // a damaged index: the caller moves it aside
      throw e
    }
    this.#db = db
    this.#get = db.prepare('SELECT key_version AS keyVersion, wrapped, chunk_writes AS chunkWrites FROM deks WHERE file_id = ?')
    const writer = new Worker(path.join(__dirname, 'index-writer.js'), { workerData: { file } })
    writer.on('message', (done: IndexBatchDone) => this.#committed(done))
    writer.on('error', e => this.onError(`index writer: ${e.name}`))
    // A writer that is gone commits nothing more: its batch in flight is queued again (kept
    // for reads, and for fsck's sake counted at close), and nothing waits for it.
    writer.on('exit', () => {
      this.#writer = null
      for (const batch of this.#inFlight.values()) this.#requeue(batch)
      this.#inFlight.clear()
      this.#wakeDrained()
      if (this.#closed === null) this.onError('index writer ended; the index is no longer written until the next mount')
    })
    this.#writer = writer
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
    let row: DekRow | null | undefined = this.#pending.get(id)
    let writes = this.#writes.get(id) ?? 0
    // In-flight batches, newest first: the newest row wins; chunk writes add up.
    for (const batch of [...this.#inFlight.values()].reverse()) {
      writes += batch.writes.find(([k]) => k === id)?.[1] ?? 0
      if (row !== undefined) continue
      const r = batch.rows.find(([k]) => k === id)
      if (r !== undefined) row = r[1] === null ? null : { keyVersion: r[1].keyVersion, wrapped: Buffer.from(r[1].wrapped), chunkWrites: 0 }
    }
    if (row === null) return undefined
    const committed = this.#get?.get(fileId) as DekRow | undefined
    row ??= committed
    if (row === undefined) return undefined
    // A queued put keeps the committed count (the upsert leaves chunk_writes as it is): the
    // rewrap that sets the sparse flag must not start the nonce count again.
    return { ...row, chunkWrites: Number(committed?.chunkWrites ?? 0) + writes }
  }

  /** Every row's file ID and key version, as committed (what fsck compares with the files). */
  rowVersions (): Array<{ fileId: Buffer, keyVersion: number }> {
    return (this.#db?.prepare('SELECT file_id AS fileId, key_version AS keyVersion FROM deks').all() ?? []) as Array<{ fileId: Buffer, keyVersion: number }>
  }

  get dirty (): boolean {
    return this.#pending.size > 0 || this.#writes.size > 0
  }

  /** Hands all queued changes to the writer, to be applied in one transaction. Never waits. */
  flush (): void {
    if (this.#closed === null) this.#send()
  }

  /**
   * One batch at a time: a batch that fails is queued again under what changed since, and no
   * later batch may have committed meanwhile (its rows would be older than those).
   */
  #send (): void {
    if (!this.dirty || this.#writer === null || this.#inFlight.size > 0) return
    const batch: IndexBatch = { id: this.#nextBatch++, rows: [...this.#pending], writes: [...this.#writes] }
    this.#pending.clear()
    this.#writes.clear()
    this.#inFlight.set(batch.id, batch)
    this.#writer.postMessage(batch)
  }

  #committed (done: IndexBatchDone): void {
    const batch = this.#inFlight.get(done.id)
    this.#inFlight.delete(done.id)
    try {
      if (batch !== undefined) this.#settle(batch, done)
    } finally {
      this.#wakeDrained()
    }
  }

  readonly #drainWaiters: Array<() => void> = []

  #wakeDrained (): void {
    if (this.#inFlight.size === 0) for (const wake of this.#drainWaiters.splice(0)) wake()
  }

  /** Resolves when no batch is in flight. */
  #drained (): Promise<void> {
    return this.#inFlight.size === 0 ? Promise.resolve() : new Promise(resolve => this.#drainWaiters.push(resolve))
  }

  #settle (batch: IndexBatch, done: IndexBatchDone): void {
    if (done.error === undefined) {
      if (this.#failing) this.onError('index written again: the changes it could not write are in it now')
      this.#failing = false
      return
    }
    this.#requeue(batch)
    if (!this.#failing) this.onError(`index flush failed (${done.error}); kept, and tried again every second`)
    this.#failing = true
  }

  /**
   * Hands what is queued to the writer and waits, at most `ms`, for it to be committed, the
   * connection left open (an exit on a stalled store, where closing it could block).
   */
  async settle (ms: number): Promise<void> {
    const done = (async () => {
      await this.#drained()
      this.#send()
      await this.#drained()
    })()
    await Promise.race([done, new Promise(resolve => setTimeout(resolve, ms).unref())])
  }

  /** A batch not applied: queued again under anything newer, for the next flush. */
  #requeue (batch: IndexBatch): void {
    for (const [id, row] of batch.rows) if (!this.#pending.has(id)) this.#pending.set(id, row === null ? null : { ...row, wrapped: Buffer.from(row.wrapped), chunkWrites: 0 })
    for (const [id, n] of batch.writes) if (this.#pending.get(id) !== null) this.#writes.set(id, (this.#writes.get(id) ?? 0) + n)
  }

  /** Flushes what is queued, waits until the writer has committed everything, and closes. */
  close (): Promise<void> {
    if (this.#closed !== null) return this.#closed
    this.#closed = (async () => {
      if (this.#writer !== null) {
        // The batch in flight, then what is left; a failed one is tried once more.
        for (let attempt = 0; attempt < 2; attempt++) {
          await this.#drained()
          this.#send()
        }
        await this.#drained()
        const writer = this.#writer
        if (writer !== null) {
          await new Promise<void>(resolve => {
            writer.once('exit', () => resolve())
            writer.postMessage('close')
          })
        }
      }
      if (this.dirty) {
        // The last flush failed too (a full disk, say): the headers still hold every DEK.
        this.onError(`${this.#pending.size} index rows could not be written before the index was closed; 'sealfs fsck --repair' writes them from the files' headers`)
      }
      this.#db?.close()
    })()
    return this.#closed
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

/** A row a rotation writes; `chunkWrites` only for a new DEK (re-encryption), whose count starts again. */
export interface RewrappedRow { fileId: Buffer, keyVersion: number, wrapped: Buffer, chunkWrites?: number }

/**
 * The index as a key rotation rewrites it, with no mount running: rows rewrapped a batch at
 * a time, each batch one transaction on this thread (a rotation has nothing else to do
 * meanwhile). A row keeps its chunk-write count: the DEK, and so its nonce budget, is the same.
 */
export class DekIndexRewrite {
  readonly #db: Database.Database
  readonly #get: Database.Statement
  readonly #apply: (rows: RewrappedRow[]) => void

  /** Opens the index as a mount would, making it (empty) if it is missing: the walk fills it from the headers. */
  constructor (cipherDir: string, volumeId: string) {
    const file = path.join(cipherDir, INDEX_FILE)
    let fd: number
    let made = false
    try {
      try {
        fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600)
        made = true
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
        fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
      }
    } catch (e) {
      throw new Error(`cannot open it (${(e as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    try {
      if (!fs.fstatSync(fd).isFile()) throw new Error('it is not a regular file')
      // Made by root for a user's volume: the user's mounts must still write it.
      if (made && process.geteuid?.() === 0) {
        const owner = fs.statSync(cipherDir)
        fs.fchownSync(fd, owner.uid, owner.gid)
      }
    } finally {
      fs.closeSync(fd)
    }
    this.#db = new Database(file, { fileMustExist: true })
    try {
      this.#db.pragma('busy_timeout = 10000')
      this.#db.pragma('journal_mode = TRUNCATE')
      this.#db.pragma('synchronous = FULL')
      this.#db.pragma('secure_delete = ON')
      createSchema(this.#db, volumeId)
    } catch (e) {
      this.#db.close()
      throw e
    }
    this.#get = this.#db.prepare('SELECT key_version AS keyVersion, wrapped FROM deks WHERE file_id = ?')
    const put = this.#db.prepare('INSERT INTO deks (file_id, key_version, wrapped) VALUES (?, ?, ?) ON CONFLICT(file_id) DO UPDATE SET key_version = excluded.key_version, wrapped = excluded.wrapped')
    const putNew = this.#db.prepare('INSERT INTO deks (file_id, key_version, wrapped, chunk_writes) VALUES (?, ?, ?, ?) ON CONFLICT(file_id) DO UPDATE SET key_version = excluded.key_version, wrapped = excluded.wrapped, chunk_writes = excluded.chunk_writes')
    this.#apply = this.#db.transaction((rows: RewrappedRow[]) => {
      for (const r of rows) {
        if (r.chunkWrites === undefined) put.run(r.fileId, r.keyVersion, r.wrapped)
        else putNew.run(r.fileId, r.keyVersion, r.wrapped, r.chunkWrites)
      }
    })
  }

  /** Whether the index holds exactly this wrapped DEK for the file (chunk-write counts aside). */
  holds (row: RewrappedRow): boolean {
    const have = this.#get.get(row.fileId) as { keyVersion: number, wrapped: Buffer } | undefined
    return have !== undefined && have.keyVersion === row.keyVersion && Buffer.compare(have.wrapped, row.wrapped) === 0
  }

  /** The master-key version of the file's row, if it has one. */
  versionOf (fileId: Buffer): number | undefined {
    return (this.#get.get(fileId) as { keyVersion: number } | undefined)?.keyVersion
  }

  /** Writes the rows in one transaction (committed and synced when this returns). */
  put (rows: RewrappedRow[]): void {
    if (rows.length > 0) this.#apply(rows)
  }

  /** The rows still wrapped under master-key version `keyVersion`. */
  rowsAt (keyVersion: number): RewrappedRow[] {
    return this.#db.prepare('SELECT file_id AS fileId, key_version AS keyVersion, wrapped FROM deks WHERE key_version = ?').all(keyVersion) as RewrappedRow[]
  }

  /** Deletes rows (that no key opens) in one transaction. */
  remove (fileIds: Buffer[]): void {
    const del = this.#db.prepare('DELETE FROM deks WHERE file_id = ?')
    this.#db.transaction(() => { for (const id of fileIds) del.run(id) })()
  }

  close (): void {
    this.#db.close()
  }
}
