// The official MCP conformance suite's *client* scenarios (@modelcontextprotocol/conformance 0.2.0-alpha.12, issue
// 12 item 5) against agentd's MCP client (src/agent/mcp_client.c, what agents and the /mcp gateway use for upstream
// servers), with the suite's `--requirements` selections for both revisions. Per scenario the suite starts a test
// MCP server and runs `agentd mcp-client-conformance <url>` (src/agent/mcp_conformance_client.c), which drives the
// client through the requests that scenario exercises; the client negotiates the era itself.
//
// What is asserted, per revision: the exact set of scored scenario names the suite ran (a scenario missing or new
// fails the test), the exact set of those that pass, and the same for the scenarios the suite runs but does not
// score. The scenarios that need an OAuth authorization server (auth/*) run and fail: agentd's MCP client does not
// do OAuth (docs/mcp.md); they are listed here so that a new or vanished one is noticed. No client run may leave
// a sanitizer report (the suite saves each run's stderr).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { installSuite, runSuite } from '../lib/mcp_conformance.mjs';

const BIN = process.env.AGENTD_BIN || join(process.env.AGENTD_BUILD || 'build', 'agentd');

const AUTH = {
  '2025-11-25': ["auth/basic-cimd", "auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3", "auth/pre-registration", "auth/scope-from-scopes-supported", "auth/scope-from-www-authenticate", "auth/scope-omitted-when-undefined", "auth/scope-retry-limit", "auth/scope-step-up", "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-none", "auth/token-endpoint-auth-post"],
  '2026-07-28': ["auth/authorization-server-migration", "auth/basic-cimd", "auth/iss-normalized", "auth/iss-not-advertised", "auth/iss-supported", "auth/iss-supported-missing", "auth/iss-unexpected", "auth/iss-wrong-issuer", "auth/metadata-default", "auth/metadata-issuer-mismatch", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3", "auth/offline-access-not-supported", "auth/offline-access-scope", "auth/pre-registration", "auth/resource-mismatch", "auth/scope-from-scopes-supported", "auth/scope-from-www-authenticate", "auth/scope-omitted-when-undefined", "auth/scope-retry-limit", "auth/scope-step-up", "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-none", "auth/token-endpoint-auth-post"],
};
const AUTH_EXTENSIONS = ["auth/client-credentials-basic", "auth/client-credentials-jwt", "auth/dpop", "auth/dpop-nonce", "auth/enterprise-managed-authorization", "auth/wif-jwt-bearer"];

const EXPECT = {
  '2025-11-25': {
    passing: ["elicitation-sep1034-client-defaults", "initialize", "sse-retry", "tools_call"],
    notScoredPassing: ["json-schema-2020-12-preservation"],
  },
  '2026-07-28': {
    passing: ["http-custom-headers", "http-invalid-tool-headers", "http-standard-headers", "json-schema-ref-no-deref", "request-metadata", "sep-2322-client-request-state", "tools_call"],
    notScoredPassing: ["json-schema-2020-12-preservation"],
  },
};

before(() => installSuite());

for (const revision of Object.keys(EXPECT)) {
  test(`conformance ${revision}: the required client scenarios, and which of them pass`, { timeout: 300000 }, async () => {
    const out = mkdtempSync(join(tmpdir(), `agentd-mcp-client-${revision}-`));
    try {
      const { results, notScored, summary } = await runSuite(['client', '--command', `${BIN} mcp-client-conformance`,
        '--requirements', revision, '-o', out]);
      const want = EXPECT[revision];
      assert.deepEqual(Object.keys(results).sort(), [...want.passing, ...AUTH[revision]].sort(), summary);
      assert.deepEqual(Object.keys(results).filter((k) => results[k]).sort(), want.passing, summary);
      assert.deepEqual(Object.keys(notScored).sort(), [...want.notScoredPassing, ...AUTH_EXTENSIONS].sort(), summary);
      assert.deepEqual(Object.keys(notScored).filter((k) => notScored[k]).sort(), want.notScoredPassing, summary);
      const runs = readdirSync(out, { recursive: true }).filter((f) => f.endsWith('stderr.txt'));
      assert.equal(runs.length, Object.keys(results).length + Object.keys(notScored).length, runs.join('\n'));
      for (const f of runs) {
        const err = readFileSync(join(out, f), 'utf8');
        assert.doesNotMatch(err, /Sanitizer|runtime error/, `${f}:\n${err.slice(-3000)}`);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
}
