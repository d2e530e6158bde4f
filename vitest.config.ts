import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Fails the run if the suite changed the host outside its temporary directories.
    globalSetup: ['test/host-guard.ts'],
    // FUSE mounts, daemons and fixed mount points: one file at a time keeps them independent.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000
  }
})
