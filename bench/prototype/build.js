#!/usr/bin/env node
// Builds the issue-12 prototype binding (bench/prototype/build/Release/ll_proto.node); not part of npm ci.
'use strict'
const { execFileSync } = require('child_process')
const path = require('path')
const env = { ...process.env, npm_config_nodedir: process.env.npm_config_nodedir ?? path.resolve(path.dirname(process.execPath), '..') }
const gyp = path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')
execFileSync(process.execPath, [gyp, 'rebuild', '--release'], { cwd: __dirname, env, stdio: ['ignore', 'ignore', 'inherit'] })
