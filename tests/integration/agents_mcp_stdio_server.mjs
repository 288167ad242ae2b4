// An MCP server over stdio built with the official @modelcontextprotocol/sdk (McpServer + StdioServerTransport),
// for agents_mcp_stdio.test.mjs. Every message it receives is appended (one JSON line) to $MCP_LOG, so the test
// can see what agentd sent (initialize, notifications/cancelled, ...).
import { appendFileSync } from 'node:fs';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { z } from 'zod';

const log = process.env.MCP_LOG;
const s = new McpServer({ name: 'agentd-stdio-test', version: '1.0.0' });
s.registerTool('add', { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
  async ({ a, b }) => ({ content: [{ type: 'text', text: `sum=${a + b} greeting=${process.env.GREETING}` }] }));
s.registerTool('pid', { description: 'The process id', inputSchema: {} },
  async () => ({ content: [{ type: 'text', text: String(process.pid) }] }));
s.registerTool('die', { description: 'Exits', inputSchema: {} }, async () => { process.exit(3); });
s.registerTool('fail', { description: 'Always fails', inputSchema: {} }, async () => {
  throw new Error('the disk is on fire');
});
s.registerTool('slow', { description: 'Answers after ms', inputSchema: { ms: z.number() } }, async ({ ms }) => {
  await new Promise((r) => setTimeout(r, ms));
  return { content: [{ type: 'text', text: 'slept' }] };
});
s.registerTool('noisy', { description: 'Writes n lines to stderr', inputSchema: { n: z.number() } }, async ({ n }) => {
  for (let i = 0; i < n; i++) process.stderr.write(`noise line ${i} ${'x'.repeat(i === 0 ? 2000 : 10)}\n`);
  return { content: [{ type: 'text', text: 'noisy' }] };
});
const transport = new StdioServerTransport();
await s.connect(transport);
const orig = transport.onmessage;
transport.onmessage = (m, extra) => {
  if (log) appendFileSync(log, JSON.stringify(m) + '\n');
  orig(m, extra);
};
