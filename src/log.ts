// One place for daemon log lines. Callers pass only non-secret facts: file IDs, chunk
// indexes, errno codes. Never names, paths, plaintext or key material.

let sink: (line: string) => void = line => { process.stderr.write(line + '\n') }

export function setLogSink (fn: (line: string) => void): void {
  sink = fn
}

export function logLine (message: string): void {
  sink(`sealfs[${process.pid}]: ${message}`)
}
