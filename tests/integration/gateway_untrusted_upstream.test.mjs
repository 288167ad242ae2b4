// Gateway against broken or hostile upstreams (issue 15 items 2 and 3), each provider in its own wire format,
// through both front doors, streamed and not.
//  - Usage: an upstream reporting 1e300, -5, 1.5 or "12" tokens is "usage not reported": nothing absurd or negative
//    is billed, agent_tokens_used_total and the cost counter never go down, agentd_gateway_usage_invalid_total
//    counts each response once, and one warning per deployment is logged.
//  - Keys: an upstream 401/403 whose message quotes agentd's key reaches the client as a 502 naming an upstream
//    authentication failure at the deployment, and no piece of the key is in the response or in the log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const BR_MODEL = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const DEPS = {
  oa: 'openai:gpt-4o-mini',
  an: 'anthropic:claude-haiku-4-5',
  gm: 'gemini:gemini-2.0-flash',
  br: `bedrock:${BR_MODEL}`,
};
const KEYS = {
  oa: FAKE_KEYS.openai,
  an: FAKE_KEYS.anthropic,
  gm: FAKE_KEYS.gemini,
  br: FAKE_KEYS.bedrock.secretAccessKey,
};

let d, fakes;

before(async () => {
  fakes = {
    oa: await startFake({ provider: 'openai' }),
    an: await startFake({ provider: 'anthropic' }),
    gm: await startFake({ provider: 'gemini' }),
    br: await startFake({ provider: 'bedrock' }),
  };
  d = await startAgentd({
    env: { AWS_ACCESS_KEY_ID: FAKE_KEYS.bedrock.accessKeyId, AWS_SECRET_ACCESS_KEY: FAKE_KEYS.bedrock.secretAccessKey },
    config: `
gateway:
  first_byte_timeout: 5s
models:
  - name: oa
    provider: openai
    model: gpt-4o-mini
    base_url: ${fakes.oa.urls.openai}
    api_key: ${KEYS.oa}
  - name: an
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${fakes.an.url}
    api_key: ${KEYS.an}
  - name: gm
    provider: gemini
    model: gemini-2.0-flash
    base_url: ${fakes.gm.url}
    api_key: ${KEYS.gm}
  - name: br
    provider: bedrock
    model: ${BR_MODEL}
    base_url: ${fakes.br.url}
    region: us-east-1
prices:
  gpt-4o-mini: {input: 1.0, output: 2.0}
  claude-haiku-4-5: {input: 1.0, output: 5.0}
  gemini-2.0-flash: {input: 0.1, output: 0.4}
  ${BR_MODEL}: {input: 0.8, output: 4.0}
`,
  });
});

after(async () => {
  const r = await d.stop();
  await Promise.all(Object.values(fakes).map((f) => f.close()));
  assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-4000)}`);
});

function request(front, model, stream, content = 'one two three') {
  if (front === 'openai') {
    const body = { model, messages: [{ role: 'user', content }] };
    if (stream) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
    return d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  }
  const body = { model, max_tokens: 50, messages: [{ role: 'user', content }] };
  if (stream) body.stream = true;
  return d.fetch('/v1/messages', { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }, body: JSON.stringify(body) });
}

// Sum of every sample of a counter family (all label sets), or of the samples whose labels contain `match`.
async function scrape() {
  const res = await d.opsFetch('/metrics');
  assert.equal(res.status, 200);
  const text = await res.text();
  return (name, match = '') => {
    let sum = 0;
    for (const line of text.split('\n')) {
      if (!(line.startsWith(name + '{') || line.startsWith(name + ' ')) || !line.includes(match)) continue;
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  };
}

// The token counts a client sees in a body: OpenAI usage / chunks, Anthropic message / events.
function reportedCounts(text) {
  const nums = [];
  for (const m of text.matchAll(/"(prompt_tokens|completion_tokens|total_tokens|input_tokens|output_tokens)":\s*(-?[0-9.eE+]+)/g)) nums.push(Number(m[2]));
  return nums;
}

test('a valid usage is billed (the scrape sees it: the checks below are not vacuous)', async () => {
  const m0 = await scrape();
  for (const model of Object.keys(DEPS)) {
    const res = await request('openai', model, false);
    assert.equal(res.status, 200, model);
    await res.text();
    assert.ok(Number(res.headers.get('x-agentd-input-tokens')) > 0, model);
    assert.ok(Number(res.headers.get('x-agentd-cost-usd')) > 0, `${model}: ${res.headers.get('x-agentd-cost-usd')}`);
  }
  const m1 = await scrape();
  assert.ok(m1('agent_tokens_used_total') > m0('agent_tokens_used_total'));
  assert.ok(m1('agentd_gateway_cost_usd_total') > m0('agentd_gateway_cost_usd_total'));
  assert.equal(m1('agentd_gateway_usage_invalid_total'), m0('agentd_gateway_usage_invalid_total'));
});

test('implausible usage (1e300, -5, 1.5, "12") is "not reported" on every provider, path and front', async () => {
  let before = await scrape();
  for (const value of [1e300, -5, 1.5, '12']) {
    for (const model of Object.keys(DEPS)) {
      for (const front of ['openai', 'anthropic']) {
        for (const stream of [false, true]) {
          const what = `${JSON.stringify(value)} ${model} ${front} ${stream ? 'stream' : 'complete'}`;
          fakes[model].script([{ usageTokens: value }]);
          const res = await request(front, model, stream);
          const text = await res.text();
          assert.equal(res.status, 200, `${what}: ${text}`);
          assert.equal(fakes[model].pending(), 0, `${what}: the fake was not asked`);
          const cost = res.headers.get('x-agentd-cost-usd');
          if (cost !== null && cost !== 'unknown') {
            assert.ok(Number.isFinite(Number(cost)) && Number(cost) >= 0 && Number(cost) < 0.01, `${what}: cost ${cost}`);
          }
          for (const h of ['x-agentd-input-tokens', 'x-agentd-output-tokens']) {
            if (res.headers.get(h) !== null) assert.equal(res.headers.get(h), '0', `${what}: ${h}`);
          }
          // a translated response carries agentd's numbers: never the upstream's absurd ones, never negative
          const passthrough = (front === 'openai' && model === 'oa') || (front === 'anthropic' && model === 'an');
          if (!passthrough) {
            for (const n of reportedCounts(text)) assert.ok(Number.isInteger(n) && n >= 0 && n < 1e7, `${what}: ${n} in ${text}`);
          }
          const after = await scrape();
          for (const fam of ['agent_tokens_used_total', 'agentd_gateway_cost_usd_total']) {
            assert.ok(after(fam) >= before(fam), `${what}: ${fam} went down ${before(fam)} -> ${after(fam)}`);
            assert.ok(after(fam) - before(fam) < 1, `${what}: ${fam} jumped ${before(fam)} -> ${after(fam)}`);
          }
          assert.equal(after('agent_tokens_used_total'), before('agent_tokens_used_total'), `${what}: tokens billed`);
          const label = `deployment="${DEPS[model]}"`;
          assert.equal(after('agentd_gateway_usage_invalid_total', label) - before('agentd_gateway_usage_invalid_total', label), 1,
            `${what}: agentd_gateway_usage_invalid_total`);
          before = after;
        }
      }
    }
  }
  // one warning per deployment, however many responses
  for (const dep of Object.values(DEPS)) {
    const lines = d.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('not a plausible token count') && l.deployment === dep);
    assert.equal(lines.length, 1, `${dep}: ${lines.length} warnings`);
    assert.equal(lines[0].level, 'warn');
  }
});

// Every piece of 8 bytes or more of the secret: none may appear.
function leaks(secret, text) {
  const found = [];
  for (let i = 0; i + 8 <= secret.length; i++) if (text.includes(secret.slice(i, i + 8))) found.push(secret.slice(i, i + 8));
  return found;
}

const truncated = (k) => `${k.slice(0, 10)}...${k.slice(-8)}`;
const AUTH_BODIES = {
  oa: [{ status: 401, body: { error: { message: `Incorrect API key provided: ${KEYS.oa} (${truncated(KEYS.oa)}). You can find your API key at https://platform.openai.com/account/api-keys.`, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } } }],
  an: [{ status: 401, body: { type: 'error', error: { type: 'authentication_error', message: `invalid x-api-key ${KEYS.an} / ${truncated(KEYS.an)}` }, request_id: 'req_1' } }],
  gm: [
    { status: 401, body: { error: { code: 401, message: `API key ${KEYS.gm} is not valid (${truncated(KEYS.gm)})`, status: 'UNAUTHENTICATED' } } },
    { status: 400, body: { error: { code: 400, message: `API key not valid: ${KEYS.gm}`, status: 'INVALID_ARGUMENT', details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' }] } } },
  ],
  br: [{ status: 403, headers: { 'x-amzn-ErrorType': 'UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/' }, body: { message: `The security token included in the request is invalid: ${FAKE_KEYS.bedrock.accessKeyId} ${KEYS.br} (${truncated(KEYS.br)})` } },
    { status: 401, body: { message: `Bad credentials ${KEYS.br}` } }],
};

test('an upstream 401/403 quoting the key: the client gets a 502 naming the deployment, no key bytes anywhere', async () => {
  for (const model of Object.keys(DEPS)) {
    for (const behavior of AUTH_BODIES[model]) {
      for (const front of ['openai', 'anthropic']) {
        for (const stream of [false, true]) {
          const what = `${model} ${behavior.status} ${front} ${stream ? 'stream' : 'complete'}`;
          fakes[model].script([behavior]);
          const res = await request(front, model, stream);
          const text = await res.text();
          assert.equal(fakes[model].pending(), 0, `${what}: the fake was not asked`);
          assert.equal(res.status, 502, `${what}: ${text}`);
          const j = JSON.parse(text);
          if (front === 'openai') {
            assert.equal(j.error.type, 'server_error', what);
            assert.equal(j.error.code, 'upstream_authentication_failed', what);
          } else {
            assert.equal(j.type, 'error');
            assert.equal(j.error.type, 'api_error', what);
          }
          assert.match(j.error.message, new RegExp(`upstream authentication failed at deployment ${DEPS[model].replace(/[.:]/g, '\\$&')}`), what);
          assert.match(j.error.message, /\[REDACTED\]/, `${what}: the upstream's own words are kept, scrubbed`);
          const heads = [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
          for (const secret of [KEYS[model], FAKE_KEYS.bedrock.accessKeyId]) {
            assert.deepEqual(leaks(secret, text), [], `${what}: key bytes in the body ${text}`);
            assert.deepEqual(leaks(secret, heads), [], `${what}: key bytes in the headers`);
          }
        }
      }
    }
  }
});

test('a mid-stream error quoting the key is scrubbed too', async () => {
  fakes.oa.script([{ midStreamError: { type: 'server_error', message: `upstream proxy: key ${KEYS.oa} rejected` }, chunks: 6 }]);
  const res = await request('anthropic', 'oa', true, 'one two three four five six seven eight');
  const text = await res.text();
  assert.equal(res.status, 200);
  assert.match(text, /event: error/);
  assert.match(text, /\[REDACTED\]/);
  assert.deepEqual(leaks(KEYS.oa, text), []);
});

test('nothing of any key reached the log', async () => {
  // the log did see the failures (so this is not vacuous) ...
  assert.ok(d.logs.some((l) => typeof l.error === 'string' && l.error.includes('upstream authentication failed')), d.rawStderr.slice(-2000));
  // ... and none of the secrets
  for (const secret of [...Object.values(KEYS), FAKE_KEYS.bedrock.accessKeyId]) {
    assert.deepEqual(leaks(secret, d.rawStderr), [], `key bytes in the log:\n${d.rawStderr.slice(-3000)}`);
  }
});

test('gateway.max_usage_tokens is the bound: up to it a count is billed, past it the usage is not reported', async () => {
  const oa = await startFake({ provider: 'openai' });
  const d2 = await startAgentd({
    config: `
gateway:
  max_usage_tokens: 1000
models:
  - name: oa
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key: ${KEYS.oa}
prices:
  gpt-4o-mini: {input: 1.0, output: 2.0}
`,
  });
  try {
    const post = () => d2.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'oa', messages: [{ role: 'user', content: 'x' }] }) });
    oa.script([{ usageTokens: 1000 }]);
    let res = await post();
    await res.text();
    assert.equal(res.headers.get('x-agentd-input-tokens'), '1000');
    assert.equal(res.headers.get('x-agentd-output-tokens'), '1000');
    assert.equal(res.headers.get('x-agentd-cost-usd').replace(/0+$/, ''), '0.003');
    oa.script([{ usageTokens: 1001 }]);
    res = await post();
    await res.text();
    assert.equal(res.headers.get('x-agentd-input-tokens'), '0');
    const m = await (await d2.opsFetch('/metrics')).text();
    assert.match(m, /agentd_gateway_usage_invalid_total\{deployment="openai:gpt-4o-mini"\} 1\b/);
  } finally {
    assert.equal((await d2.stop()).code, 0);
    await oa.close();
  }
});
