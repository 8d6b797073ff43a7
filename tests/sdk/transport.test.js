// Plain HTTP only on loopback: `ferry server`, `ferry connector` and the client verbs refuse a plain-HTTP address that
// is not loopback (the registration token, a connector's new secret and disk data would cross the network in
// clear) unless --insecure-http is given, and name the address and the flag. Real processes; the accepted case
// reaches the server through this machine's own non-loopback address.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetConnectorsCommand, SMSClient } from '@aws-sdk/client-sms';
import { FERRY, Process, makeInventory, run, waitFor } from './lib/harness.js';

// An IPv4 address of this machine that is not loopback, if it has one.
const OWN_ADDRESS = Object.values(os.networkInterfaces()).flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith('127.'))?.address;

let dir;
let data;
let credentials;
const processes = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-transport-'));
  data = path.join(dir, 'data');
  const init = JSON.parse((await run(FERRY, ['server', 'init', '--data', data, '--json'])).stdout);
  credentials = { accessKeyId: init.accessKeyId, secretAccessKey: init.secretAccessKey };
});

after(async () => {
  await Promise.all(processes.map((p) => p.stop()));
  if (dir && !process.env.FERRY_SDK_KEEP) fs.rmSync(dir, { recursive: true, force: true });
});

// Runs ferry expecting it to refuse at once: returns its error output. A ferry that starts serving instead is killed
// after 10 s and the test fails.
async function refused(args, env = process.env) {
  try {
    const { stdout } = await run(FERRY, args, { timeout: 10000, env });
    assert.fail(`ferry ${args.join(' ')} succeeded: ${stdout}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.match(e.message, /failed \(exit 1\)/, e.message);
    return e.message;
  }
}

function clientEnv(endpoint) {
  return { ...process.env, FERRY_ENDPOINT: endpoint, AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, FERRY_CONFIG: path.join(dir, 'no-config') };
}

test('ferry server refuses plain HTTP on an address that is not loopback, naming it and --insecure-http', async () => {
  const addressFile = path.join(dir, 'refused-address');
  for (const listen of ['0.0.0.0:0', '[::]:0', `${OWN_ADDRESS ?? '192.0.2.1'}:0`, 'ferry.example.com:0']) {
    const message = await refused(['server', '--data', data, '--listen', listen, '--address-file', addressFile]);
    const host = listen.slice(0, listen.lastIndexOf(':'));
    assert.ok(message.includes(`refusing to serve plain HTTP on ${listen}: '${host}' is not a loopback address`), message);
    assert.match(message, /--tls-cert and --tls-key, or --insecure-http/);
    assert.ok(!fs.existsSync(addressFile), `ferry server listened on ${listen}`);
  }
});

test('client verbs and the connector refuse a plain-HTTP endpoint that is not loopback before sending anything', async () => {
  const endpoint = `http://${OWN_ADDRESS ?? '192.0.2.1'}:9`;
  for (const args of [['connectors', 'list'], ['connectors', 'token'], ['jobs', 'list', '--endpoint', 'http://ferry.example.com:8443']]) {
    const message = await refused(args, clientEnv(endpoint));
    const shown = args.includes('--endpoint') ? 'http://ferry.example.com:8443' : endpoint;
    assert.ok(message.includes(`refusing plain HTTP to ${shown}: '`), message);
    assert.match(message, /is not a loopback address.*--insecure-http/s);
  }
  const config = await makeInventory(path.join(dir, 'inventory-refused'), ['db01']);
  const state = path.join(dir, 'connector-refused');
  const message = await refused(['connector', '--server', endpoint, '--token', 'ferry-reg-unused', '--config', config, '--state', state]);
  assert.ok(message.includes(`refusing plain HTTP to ${endpoint}: '`), message);
  assert.ok(!fs.existsSync(path.join(state, 'credentials.json')));
});

test('with --insecure-http everywhere, a connector registers over plain HTTP to a non-loopback address',
  { skip: OWN_ADDRESS ? false : 'this machine has no IPv4 address but loopback' }, async () => {
    const addressFile = path.join(dir, 'address');
    const server = new Process('server', ['server', '--data', data, '--listen', '0.0.0.0:0', '--insecure-http',
      '--address-file', addressFile], path.join(dir, 'server.log'), process.env);
    processes.push(server);
    const bound = await waitFor('the server to write its address', () => {
      if (!server.running) throw new Error(`ferry server exited:\n${server.tail()}`);
      return fs.existsSync(addressFile) && fs.readFileSync(addressFile, 'utf8').trim();
    }, { timeoutMs: 30000, intervalMs: 50 });
    const endpoint = `http://${OWN_ADDRESS}:${new URL(bound).port}`;
    assert.match(fs.readFileSync(path.join(dir, 'server.log'), 'utf8'), /plain HTTP on a non-loopback address \(--insecure-http\)/);

    const message = await refused(['connectors', 'token'], clientEnv(endpoint));
    assert.match(message, /--insecure-http/);
    const token = (await run(FERRY, ['connectors', 'token', '--insecure-http'], { env: clientEnv(endpoint) })).stdout.trim();
    assert.match(token, /^ferry-reg-/);

    const config = await makeInventory(path.join(dir, 'inventory'), ['db01']);
    const connector = new Process('connector', ['connector', '--server', endpoint, '--insecure-http', '--token', token,
      '--config', config, '--state', path.join(dir, 'connector-state'), '--poll-interval-ms', '200'],
    path.join(dir, 'connector.log'), process.env);
    processes.push(connector);
    const sms = new SMSClient({ endpoint, region: 'us-east-1', credentials });
    try {
      const [c] = await waitFor('the connector to register over plain HTTP', async () => {
        if (!connector.running) throw new Error(`ferry connector exited:\n${connector.tail()}`);
        const list = (await sms.send(new GetConnectorsCommand({}))).connectorList;
        return list.length === 1 && list[0].status === 'HEALTHY' && list;
      });
      assert.equal(c.ipAddress, OWN_ADDRESS);
    } finally {
      sms.destroy();
    }
  });
