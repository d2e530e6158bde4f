#!/usr/bin/env node
// Builds sealfs's native parts against Node's own headers (no downloads):
//   native-deps/build/Release/{chunk_cipher,name_cipher,posix,backing,fuse_session}.node
// fuse_session links Debian's libfuse 3 (libfuse3-dev, found with pkg-config).
'use strict'
const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const env = { ...process.env }
// npm passes nodedir to scripts; a direct `node native-deps/build.js` must not download headers either.
if (!env.npm_config_nodedir) env.npm_config_nodedir = path.resolve(path.dirname(process.execPath), '..')

function nodeGyp () {
  if (env.npm_config_node_gyp && fs.existsSync(env.npm_config_node_gyp)) return env.npm_config_node_gyp
  const bundled = path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')
  if (fs.existsSync(bundled)) return bundled
  return require.resolve('node-gyp/bin/node-gyp.js')
}

function gyp (cwd) {
  execFileSync(process.execPath, [nodeGyp(), 'rebuild', '--release'], { cwd, env, stdio: ['ignore', 'ignore', 'inherit'] })
}

gyp(__dirname)
