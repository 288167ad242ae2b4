// Resilience (issue 9 items 1-5, 9): retries with backoff and Retry-After, fallback models, circuit breakers,
// stream-idle timeouts, deployment ids; against the real binary and fake providers that misbehave on command.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';

import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let oa, oa2, dead;
before(async () => {
  oa = await startFake({ provider: 'openai' });
  oa2 = await startFake({ provider: 'openai' });
  // a port nobody listens on: connection refused
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  dead = `http://127.0.0.1:${s.address().port}/v1`;
  await new Promise((r) => s.close(r));
});
after(async () => { await oa.close(); await oa2.close(); });

const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai };
const dep = (url, extra = '') => `provider: openai\n    model: gpt-4o-mini\n    base_url: ${url}\n    api_key_env: FAKE_OPENAI_KEY${extra}`;

function chat(d, body = {}, model = 'm') {
  return d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello there' }], ...body }),
  });
}

// counter value of one series in the Prometheus text, 0 when absent
function metric(text, name, labels) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(' ').pop());
  }
  return sum;
}

test('a single deployment: 503s are retried after a backoff, each attempt counted once', async () => {
  oa.reset();
  const d = await startAgentd({ env, config: `
gateway:
  retries: { max_attempts: 3, backoff_base: 20ms, backoff_max: 50ms }
models:
  - name: m
    ${dep(oa.urls.openai)}
` });
  try {
    oa.script([{ status: 503 }, { status: 503 }]);
    const res = await chat(d);
    const j = await res.json();
    assert.equal(res.status, 200, JSON.stringify(j));
    assert.equal(j.choices[0].message.content, 'echo: hello there');
    assert.equal(res.headers.get('x-agentd-attempts'), '3');
    assert.equal(res.headers.get('x-agentd-deployment'), 'openai:gpt-4o-mini');
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'),
      'openai:gpt-4o-mini=http_503, openai:gpt-4o-mini=http_503, openai:gpt-4o-mini=ok');
    assert.equal(oa.received(), 3);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_gateway_upstream_attempts_total', { deployment: 'openai:gpt-4o-mini', outcome: 'http_503' }), 2);
    assert.equal(metric(m, 'agentd_gateway_upstream_attempts_total', { deployment: 'openai:gpt-4o-mini', outcome: 'ok' }), 1);
    // the failover lines carry their facts as fields, at warn
    const rid = res.headers.get('x-request-id');
    const w = await d.waitLog((l) => l.msg === 'upstream attempt failed' && l.request_id === rid);
    assert.equal(w.level, 'warn');
    assert.equal(w.deployment, 'openai:gpt-4o-mini');
    assert.equal(w.outcome, 'http_503');
    assert.equal(w.attempt, 1);
    const llm = await d.waitLog((l) => l.msg === 'llm' && l.request_id === rid);
    assert.equal(llm.attempts, 3);
    assert.match(llm.attempt_outcomes, /=http_503, .*=ok$/);

    // three 503s with max_attempts 3: the last error, in the client's format
    oa.reset();
    oa.script([{ status: 503 }, { status: 503 }, { status: 503 }]);
    const r2 = await chat(d);
    assert.equal(r2.status, 503);
    assert.equal(typeof (await r2.json()).error.message, 'string');
    assert.equal(r2.headers.get('x-agentd-attempts'), '3');
    assert.equal(oa.received(), 3);

    // never retried: a 400, a 404
    for (const status of [400, 404]) {
      oa.reset();
      oa.script([{ status }]);
      const r = await chat(d);
      assert.equal(r.status, status);
      await r.text();
      assert.equal(oa.received(), 1, `${status} is not retried`);
      assert.equal(r.headers.get('x-agentd-attempts'), '1');
    }
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('Retry-After in each form is honoured when it fits the deadline; else the next deployment at once', async () => {
  oa.reset(); oa2.reset();
  const d = await startAgentd({ env, config: `
gateway:
  request_timeout: 5s
  retries: { max_attempts: 3, backoff_base: 1ms, backoff_max: 1ms }
models:
  - name: m
    ${dep(oa.urls.openai)}
  - name: two
    deployments:
      - ${dep(oa.urls.openai, '\n    weight: 1000000').replace(/\n    /g, '\n        ')}
      - ${dep(oa2.urls.openai, '\n    weight: 0').replace(/\n    /g, '\n        ')}
` });
  try {
    const forms = [
      [{ status: 429, retryAfterMs: 400 }, 400],
      [{ status: 429, retryAfter: 1 }, 1000],
      // no Retry-After: OpenAI's x-ratelimit-reset-requests (the fake sets remaining-requests 0)
      [{ status: 429, headers: { 'x-ratelimit-reset-requests': '300ms' } }, 300],
    ];
    for (const [b, ms] of forms) {
      oa.reset();
      oa.script([b]);
      const res = await chat(d);
      assert.equal(res.status, 200, JSON.stringify(b));
      await res.json();
      assert.equal(oa.requests.length, 2);
      const gap = oa.requests[1].time - oa.requests[0].time;
      assert.ok(gap >= ms - 20, `${JSON.stringify(b)}: waited ${gap} ms, Retry-After said ${ms}`);
      assert.ok(gap < ms + 1500, `${JSON.stringify(b)}: waited ${gap} ms`);
      // waiting out a provider's Retry-After is the upstream's time, not agentd's overhead
      const overhead = Number(res.headers.get('x-agentd-overhead-us'));
      assert.ok(overhead < ms * 1000 / 2, `${JSON.stringify(b)}: overhead ${overhead} us for a ${ms} ms wait`);
    }

    // longer than the deadline: the other deployment serves at once
    oa.reset(); oa2.reset();
    oa.script([{ status: 429, retryAfter: 60 }]);
    let t0 = Date.now();
    let res = await chat(d, {}, 'two');
    assert.equal(res.status, 200);
    await res.json();
    assert.ok(Date.now() - t0 < 2000, 'no wait for a Retry-After past the deadline');
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'openai:gpt-4o-mini@' + oa.urls.openai.slice(7) +
      '=http_429, openai:gpt-4o-mini@' + oa2.urls.openai.slice(7) + '=ok');
    // ... and while its cool-down lasts, the throttled deployment is skipped (not an outage)
    oa.reset(); oa2.reset();
    res = await chat(d, {}, 'two');
    assert.equal(res.status, 200);
    await res.json();
    assert.equal(oa.received(), 0);
    assert.equal(res.headers.get('x-agentd-attempts'), '1');

    // one deployment and a Retry-After past the deadline: the client gets the 429 and its Retry-After at once
    oa.reset();
    oa.script([{ status: 429, retryAfter: 60 }]);
    t0 = Date.now();
    res = await chat(d);
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '60');
    assert.equal((await res.json()).error.type, 'rate_limit_error');
    assert.ok(Date.now() - t0 < 2000);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('fallback models: in order once a model is spent; context-window and content-policy fallbacks', async () => {
  oa.reset(); oa2.reset();
  const d = await startAgentd({ env, config: `
gateway:
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
models:
  - name: m
    ${dep(oa.urls.openai)}
    fallbacks: [gone, big]
    context_window_fallbacks: [big]
    content_policy_fallbacks: [lenient]
  - name: gone
    provider: openai
    model: gpt-gone
    base_url: ${dead}
    api_key_env: FAKE_OPENAI_KEY
  - name: big
    provider: openai
    model: gpt-4.1
    base_url: ${oa2.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: lenient
    provider: openai
    model: gpt-4o
    base_url: ${oa2.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: plain
    ${dep(oa.urls.openai)}
` });
  try {
    oa.script([{ status: 500, times: 2 }]);
    let res = await chat(d);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).choices[0].message.content, 'echo: hello there');
    assert.equal(res.headers.get('x-agentd-attempts'), '5');
    assert.equal(res.headers.get('x-agentd-deployment'), 'openai:gpt-4.1');
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'openai:gpt-4o-mini=http_500, openai:gpt-4o-mini=http_500, ' +
      'openai:gpt-gone=connect_refused, openai:gpt-gone=connect_refused, openai:gpt-4.1=ok');
    assert.equal(oa2.requests[0].json.model, 'gpt-4.1');

    const ctxErr = { status: 400, body: { error: { message: "This model's maximum context length is 128000 tokens.", type: 'invalid_request_error', param: 'messages', code: 'context_length_exceeded' } } };
    oa.reset(); oa2.reset();
    oa.script([ctxErr]);
    res = await chat(d);
    assert.equal(res.status, 200);
    await res.json();
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'openai:gpt-4o-mini=http_400, openai:gpt-4.1=ok');
    assert.equal(oa.received(), 1, 'a context-window error is not retried on the same model');

    oa.reset(); oa2.reset();
    oa.script([{ status: 400, body: { error: { message: 'Your request was rejected as a result of our safety system.', type: 'invalid_request_error', param: null, code: 'content_policy_violation' } } }]);
    res = await chat(d);
    assert.equal(res.status, 200);
    await res.json();
    assert.equal(res.headers.get('x-agentd-deployment'), 'openai:gpt-4o');

    // without a context-window fallback the client gets the provider's 400, after one attempt
    oa.reset(); oa2.reset();
    oa.script([ctxErr]);
    res = await chat(d, {}, 'plain');
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, 'context_length_exceeded');
    assert.equal(oa.received(), 1);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('circuit breakers: a dead deployment is skipped once open, probed after the cool-down; all open is a fast 503', async () => {
  oa.reset();
  const d = await startAgentd({ env, config: `
server:
  workers: 1
gateway:
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
  breaker: { consecutive_failures: 2, cooldown: 400ms }
models:
  - name: m
    deployments:
      - provider: openai
        model: gpt-4o-mini
        id: dead-one
        base_url: ${dead}
        api_key_env: FAKE_OPENAI_KEY
        weight: 1000000
      - provider: openai
        model: gpt-4o-mini
        id: live-one
        base_url: ${oa.urls.openai}
        api_key_env: FAKE_OPENAI_KEY
        weight: 0
  - name: alone
    provider: openai
    model: gpt-4o-mini
    base_url: ${dead}
    api_key_env: FAKE_OPENAI_KEY
    retries: { max_attempts: 3 }
` });
  try {
    for (let i = 0; i < 2; i++) {
      const res = await chat(d);
      assert.equal(res.status, 200);
      await res.json();
      assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'dead-one=connect_refused, live-one=ok');
    }
    let m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_gateway_breaker_state', { model: 'm', deployment: 'dead-one' }), 2);
    assert.equal(metric(m, 'agentd_gateway_breaker_state', { model: 'm', deployment: 'live-one' }), 0);
    // open: skipped, one attempt
    let res = await chat(d);
    assert.equal(res.status, 200);
    await res.json();
    assert.equal(res.headers.get('x-agentd-attempts'), '1');
    assert.equal(res.headers.get('x-agentd-deployment'), 'live-one');
    // after the cool-down: half-open, one probe goes to it (and fails: open again)
    await new Promise((r) => setTimeout(r, 450));
    m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_gateway_breaker_state', { model: 'm', deployment: 'dead-one' }), 1);
    res = await chat(d);
    await res.json();
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'dead-one=connect_refused, live-one=ok');
    m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_gateway_breaker_state', { model: 'm', deployment: 'dead-one' }), 2);

    // a model whose every deployment is open fails at once: 503 with Retry-After, no attempt
    // its breaker opens after two failures: the third attempt is not made by waiting out the cool-down
    res = await chat(d, {}, 'alone');
    assert.equal(res.status, 502);
    await res.text();
    assert.equal(res.headers.get('x-agentd-attempts'), '2');
    res = await chat(d, {}, 'alone');
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('x-agentd-attempts'), '0');
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    assert.match((await res.json()).error.message, /circuit breakers open/);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('stream idle: silence before the first client byte is retried; after it the stream ends with an error event', async () => {
  oa.reset();
  const d = await startAgentd({ env, config: `
gateway:
  stream_idle_timeout: 300ms
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
models:
  - name: m
    ${dep(oa.urls.openai)}
` });
  try {
    // headers, then nothing for longer than the idle timeout: another attempt serves
    oa.script([{ ttftMs: 3000 }]);
    let t0 = Date.now();
    let res = await chat(d, { stream: true });
    let text = await res.text();
    assert.equal(res.status, 200);
    assert.match(text, /data: \[DONE\]/);
    // a stream's head is written while its attempt runs
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'openai:gpt-4o-mini=idle_timeout, openai:gpt-4o-mini=streaming');
    assert.ok(Date.now() - t0 < 2500);

    // half the stream, then silence: the client has bytes, so no retry; an error event ends it in time
    oa.reset();
    oa.script([{ hangMidStream: true, chunks: 6 }]);
    t0 = Date.now();
    res = await chat(d, { stream: true, messages: [{ role: 'user', content: 'one two three four five six' }] });
    text = await res.text();
    assert.ok(Date.now() - t0 < 2500);
    assert.match(text, /stream idle timeout/);
    assert.equal(oa.received(), 1);
    const llm = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
    assert.equal(llm.incomplete, true);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('configuration: unknown retry or breaker keys and absurd values are refused with the allowed range', async () => {
  const bad = [
    ['gateway:\n  retries:\n    max_tries: 3\n', /max_tries/],
    ['gateway:\n  breaker:\n    window: 0s\n', /window/],
    ['gateway:\n  retries:\n    retry_on: [503, 400]\n', /unknown outcome '400'/],
    ['gateway:\n  retries:\n    max_attempts: 0\n', /max_attempts/],
    ['models:\n  - name: a\n    provider: mock\n    fallbacks: [nope]\n', /fallbacks names 'nope'/],
  ];
  for (const [config, re] of bad) {
    const d = await startAgentd({ config }).catch((e) => e);
    assert.ok(d instanceof Error, `refused: ${config}`);
    assert.match(d.message, re);
    if (!/fallbacks/.test(config)) assert.match(d.message, /agentd\.yaml:\d+:\d+/);
  }
});

test('balancing: least_outstanding sends past a busy deployment; latency prefers the faster one once measured', async () => {
  const slow = await startFake({ provider: 'openai', latencyMs: 1500 });
  const fast = await startFake({ provider: 'openai' });
  const two = (balancing) => `
  - name: ${balancing}
    balancing: ${balancing}
    deployments:
      - { provider: openai, model: gpt-4o-mini, id: slow-${balancing}, base_url: "${slow.urls.openai}", api_key_env: FAKE_OPENAI_KEY }
      - { provider: openai, model: gpt-4o-mini, id: fast-${balancing}, base_url: "${fast.urls.openai}", api_key_env: FAKE_OPENAI_KEY }`;
  const d = await startAgentd({ env, config: `
server:
  workers: 1
models:${two('least_outstanding')}${two('latency')}
` });
  try {
    // Each request is sent once the previous one reached a fake; slow ones stay in flight meanwhile. Weighted
    // random would give the slow deployment about half; least_outstanding gives it at most the first tie.
    const pending = [];
    for (let i = 0; i < 8; i++) {
      const s0 = slow.received();
      const p = chat(d, {}, 'least_outstanding').then((r) => r.text());
      // a request that went to the fast one is awaited; one that went to the slow one stays in flight
      const went = await Promise.race([p.then(() => 'done'), slow.waitForRequests(s0 + 1, 5000).then(() => 'slow')]);
      if (went === 'slow') pending.push(p);
    }
    await Promise.all(pending);
    assert.ok(slow.received() <= 1, `least_outstanding: ${slow.received()} of 8 to the busy deployment`);
    assert.equal(slow.received() + fast.received(), 8);

    // latency: each deployment is measured once (one never measured goes first), then the faster one serves
    slow.reset(); fast.reset();
    for (let i = 0; i < 2; i++) await (await chat(d, {}, 'latency')).text();
    assert.equal(slow.received(), 1);
    assert.equal(fast.received(), 1);
    for (let i = 0; i < 4; i++) {
      const r = await chat(d, {}, 'latency');
      await r.text();
      assert.equal(r.headers.get('x-agentd-deployment'), 'fast-latency');
    }
    assert.equal(slow.received(), 1);
  } finally {
    assert.equal((await d.stop()).code, 0);
    await slow.close(); await fast.close();
  }
});

test('GET /admin/deployments needs the admin key and shows each deployment', async () => {
  const ADMIN = 'admin-key-0123456789abcdef';
  const d = await startAgentd({ env: { ...env, AGENTD_ADMIN_KEY: ADMIN }, config: `
models:
  - name: m
    ${dep(oa.urls.openai)}
` });
  try {
    let r = await d.fetch('/admin/deployments');
    assert.equal(r.status, 401);
    await r.text();
    r = await d.fetch('/admin/deployments', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(r.status, 200);
    const j = await r.json();
    const m = j.data.find((x) => x.model === 'm');
    assert.equal(m.id, 'openai:gpt-4o-mini');
    assert.equal(m.breaker.state, 'closed');
    assert.equal(m.outstanding, 0);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('the retry budget bounds retries; a deployment\'s own first_byte_timeout overrides the gateway\'s', async () => {
  oa.reset();
  const d = await startAgentd({ env, config: `
server:
  workers: 1
gateway:
  first_byte_timeout: 120s
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms, budget_ratio: 0, budget_min_per_second: 0 }
models:
  - name: m
    ${dep(oa.urls.openai, '\n    first_byte_timeout: 300ms')}
` });
  try {
    // a hung upstream: the deployment's 300 ms, not the gateway's 120 s; the retry spends the budget's one token
    oa.script([{ hang: true }]);
    const t0 = Date.now();
    let res = await chat(d);
    assert.equal(res.status, 200);
    await res.json();
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'openai:gpt-4o-mini=first_byte_timeout, openai:gpt-4o-mini=ok');
    // the budget is spent (no requests earn any, no floor): the next failure goes to the client
    oa.reset();
    oa.script([{ status: 503 }]);
    res = await chat(d);
    assert.equal(res.status, 503);
    await res.text();
    assert.equal(oa.received(), 1);
    await d.waitLog((l) => /retry budget spent/.test(l.msg || ''));
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('a reload keeps each deployment\'s breaker: an open one stays skipped until its cool-down', async () => {
  oa.reset();
  const cfg = (timeout) => `
server:
  workers: 2
gateway:
  request_timeout: ${timeout}
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
  breaker: { consecutive_failures: 2, cooldown: 2s }
models:
  - name: m
    deployments:
      - provider: openai
        model: gpt-4o-mini
        id: dead-one
        base_url: ${dead}
        api_key_env: FAKE_OPENAI_KEY
        weight: 1000000
      - provider: openai
        model: gpt-4o-mini
        id: live-one
        base_url: ${oa.urls.openai}
        api_key_env: FAKE_OPENAI_KEY
        weight: 0
`;
  const d = await startAgentd({ env, config: cfg('60s') });
  const state = async () => metric(await (await d.opsFetch('/metrics')).text(), 'agentd_gateway_breaker_state',
    { model: 'm', deployment: 'dead-one' });
  try {
    for (let i = 0; i < 2; i++) {
      const res = await chat(d);
      assert.equal(res.status, 200);
      await res.json();
      assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'dead-one=connect_refused, live-one=ok');
    }
    assert.equal(await state(), 2);
    writeFileSync(d.configPath, cfg('50s')); // a new configuration: a new registry
    d.signal('SIGHUP');
    await d.waitLog((l) => /configuration reloaded/.test(l.msg || ''));
    assert.equal(await state(), 2, 'the new registry shows the breaker still open');
    for (let i = 0; i < 4; i++) { // both workers: the open breaker is skipped, one attempt each
      const res = await chat(d);
      assert.equal(res.status, 200);
      await res.json();
      assert.equal(res.headers.get('x-agentd-attempts'), '1');
      assert.equal(res.headers.get('x-agentd-deployment'), 'live-one');
    }
    // after the cool-down it is probed again (and stays open: it is still dead)
    for (let i = 0; (await state()) !== 1; i++) {
      if (i > 100) assert.fail('never half-open');
      await new Promise((r) => setTimeout(r, 50));
    }
    const res = await chat(d);
    await res.json();
    assert.equal(res.headers.get('x-agentd-attempt-outcomes'), 'dead-one=connect_refused, live-one=ok');
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});
