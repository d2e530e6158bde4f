/**
 * A line on the terminal while something long runs that reports no progress of its own (an
 * Argon2id derivation, a detached daemon unlocking): what is being done and for how long. Only
 * where standard error is a terminal, and only after half a second (a quick step shows
 * nothing); the line is cleared when it ends.
 */
const FIRST_MS = 500
const EVERY_MS = 1000

let shown: { clear: () => void } | null = null

/** Clears the progress line, if one is shown, before other output goes to the terminal. */
export function clearProgress (): void {
  shown?.clear()
}

export async function withProgress<T> (doing: string, work: Promise<T>): Promise<T> {
  if (process.stderr.isTTY !== true) return await work
  const started = Date.now()
  let visible = false
  const draw = (): void => {
    process.stderr.write(`\r\x1b[Ksealfs: ${doing}... ${Math.round((Date.now() - started) / 1000)} s`)
    visible = true
  }
  const line = { clear: () => { if (visible) { process.stderr.write('\r\x1b[K'); visible = false } } }
  shown = line
  let timer: NodeJS.Timeout | null = setTimeout(() => { draw(); timer = setInterval(draw, EVERY_MS) }, FIRST_MS)
  try {
    return await work
  } finally {
    if (timer !== null) { clearTimeout(timer); clearInterval(timer) }
    line.clear()
    if (shown === line) shown = null
  }
}
