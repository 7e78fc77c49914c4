// Node's own HTTP parser (llhttp, strict mode: what `http` and every Node
// client use) applied to what our servers write, for tests/server/test_strict_http.py.
//
//   node strict_http.js parse   < cases.json
//       cases: [{name, methods: ["GET", "HEAD", ...], data: <base64 of every byte
//       the server wrote on one connection, up to its close>}]. Each response is
//       parsed as Node's client would (a response to HEAD has no body) and the
//       bytes must hold exactly one final response per request.
//   node strict_http.js fetch   < requests.json
//       requests: [{name, url, method, headers}]: each is sent with `http.request`
//       (keep-alive agent, so responses share connections) and with `fetch`.
//
// Prints one JSON object: {name: {error?, responses: [{status, headers, body}],
// upgraded?, leftover?}} (bodies base64).
'use strict';
process.noDeprecation = true; // process.binding('http_parser') is how to reach llhttp
const http = require('http');
const { HTTPParser } = process.binding('http_parser');

function readStdin() {
  return new Promise((resolve) => {
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString())));
  });
}

function parseResponses(methods, data) {
  const result = { responses: [] };
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.RESPONSE, {}); // lenient flags off: strict
  let current = null;
  let finals = 0;
  parser[HTTPParser.kOnHeadersComplete] = (major, minor, headers, method, url,
    status, statusMessage, upgrade) => {
    current = { status, reason: statusMessage, version: `${major}.${minor}`,
      headers, body: [] };
    if (status === 101 || upgrade) result.upgraded = true;
    // As Node's client: 1 tells llhttp that this response has no body.
    return status >= 200 && methods[finals] === 'HEAD' ? 1 : 0;
  };
  parser[HTTPParser.kOnBody] = (chunk) => { current.body.push(Buffer.from(chunk)); };
  parser[HTTPParser.kOnMessageComplete] = () => {
    current.body = Buffer.concat(current.body).toString('base64');
    result.responses.push(current);
    if (current.status >= 200 || current.status === 101) finals += 1;
    current = null;
  };
  let ret = parser.execute(data);
  if (ret instanceof Error) {
    result.error = `${ret.code}: ${ret.reason}`;
    return result;
  }
  if (result.upgraded) {
    result.leftover = data.length - ret;
    return result;
  }
  ret = parser.finish(); // the connection's end: completes a close-delimited body
  if (ret instanceof Error) {
    result.error = `${ret.code}: ${ret.reason} (at the end of the data)`;
    return result;
  }
  if (current !== null) result.error = 'a response was cut short';
  else if (finals !== methods.length) {
    result.error = `${finals} final responses for ${methods.length} requests`;
  }
  return result;
}

function viaHttp(agent, req) {
  return new Promise((resolve) => {
    const r = http.request(req.url, { method: req.method, headers: req.headers || {}, agent },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.rawHeaders,
          body: Buffer.concat(chunks).toString('base64') }));
        res.on('error', (e) => resolve({ error: `${e.code}: ${e.message}` }));
      });
    r.on('error', (e) => resolve({ error: `${e.code}: ${e.message}` }));
    r.end();
  });
}

async function viaFetch(req) {
  try {
    const res = await fetch(req.url, { method: req.method, headers: req.headers || {},
      redirect: 'manual' });
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, body: body.toString('base64') };
  } catch (e) {
    const cause = e.cause ? ` (${e.cause.code || ''} ${e.cause.message})` : '';
    return { error: `${e.message}${cause}` };
  }
}

async function main() {
  const mode = process.argv[2];
  const cases = await readStdin();
  const out = {};
  if (mode === 'parse') {
    for (const c of cases) out[c.name] = parseResponses(c.methods, Buffer.from(c.data, 'base64'));
  } else if (mode === 'fetch') {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (const c of cases) {
      out[c.name] = { http: await viaHttp(agent, c), fetch: await viaFetch(c) };
    }
    agent.destroy();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
