// What a hostile or broken client may send, against a real server: requests whose signature leaves headers out (a
// captured call re-targeted), bodies that are not UTF-8, and numbers that do not fit the field they are sent for.
// Every refusal is an SMS-shaped JSON error (x-amzn-ErrorType, {"__type", "message"}) with a 4xx status, names what
// was wrong, and stores nothing. Requests are made with the official SDK where it can send them, else signed by the
// SDK's own signer (@smithy/signature-v4) and sent raw.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  CreateReplicationJobCommand,
  GetConnectorsCommand,
  GetReplicationJobsCommand,
  GetServersCommand,
  ImportServerCatalogCommand,
  UpdateReplicationJobCommand,
} from '@aws-sdk/client-sms';
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { World, expectError, waitFor } from './lib/harness.js';

const SMS = 'AWSServerMigrationService_V2016_10_24.';
const HOUR = 3600e3;

let world;
let sms;
let server;  // db01 as GetServers lists it (raw JSON)

before(async () => {
  world = await World.start({ vms: ['db01'] });
  sms = world.client();
  await waitFor('the connector to be HEALTHY', async () =>
    (await sms.send(new GetConnectorsCommand({}))).connectorList.some((c) => c.status === 'HEALTHY'), { world });
  await sms.send(new ImportServerCatalogCommand({}));
  const out = await waitFor('the server catalog to list db01', async () => {
    const o = await sms.send(new GetServersCommand({}));
    return o.serverCatalogStatus === 'AVAILABLE' && o.serverList.length === 1 && o;
  }, { world });
  server = out.$raw.serverList[0];
});

after(async () => {
  sms?.destroy();
  await world?.stop();
});

// A request signed by the SDK's signer. `unsignable` headers are sent but left out of SignedHeaders; without
// `applyChecksum` no x-amz-content-sha256 is added, as the AWS CLI signs. `body` may be a Buffer (any bytes).
async function signed({ target, body = '{}', path: p = '/', credentials = world.credentials, service = 'sms',
  unsignable = [], applyChecksum = true, headers = {} }) {
  const url = new URL(world.url);
  const request = {
    method: 'POST', protocol: url.protocol, hostname: url.hostname, port: Number(url.port), path: p, body,
    headers: { host: url.host, 'content-type': target ? 'application/x-amz-json-1.1' : 'application/json',
      ...(target ? { 'x-amz-target': target } : {}), ...headers },
  };
  const signer = new SignatureV4({ credentials, region: 'us-east-1', service, sha256: Hash.bind(null, 'sha256'), applyChecksum });
  return signer.sign(request, { unsignableHeaders: new Set(unsignable) });
}

// Sends a request as it is, or with some headers changed after signing (a captured request replayed).
async function send(request, changed = {}) {
  const headers = { ...request.headers, ...changed };
  delete headers.host;  // fetch writes the URL's host, which is the one signed
  const res = await fetch(`${world.url}${request.path}`, { method: request.method, headers, body: request.body });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    // Not UTF-8 JSON: expectAwsError says so.
  }
  return { status: res.status, errorType: res.headers.get('x-amzn-errortype'), contentType: res.headers.get('content-type'), bytes, json };
}

// Checks an SMS error answer: its status, x-amzn-ErrorType, a body that is valid UTF-8 JSON with the same __type;
// returns the message.
function expectAwsError(r, type, status = 400) {
  const shown = `${r.status} ${r.contentType}: ${r.bytes.toString('latin1').slice(0, 300)}`;
  assert.equal(r.status, status, shown);
  assert.equal(r.errorType, type, shown);
  assert.equal(r.contentType, 'application/x-amz-json-1.1', shown);
  assert.ok(r.json, `the answer is not UTF-8 JSON: ${shown}`);
  assert.equal(r.json.__type, type, shown);
  assert.equal(typeof r.json.message, 'string', shown);
  return r.json.message;
}

// A body with raw bytes: parts are strings (UTF-8) or arrays of byte values.
function bytes(...parts) {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
}

async function jobsOfServer() {
  const out = await sms.send(new GetReplicationJobsCommand({}));
  return out.replicationJobList.filter((j) => j.serverId === server.serverId);
}

// --- Signatures ---

test('a call whose signature leaves out X-Amz-Target is refused, so a captured GetConnectors cannot become CreateRegistrationToken', async () => {
  const whole = await send(await signed({ target: `${SMS}GetConnectors` }));
  assert.equal(whole.status, 200, 'the same call signed whole is accepted');
  assert.ok(Array.isArray(whole.json.connectorList));

  const captured = await signed({ target: `${SMS}GetConnectors`, unsignable: ['x-amz-target'] });
  let message = expectAwsError(await send(captured), 'InvalidSignatureException');
  assert.match(message, /^'x-amz-target' must be a 'SignedHeader' in the AWS Authorization\.$/i);

  const retargeted = await send(captured, { 'x-amz-target': 'FerryService_V1.CreateRegistrationToken' });
  message = expectAwsError(retargeted, 'InvalidSignatureException');
  assert.match(message, /'x-amz-target' must be a 'SignedHeader'/i);
  assert.equal(retargeted.json.registrationToken, undefined);
});

// The server checks the credential scope's service per route: "sms" for POST /, "ferry-connector" for /connector/v1/*.
test('a signature scoped to the other API is refused', async () => {
  let r = await send(await signed({ target: `${SMS}GetConnectors`, service: 'ferry-connector' }));
  assert.equal(expectAwsError(r, 'InvalidSignatureException'), "Credential should be scoped to correct service: 'sms'.");
  const saved = JSON.parse(fs.readFileSync(path.join(world.dir, 'connector-state/credentials.json'), 'utf8'));
  r = await send(await signed({ path: '/connector/v1/heartbeat', service: 'sms',
    credentials: { accessKeyId: saved.accessKeyId, secretAccessKey: saved.secretAccessKey } }));
  assert.equal(expectAwsError(r, 'InvalidSignatureException'), "Credential should be scoped to correct service: 'ferry-connector'.");
});

test('Content-Type and every other X-Amz-* header sent must be signed too', async () => {
  for (const [unsigned, headers] of [['content-type', {}], ['x-amz-meta-note', { 'x-amz-meta-note': 'hello' }],
    ['x-amz-content-sha256', {}]]) {
    const r = await send(await signed({ target: `${SMS}GetConnectors`, unsignable: [unsigned], headers }));
    assert.match(expectAwsError(r, 'InvalidSignatureException'), new RegExp(`^'${unsigned}' must be a 'SignedHeader'`, 'i'));
  }
});

test('a call signed as the AWS CLI signs it (content-type;host;x-amz-date;x-amz-target, no payload hash header) is accepted', async () => {
  const r = await send(await signed({ target: `${SMS}GetServers`, body: '{"maxResults": 5}', applyChecksum: false }));
  assert.equal(r.status, 200, r.bytes.toString());
  assert.equal(r.json.serverList.length, 1);
});

// --- Bodies that are not UTF-8 ---

test('invalid UTF-8 in an SMS call is a 400 SerializationException in JSON, never echoed raw, never stored', async () => {
  const seed = Math.floor((Date.now() + HOUR) / 1000);
  for (const body of [
    bytes(`{"serverId":"${server.serverId}","seedReplicationTime":${seed},"frequency":12,"description":"web`, [0xff], '"}'),
    bytes(`{"serverId":"${server.serverId}","seedReplicationTime":${seed},"frequency":12,"descr`, [0xc3, 0x28], 'iption":"x"}'),
    bytes(`{"serverId":"${server.serverId}","seedReplicationTime":${seed},"frequency":12,"roleName":"`, [0xed, 0xa0, 0x80], '"}'),
  ]) {
    const r = await send(await signed({ target: `${SMS}CreateReplicationJob`, body }));
    const message = expectAwsError(r, 'SerializationException');
    assert.ok(!r.bytes.includes(0xff) && !r.bytes.includes(0xed), `raw bytes echoed: ${message}`);
  }
  assert.deepEqual(await jobsOfServer(), []);
});

// json_api() reads its body with api::parse_request(), as the connector endpoints do.
test('invalid UTF-8 in an SMS call names the field it is in', async () => {
  const body = bytes(`{"serverId":"${server.serverId}","seedReplicationTime":1795564800,"frequency":12,"description":"web`, [0xff], '"}');
  const message = expectAwsError(await send(await signed({ target: `${SMS}CreateReplicationJob`, body })), 'SerializationException');
  assert.match(message, /^the request body is not valid UTF-8: byte 0xFF at offset \d+, in the value of 'description'$/);
});

test('invalid UTF-8 in a connector call names the field it is in', async () => {
  const register = (body) => send({ method: 'POST', path: '/connector/v1/register', headers: { 'content-type': 'application/json' }, body });
  for (const [body, where] of [
    [bytes('{"token":"ferry-reg-none","name":"dc', [0xff], '1"}'), "in the value of 'name'"],
    [bytes('{"token":"ferry-reg-none","na', [0xfe], 'me":"dc1"}'), 'in a key of the body'],
    [bytes('{"token":"ferry-reg-none","capabilities":["LIBVIRT","VSP', [0xc0, 0xaf], 'HERE"]}'), "in the value of 'capabilities[1]'"],
  ]) {
    const message = expectAwsError(await register(body), 'SerializationException');
    assert.match(message, /^the request body is not valid UTF-8: byte 0x[0-9A-F]{2} at offset \d+, /);
    assert.ok(message.endsWith(where), message);
  }
});

test('an Authorization header that is not UTF-8 is refused in JSON, not echoed raw', async () => {
  const r = await send(await signed({ target: `${SMS}GetConnectors` }), { authorization: 'AWS4-HMAC-SHA256 Cred\u00ffential' });
  assert.match(expectAwsError(r, 'IncompleteSignatureException'), /not a valid key=value pair/);
  assert.ok(!r.bytes.includes(0xff));
});

// --- Numbers ---

test('an integer too large for its field is refused, not narrowed: frequency 4294967308 is not 12', async () => {
  const seedReplicationTime = new Date(Date.now() + HOUR);
  const e = await expectError(sms.send(new CreateReplicationJobCommand({
    serverId: server.serverId, seedReplicationTime, frequency: 4294967308,
  })), 'InvalidParameterException');
  assert.equal(e.message, 'frequency must be an integer from -2147483648 to 2147483647, not 4294967308');
  await expectError(sms.send(new CreateReplicationJobCommand({
    serverId: server.serverId, seedReplicationTime, frequency: 12, numberOfRecentAmisToKeep: 4294967296,
  })), 'InvalidParameterException');
  assert.deepEqual(await jobsOfServer(), []);
});

test('integers out of range, fractions and numbers beyond 64 bits are refused in every integer field', async () => {
  const seed = Math.floor((Date.now() + HOUR) / 1000);
  const job = (fields) => `{"serverId":"${server.serverId}","seedReplicationTime":${seed},${fields}}`;
  for (const [target, body, field] of [
    ['CreateReplicationJob', job('"frequency":-4294967284'), 'frequency'],  // -4294967284 as a 32-bit int is 12
    ['CreateReplicationJob', job('"frequency":12.5'), 'frequency'],
    ['CreateReplicationJob', job('"frequency":1.2e1'), 'frequency'],
    ['CreateReplicationJob', job('"frequency":"12"'), 'frequency'],
    ['CreateReplicationJob', job('"frequency":12,"numberOfRecentAmisToKeep":18446744073709551615'), 'numberOfRecentAmisToKeep'],
    ['CreateReplicationJob', `{"serverId":"${server.serverId}","seedReplicationTime":1e300,"frequency":12}`, 'seedReplicationTime'],
    ['CreateReplicationJob', `{"serverId":"${server.serverId}","seedReplicationTime":-1,"frequency":12}`, 'seedReplicationTime'],
    ['GetServers', '{"maxResults":18446744073709551616}', 'maxResults'],
    ['GetServers', '{"maxResults":9223372036854775808}', 'maxResults'],
    ['GetServers', '{"maxResults":1000.5}', 'maxResults'],
    ['GetReplicationJobs', '{"maxResults":-1}', 'maxResults'],
  ]) {
    const r = await send(await signed({ target: `${SMS}${target}`, body }));
    const message = expectAwsError(r, 'InvalidParameterException');
    assert.ok(message.startsWith(`${field} must be `), `${target} ${body}: ${message}`);
  }
  for (const body of ['{"validHours":18446744073709551615}', '{"validHours":4294967320}', '{"validHours":24.0}']) {
    const r = await send(await signed({ target: 'FerryService_V1.CreateRegistrationToken', body }));
    assert.match(expectAwsError(r, 'InvalidParameterException'), /^validHours must be an integer/);
  }
  assert.deepEqual(await jobsOfServer(), []);
});

test('UpdateReplicationJob refuses a frequency that only narrowing would bring into range, and keeps the old one', async () => {
  const { replicationJobId } = await sms.send(new CreateReplicationJobCommand({
    serverId: server.serverId, seedReplicationTime: new Date(Date.now() + HOUR), frequency: 12,
  }));
  await expectError(sms.send(new UpdateReplicationJobCommand({ replicationJobId, frequency: 4294967309 })), 'InvalidParameterException');
  const [job] = await jobsOfServer();
  assert.equal(job.frequency, 12);
});

test("an inventory report's numbers are range-checked before they are stored", async () => {
  const saved = JSON.parse(fs.readFileSync(path.join(world.dir, 'connector-state/credentials.json'), 'utf8'));
  const credentials = { accessKeyId: saved.accessKeyId, secretAccessKey: saved.secretAccessKey };
  const vm = server.vmServer;
  // db01 as the connector reports it, with `cpus` and its disk's `size` written as given (numbers JSON.stringify
  // cannot write).
  const report = (cpus, size) => JSON.stringify({
    generation: 1,
    servers: [{ vmId: vm.vmServerAddress.vmId, vmName: vm.vmName, vmManagerId: vm.vmServerAddress.vmManagerId, cpus: 'CPUS',
      disks: [{ name: 'vda', path: server.disks[0].path, size: 'SIZE' }] }],
  }).replace('"CPUS"', cpus).replace('"SIZE"', size);
  for (const [cpus, size, field] of [['4294967297', '1', 'cpus'], ['1', '-1', 'size'], ['1', '18446744073709551615', 'size']]) {
    const r = await send(await signed({ path: '/connector/v1/inventory', body: report(cpus, size), credentials, service: 'ferry-connector' }));
    assert.match(expectAwsError(r, 'InvalidParameterException'), new RegExp(`^${field} must be an integer from 0 to `));
  }
  const out = await sms.send(new GetServersCommand({}));
  assert.equal(out.$raw.serverList[0].cpus, server.cpus);
  assert.deepEqual(out.$raw.serverList[0].disks, server.disks);
});
