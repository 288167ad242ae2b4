// The comparison server for bench/mcp/bench.py: a minimal MCP server written with the official TypeScript SDK
// (@modelcontextprotocol/sdk 1.x, from tests/node_modules) doing what agentd's built-in `echo` does: one tool
// `echo` {text} answering its text, over Streamable HTTP (JSON responses, one session per initialize, as agentd).
//   node bench/mcp/ts_server.mjs PORT
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('../..', import.meta.url));
const sdk = (p) => import(pathToFileURL(join(root, 'tests/node_modules/@modelcontextprotocol/sdk/dist/esm', p)).href);
const { McpServer } = await sdk('server/mcp.js');
const { StreamableHTTPServerTransport } = await sdk('server/streamableHttp.js');
const { z } = await import(pathToFileURL(join(root, 'tests/node_modules/zod/index.js')).href);

const sessions = new Map();
function server() {
  const s = new McpServer({ name: 'bench-ts', version: '1.0.0' });
  s.registerTool('echo', { description: 'Answers its text', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }));
  return s;
}

const http = createServer(async (req, res) => {
  let body = '';
  for await (const c of req) body += c;
  const parsed = body ? JSON.parse(body) : undefined;
  const sid = req.headers['mcp-session-id'];
  let t = sid ? sessions.get(sid) : undefined;
  if (!t) {
    t = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), enableJsonResponse: true,
      onsessioninitialized: (id) => sessions.set(id, t) });
    await server().connect(t);
  }
  await t.handleRequest(req, res, parsed);
});
http.keepAliveTimeout = 60000;
http.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('listening'));
