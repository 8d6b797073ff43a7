// The SMS API's answers to the official AWS SDK outside the replication flow: request signing (bad secret, unknown
// key, expired or skewed clock), unknown jobs, connector health as heartbeats stop and resume, and
// DisassociateConnector. Its own server and connector, signed for another region than replication.test.js.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  DeleteReplicationJobCommand,
  DisassociateConnectorCommand,
  GetConnectorsCommand,
  GetReplicationJobsCommand,
  GetReplicationRunsCommand,
  GetServersCommand,
  ImportServerCatalogCommand,
  SMSServiceException,
  StartOnDemandReplicationRunCommand,
  UpdateReplicationJobCommand,
} from '@aws-sdk/client-sms';
import { World, expectError, waitFor } from './lib/harness.js';

const REGION = 'eu-west-3';
const MINUTE = 60e3;

let world;
let sms;

before(async () => {
  world = await World.start({ vms: ['db01'] });
  sms = world.client({ region: REGION });
});

after(async () => {
  sms?.destroy();
  await world?.stop();
});

async function connectorStatus() {
  const { connectorList } = await sms.send(new GetConnectorsCommand({}));
  assert.equal(connectorList.length, 1);
  return connectorList[0].status;
}

test(`GetConnectors signed for ${REGION} lists the connector HEALTHY`, async () => {
  await waitFor('the connector to be HEALTHY', async () => {
    const { connectorList } = await sms.send(new GetConnectorsCommand({}));
    return connectorList.length === 1 && connectorList[0].status === 'HEALTHY';
  }, { world });
  const out = await sms.send(new GetConnectorsCommand({}));
  const [c] = out.connectorList;
  assert.equal(out.$metadata.httpStatusCode, 200);
  assert.ok(out.$metadata.requestId, 'x-amzn-RequestId');
  assert.equal(c.vmManagerType, 'LIBVIRT');  // the managers are all of one kind: its type
  assert.deepEqual(c.capabilityList, ['LIBVIRT']);
  assert.ok(c.associatedOn instanceof Date);
  assert.equal(out.nextToken, undefined);
});

test('operations on an unknown job answer ReplicationJobNotFoundException', async () => {
  const replicationJobId = 'sms-job-0123456789abcdef0';
  for (const command of [
    new GetReplicationJobsCommand({ replicationJobId }),
    new GetReplicationRunsCommand({ replicationJobId }),
    new UpdateReplicationJobCommand({ replicationJobId, frequency: 12 }),
    new DeleteReplicationJobCommand({ replicationJobId }),
    new StartOnDemandReplicationRunCommand({ replicationJobId }),
  ]) {
    const e = await expectError(sms.send(command), 'ReplicationJobNotFoundException');
    assert.ok(e instanceof SMSServiceException);
    assert.match(e.message, new RegExp(replicationJobId));
  }
});

test('a request signed with the wrong secret is InvalidSignatureException', async () => {
  const client = world.client({
    region: REGION,
    maxAttempts: 1,
    credentials: { ...world.credentials, secretAccessKey: `${world.credentials.secretAccessKey.slice(0, -1)}x` },
  });
  const e = await expectError(client.send(new GetServersCommand({})), 'InvalidSignatureException');
  assert.match(e.message, /signature/i);
  client.destroy();
});

test('a request signed with an unknown access key is UnrecognizedClientException', async () => {
  const client = world.client({
    region: REGION,
    maxAttempts: 1,
    credentials: { accessKeyId: 'AKIAFERRYNOSUCHKEY00', secretAccessKey: 'x'.repeat(40) },
  });
  await expectError(client.send(new GetServersCommand({})), 'UnrecognizedClientException');
  client.destroy();
});

// An SDK client signing with the connector's own key (from its state directory), no retries.
function connectorClient() {
  const saved = JSON.parse(fs.readFileSync(path.join(world.dir, 'connector-state/credentials.json'), 'utf8'));
  return world.client({
    region: REGION,
    maxAttempts: 1,
    credentials: { accessKeyId: saved.accessKeyId, secretAccessKey: saved.secretAccessKey },
  });
}

test("a connector's own key may not call the SMS API", async () => {
  const client = connectorClient();
  await expectError(client.send(new GetServersCommand({})), 'AccessDeniedException');
  client.destroy();
});

test('a request signed 20 minutes ago is refused: Signature expired', async () => {
  // One attempt: on a retry the SDK would correct its clock from the answer's Date header (next test).
  const client = world.client({ region: REGION, maxAttempts: 1, systemClockOffset: -20 * MINUTE });
  const e = await expectError(client.send(new GetServersCommand({})), 'InvalidSignatureException');
  assert.match(e.message, /Signature expired/);
  client.destroy();
});

test("an SDK client whose clock is 20 minutes slow corrects it from the server's Date header and retries", async () => {
  const client = world.client({ region: REGION, systemClockOffset: -20 * MINUTE });
  const out = await client.send(new GetServersCommand({}));
  assert.equal(out.$metadata.httpStatusCode, 200);
  assert.equal(out.$metadata.attempts, 2);
  assert.ok(Math.abs(client.config.systemClockOffset) < MINUTE, `offset now ${client.config.systemClockOffset} ms`);
  client.destroy();
});

test('a connector without heartbeats turns UNHEALTHY, and HEALTHY again when they resume', async () => {
  assert.equal(await connectorStatus(), 'HEALTHY');
  world.connector.signal('SIGSTOP');
  try {
    await waitFor('the stopped connector to be UNHEALTHY', async () => (await connectorStatus()) === 'UNHEALTHY',
      { world, timeoutMs: 30000 });
    // No healthy connector to ask for an inventory.
    await expectError(sms.send(new ImportServerCatalogCommand({})), 'NoConnectorsAvailableException');
  } finally {
    world.connector.signal('SIGCONT');
  }
  await waitFor('the resumed connector to be HEALTHY', async () => (await connectorStatus()) === 'HEALTHY', { world });
});

test('DisassociateConnector removes the connector, whose credentials stop working', async () => {
  const [c] = (await sms.send(new GetConnectorsCommand({}))).connectorList;
  const asConnector = connectorClient();
  // Before: the server knows the key (it is only the wrong role for the SMS API).
  await expectError(asConnector.send(new GetServersCommand({})), 'AccessDeniedException');
  await sms.send(new DisassociateConnectorCommand({ connectorId: c.connectorId }));
  // After: the key is gone.
  await expectError(asConnector.send(new GetServersCommand({})), 'UnrecognizedClientException');
  asConnector.destroy();
  const { connectorList } = await sms.send(new GetConnectorsCommand({}));
  assert.deepEqual(connectorList, []);
  await expectError(sms.send(new DisassociateConnectorCommand({ connectorId: c.connectorId })), 'InvalidParameterException');
  await expectError(sms.send(new DisassociateConnectorCommand({})), 'MissingRequiredParameterException');
  // The connector learns it on its next heartbeat and stops.
  const exit = await waitFor('the disassociated connector to exit', () => !world.connector.running && { code: world.connector.exitCode },
    { world, timeoutMs: 30000 });
  assert.notEqual(exit.code, 0, 'a disassociated connector exits with an error');
});
