import Database from 'better-sqlite3'
import { parentPort, workerData } from 'worker_threads'

// The DEK index's writer, in a worker thread of its own (started by DekIndex): a flush is
// one SQLite transaction with synchronous=FULL, several fsyncs, and the daemon's JS thread
// must never wait on the disk for bookkeeping. A batch is applied whole or not at all.

export interface IndexBatch {
  id: number
  /** hex file ID → row to write, or null to delete */
  rows: Array<[string, { keyVersion: number, wrapped: Uint8Array } | null]>
  /** hex file ID → chunk writes to add */
  writes: Array<[string, number]>
}
export interface IndexBatchDone { id: number, error?: string }

const db = new Database((workerData as { file: string }).file)
db.pragma('busy_timeout = 10000')
db.pragma('journal_mode = TRUNCATE')
db.pragma('synchronous = FULL')
db.pragma('secure_delete = ON')
const put = db.prepare('INSERT INTO deks (file_id, key_version, wrapped) VALUES (?, ?, ?) ON CONFLICT(file_id) DO UPDATE SET key_version = excluded.key_version, wrapped = excluded.wrapped')
const del = db.prepare('DELETE FROM deks WHERE file_id = ?')
const addWrites = db.prepare('UPDATE deks SET chunk_writes = chunk_writes + ? WHERE file_id = ?')
const apply = db.transaction((batch: IndexBatch) => {
  for (const [id, row] of batch.rows) {
    const key = Buffer.from(id, 'hex')
    if (row === null) del.run(key)
    else put.run(key, row.keyVersion, Buffer.from(row.wrapped))
  }
  for (const [id, n] of batch.writes) addWrites.run(n, Buffer.from(id, 'hex'))
})

parentPort!.on('message', (batch: IndexBatch | 'close') => {
  if (batch === 'close') {
    db.close()
    parentPort!.close()
    return
  }
  let done: IndexBatchDone = { id: batch.id }
  try {
    apply(batch)
  } catch (e) {
    done = { id: batch.id, error: (e as Error).name + ': ' + (e as Error).message.split('\n')[0] }
  }
  parentPort!.postMessage(done)
})
