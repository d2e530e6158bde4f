#!/usr/bin/env node
// Builds sealfs's native parts against Node's own headers (no downloads):
//   native-deps/build/Release/{chunk_cipher,posix}.node  our addons
//   build/fuse-native/                                   fuse-native 2.2.6 from source, with our patch
'use strict'
const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.resolve(__dirname, '..')
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

function buildFuseNative () {
  const upstream = path.dirname(require.resolve('fuse-native/package.json', { paths: [root] }))
  const version = JSON.parse(fs.readFileSync(path.join(upstream, 'package.json'), 'utf8')).version
  if (version !== '2.2.6') throw new Error(`native-deps/fuse-native.patch is for fuse-native 2.2.6, found ${version}`)
  const out = path.join(root, 'build', 'fuse-native')
  fs.rmSync(out, { recursive: true, force: true })
  fs.mkdirSync(out, { recursive: true })
  for (const f of ['fuse-native.c', 'index.js', 'semaphore.h', 'package.json']) fs.copyFileSync(path.join(upstream, f), path.join(out, f))
  fs.copyFileSync(path.join(__dirname, 'fuse-native', 'binding.gyp'), path.join(out, 'binding.gyp'))
  execFileSync('patch', ['-p1', '--quiet', '--input', path.join(__dirname, 'fuse-native', 'fuse-native.patch')], { cwd: out, stdio: 'inherit' })
  gyp(out)
}

gyp(__dirname)
buildFuseNative()
