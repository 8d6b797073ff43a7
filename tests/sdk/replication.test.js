// The SMS acceptance flow driven by the official AWS SDK for JavaScript v3 against one ferry server and one
// connector: the server catalog, replication jobs, on-demand runs, the images they make and their retention.
// The tests run in file order and build on each other (ids in `servers`, `jobs`, `runs`).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  CreateReplicationJobCommand,
  DeleteReplicationJobCommand,
  GetConnectorsCommand,
  GetReplicationJobsCommand,
  GetReplicationRunsCommand,
  GetServersCommand,
  ImportServerCatalogCommand,
  StartOnDemandReplicationRunCommand,
  UpdateReplicationJobCommand,
  paginateGetReplicationJobs,
  paginateGetReplicationRuns,
  paginateGetServers,
} from '@aws-sdk/client-sms';
import { MiB, VMS, World, expectError, imagesIdentical, waitFor, writeRandom } from './lib/harness.js';

const HOUR = 3600e3;
// Far enough ahead that the scheduler starts no AUTOMATIC run while the tests run theirs on demand.
const seed = new Date(Date.now() + HOUR);

let world;
let sms;
const servers = {};  // VM name -> Server as GetServers returned it
const jobs = {};     // VM name -> replicationJobId
const runs = { web01: [], db01: [] };  // each job's COMPLETED runs, oldest first

before(async () => {
  world = await World.start();
  sms = world.client({ region: 'us-east-1' });
});

after(async () => {
  sms?.destroy();
  await world?.stop();
});

function allServers(input = {}) {
  return sms.send(new GetServersCommand(input));
}

// Every page of an SDK paginator: [[items of page 1], [items of page 2], ...].
async function pages(paginator, member) {
  const out = [];
  for await (const page of paginator) out.push(page[member]);
  return out;
}

async function waitForCatalog(count) {
  return waitFor(`the server catalog to be AVAILABLE with ${count} servers`, async () => {
    const out = await allServers();
    return out.serverCatalogStatus === 'AVAILABLE' && out.serverList.length === count && out;
  }, { world });
}

// Starts an on-demand run and waits for it to complete; returns the run as GetReplicationRuns shows it.
async function replicate(vm, description) {
  const jobId = jobs[vm];
  const { replicationRunId } = await sms.send(new StartOnDemandReplicationRunCommand({ replicationJobId: jobId, description }));
  assert.match(replicationRunId, /^sms-run-[0-9a-f]{17}$/);
  const run = await waitFor(`run ${replicationRunId} of ${vm} to complete`, async () => {
    const out = await sms.send(new GetReplicationRunsCommand({ replicationJobId: jobId }));
    const r = out.replicationRunList.find((x) => x.replicationRunId === replicationRunId);
    assert.ok(r, `run ${replicationRunId} is not in GetReplicationRuns of ${jobId}`);
    if (r.state === 'FAILED') throw new Error(`run ${replicationRunId} of ${vm} FAILED: ${r.statusMessage}${world.logs()}`);
    if (r.state !== 'COMPLETED') return false;
    // ferry's addition, which the SDK's model leaves out: read from the response JSON.
    r.bytesUploaded = out.$raw.replicationRunList.find((x) => x.replicationRunId === replicationRunId).bytesUploaded;
    return r;
  }, { world, timeoutMs: 120000 });
  assert.equal(run.type, 'ON_DEMAND');
  assert.equal(run.description, description);
  assert.match(run.amiId, /^ami-[0-9a-f]{17}$/);
  assert.ok(run.stageDetails && typeof run.stageDetails.stage === 'string', 'stageDetails.stage');
  assert.ok(run.scheduledStartTime instanceof Date);
  assert.ok(run.completedTime instanceof Date);
  assert.ok(run.completedTime >= run.scheduledStartTime);
  assert.equal(run.stageDetails.stageProgress, '100%');
  assert.equal(typeof run.bytesUploaded, 'number');
  runs[vm].push(run);
  return run;
}

// Exports every disk of the image with the ferry CLI (the server writes the file) and compares it with the
// source disk as it is now.
async function assertImageMatchesDisks(vm, amiId) {
  for (const disk of VMS[vm].disks) {
    const out = path.join(world.dir, `export-${amiId}-${disk.name.replace(':', '_')}.raw`);
    await world.cli(['images', 'export', amiId, '--disk', disk.name, '-f', 'raw', '-o', out]);
    const src = world.diskFile(vm, disk.name);
    assert.ok(await imagesIdentical(out, 'raw', src.file, src.format),
      `image ${amiId} disk ${disk.name} differs from ${src.file}`);
    fs.rmSync(out);
  }
}

test('GetConnectors lists the registered connector as HEALTHY with what it serves', async () => {
  const connector = await waitFor('the connector to register and be HEALTHY', async () => {
    const out = await sms.send(new GetConnectorsCommand({}));
    return out.connectorList.find((c) => c.status === 'HEALTHY');
  }, { world });
  assert.match(connector.connectorId, /^c-[0-9a-f]{17}$/);
  assert.ok(connector.version, 'version');
  assert.deepEqual([...connector.capabilityList].sort(), ['LIBVIRT', 'SNAPSHOT_BATCHING', 'VSPHERE']);
  assert.equal(connector.vmManagerName, 'esx1,kvm1');
  assert.equal(connector.vmManagerType, 'MULTIPLE');  // two kinds of manager; SMS's enum has no such value
  assert.equal(connector.ipAddress, '127.0.0.1');
  assert.ok(connector.associatedOn instanceof Date);
  // Epoch seconds read as seconds: within a day of now, not in 1970 or 50000 AD.
  assert.ok(Math.abs(connector.associatedOn.getTime() - Date.now()) < 24 * HOUR, String(connector.associatedOn));
});

test('ImportServerCatalog lists every VM, the unparsable one with its error, under ids stable across imports', async () => {
  const before = await allServers();
  assert.equal(before.serverCatalogStatus, 'NOT_IMPORTED');
  assert.deepEqual(before.serverList, []);

  await sms.send(new ImportServerCatalogCommand({}));
  const first = await waitForCatalog(3);
  assert.ok(first.lastModifiedOn instanceof Date);
  for (const s of first.serverList) {
    assert.match(s.serverId, /^s-[0-9a-f]{17}$/);
    assert.equal(s.serverType, 'VIRTUAL_MACHINE');
    assert.equal(s.replicationJobTerminated, false);
    servers[s.vmServer.vmName] = s;
  }
  assert.deepEqual(Object.keys(servers).sort(), ['broken01', 'db01', 'web01']);

  const web = servers.web01.vmServer;
  assert.equal(web.vmManagerType, 'VSPHERE');
  assert.equal(web.vmManagerName, 'esx1');
  assert.equal(web.vmServerAddress.vmId, '564d0a1b-2c3d-4e5f-6071-8293a4b5c6d7');
  assert.equal(web.vmPath, path.join(world.inventory, 'vmware/web01/web01.vmx'));
  assert.equal(servers.db01.vmServer.vmServerAddress.vmId, '7c1f0e6a-3b2d-4c5e-8f90-a1b2c3d4e5f6');
  assert.equal(servers.db01.vmServer.vmPath, path.join(world.inventory, 'libvirt/db01.xml'));
  // ferry's additions come through: the SDK passes Server objects on as they are.
  assert.deepEqual(servers.web01.disks.map((d) => d.name), ['scsi0:0', 'scsi0:1']);
  assert.deepEqual(servers.web01.disks.map((d) => d.size), [32 * MiB, 16 * MiB]);
  assert.equal(servers.web01.error, undefined);
  assert.match(servers.broken01.error, /broken01\.vmx line 3/);

  // The connector, stopped, cannot answer before the status is read.
  world.connector.signal('SIGSTOP');
  try {
    await sms.send(new ImportServerCatalogCommand({}));
    assert.equal((await allServers()).serverCatalogStatus, 'IMPORTING');
  } finally {
    world.connector.signal('SIGCONT');
  }
  const second = await waitForCatalog(3);
  const ids = (list) => Object.fromEntries(list.map((s) => [s.vmServer.vmName, s.serverId]));
  assert.deepEqual(ids(second.serverList), ids(first.serverList));
  assert.ok(second.lastModifiedOn >= first.lastModifiedOn);
});

test('GetServers pages with maxResults and nextToken, and filters by vmServerAddressList', async () => {
  const seen = [];
  let nextToken;
  do {
    const page = await allServers({ maxResults: 1, nextToken });
    assert.ok(page.serverList.length <= 1);
    seen.push(...page.serverList.map((s) => s.serverId));
    nextToken = page.nextToken;
  } while (nextToken);
  assert.deepEqual([...seen].sort(), Object.values(servers).map((s) => s.serverId).sort());
  // The SDK's own paginator walks the same pages.
  const walked = await pages(paginateGetServers({ client: sms, pageSize: 1 }, {}), 'serverList');
  assert.equal(walked.length, 3);
  assert.deepEqual(walked.flat().map((s) => s.serverId), seen);

  const db = await allServers({ vmServerAddressList: [servers.db01.vmServer.vmServerAddress] });
  assert.deepEqual(db.serverList.map((s) => s.serverId), [servers.db01.serverId]);
  const both = await allServers({
    vmServerAddressList: [servers.db01.vmServer.vmServerAddress, servers.web01.vmServer.vmServerAddress],
  });
  assert.deepEqual(both.serverList.map((s) => s.serverId).sort(), [servers.db01.serverId, servers.web01.serverId].sort());
  const none = await allServers({ vmServerAddressList: [{ vmManagerId: 'vmware:esx1', vmId: 'no-such-vm' }] });
  assert.deepEqual(none.serverList, []);

  await expectError(allServers({ maxResults: 0 }), 'InvalidParameterException');
});

test('CreateReplicationJob checks what it is given', async () => {
  const good = { serverId: servers.db01.serverId, seedReplicationTime: seed, frequency: 12 };
  // SDK v3 does not validate required members on the client: the server answers for them.
  const noServer = await expectError(sms.send(new CreateReplicationJobCommand({ ...good, serverId: undefined })),
    'MissingRequiredParameterException');
  assert.match(noServer.message, /serverId/);
  const noSeed = await expectError(sms.send(new CreateReplicationJobCommand({ ...good, seedReplicationTime: undefined })),
    'MissingRequiredParameterException');
  assert.match(noSeed.message, /seedReplicationTime/);
  for (const frequency of [0, 99]) {
    const e = await expectError(sms.send(new CreateReplicationJobCommand({ ...good, frequency })), 'InvalidParameterException');
    assert.match(e.message, /frequency/);
  }
  await expectError(sms.send(new CreateReplicationJobCommand({ ...good, licenseType: 'FREE' })), 'InvalidParameterException');
  const broken = await expectError(sms.send(new CreateReplicationJobCommand({ ...good, serverId: servers.broken01.serverId })),
    'ServerCannotBeReplicatedException');
  assert.match(broken.message, /broken01\.vmx/);
  await expectError(sms.send(new CreateReplicationJobCommand({ ...good, serverId: 's-00000000000000000' })),
    'InvalidParameterException');
  // None of them made a job.
  const out = await sms.send(new GetReplicationJobsCommand({}));
  assert.deepEqual(out.replicationJobList, []);
});

test('CreateReplicationJob makes one job per server, listed by GetReplicationJobs', async () => {
  for (const [vm, encrypted] of [['web01', true], ['db01', false]]) {
    const out = await sms.send(new CreateReplicationJobCommand({
      serverId: servers[vm].serverId,
      seedReplicationTime: seed,
      frequency: 12,
      numberOfRecentAmisToKeep: 2,
      encrypted,
      description: `${vm} to the cloud`,
    }));
    assert.match(out.replicationJobId, /^sms-job-[0-9a-f]{17}$/);
    jobs[vm] = out.replicationJobId;
  }
  const again = await expectError(sms.send(new CreateReplicationJobCommand({
    serverId: servers.db01.serverId, seedReplicationTime: seed, frequency: 12,
  })), 'ReplicationJobAlreadyExistsException');
  assert.match(again.message, new RegExp(servers.db01.serverId));

  const { replicationJobList } = await sms.send(new GetReplicationJobsCommand({}));
  assert.deepEqual(replicationJobList.map((j) => j.replicationJobId).sort(), Object.values(jobs).sort());
  const seedSeconds = Math.round(seed.getTime() / 1000) * 1000;  // the SDK sends whole epoch seconds
  for (const [vm, id] of Object.entries(jobs)) {
    const job = replicationJobList.find((j) => j.replicationJobId === id);
    assert.equal(job.serverId, servers[vm].serverId);
    assert.equal(job.serverType, 'VIRTUAL_MACHINE');
    assert.equal(job.state, 'PENDING');
    assert.equal(job.frequency, 12);
    assert.equal(job.runOnce, false);
    assert.equal(job.numberOfRecentAmisToKeep, 2);
    assert.equal(job.encrypted, vm === 'web01');
    assert.equal(job.description, `${vm} to the cloud`);
    assert.equal(job.licenseType, 'AWS');
    assert.ok(job.seedReplicationTime instanceof Date);
    assert.equal(job.seedReplicationTime.getTime(), seedSeconds);
    assert.ok(job.nextReplicationRunStartTime instanceof Date);
    assert.equal(job.nextReplicationRunStartTime.getTime(), seedSeconds);
    assert.equal(job.vmServer.vmName, vm);
    assert.deepEqual(job.replicationRunList, []);
  }
  const walked = await pages(paginateGetReplicationJobs({ client: sms, pageSize: 1 }, {}), 'replicationJobList');
  assert.deepEqual(walked.map((p) => p.length), [1, 1]);
  assert.deepEqual(walked.flat().map((j) => j.replicationJobId).sort(), Object.values(jobs).sort());

  // The server catalog names each server's job.
  const listed = await allServers({ vmServerAddressList: [servers.web01.vmServer.vmServerAddress] });
  assert.equal(listed.serverList[0].replicationJobId, jobs.web01);
});

test('StartOnDemandReplicationRun is refused while the job has a run PENDING', async () => {
  // A stopped connector cannot pick the run up: it stays PENDING for as long as the check takes.
  world.connector.signal('SIGSTOP');
  let first;
  try {
    first = await sms.send(new StartOnDemandReplicationRunCommand({ replicationJobId: jobs.db01, description: 'seed' }));
    const e = await expectError(sms.send(new StartOnDemandReplicationRunCommand({ replicationJobId: jobs.db01 })),
      'ReplicationRunLimitExceededException');
    assert.match(e.message, new RegExp(jobs.db01));
    const out = await sms.send(new GetReplicationRunsCommand({ replicationJobId: jobs.db01 }));
    assert.deepEqual(out.replicationRunList.map((r) => [r.replicationRunId, r.state]), [[first.replicationRunId, 'PENDING']]);
    assert.equal(out.replicationJob.replicationJobId, jobs.db01);
    assert.equal(out.replicationJob.state, 'ACTIVE');
  } finally {
    world.connector.signal('SIGCONT');
  }
  // The connector does that run now; wait for it so the next test starts from a quiet job.
  await waitFor('the seed run of db01 to complete', async () => {
    const out = await sms.send(new GetReplicationRunsCommand({ replicationJobId: jobs.db01 }));
    const r = out.replicationRunList[0];
    if (r.state === 'FAILED') throw new Error(`run ${r.replicationRunId} FAILED: ${r.statusMessage}${world.logs()}`);
    if (r.state !== 'COMPLETED') return false;
    r.bytesUploaded = out.$raw.replicationRunList[0].bytesUploaded;
    runs.db01.push(r);
    return true;
  }, { world, timeoutMs: 120000 });
});

test('the first runs copy every disk: the images read as the source disks', async () => {
  await replicate('web01', 'seed');
  const [db] = runs.db01;
  assert.match(db.amiId, /^ami-[0-9a-f]{17}$/);
  assert.ok(db.stageDetails, 'stageDetails');
  for (const vm of ['web01', 'db01']) {
    await assertImageMatchesDisks(vm, runs[vm][0].amiId);
    // Random data neither compresses nor deduplicates: the seed uploads at least what was written.
    const written = VMS[vm].disks.reduce((n, d) => n + d.random[1], 0);
    assert.ok(runs[vm][0].bytesUploaded >= written, `${vm} seed uploaded ${runs[vm][0].bytesUploaded} bytes < ${written}`);
  }
  const { replicationJobList } = await sms.send(new GetReplicationJobsCommand({ replicationJobId: jobs.web01 }));
  assert.equal(replicationJobList[0].latestAmiId, runs.web01[0].amiId);
  assert.equal(replicationJobList[0].replicationRunList[0].encrypted, true);
});

test('a second run after a change uploads only what changed, and its image reads as the changed disk', async () => {
  const changed = 2 * MiB;
  const db = world.diskFile('db01', 'vda');
  // The disk as the first image saw it, kept to check that image still reads so after the change.
  const before = path.join(world.dir, 'db01-vda-before');
  fs.copyFileSync(db.file, before);
  await writeRandom(db.file, db.format, 30 * MiB, changed);
  const web = world.diskFile('web01', 'scsi0:1');
  await writeRandom(web.file, web.format, 1 * MiB, changed);
  for (const vm of ['db01', 'web01']) {
    const [seedRun, second] = [runs[vm][0], await replicate(vm, 'after a change')];
    assert.notEqual(second.amiId, seedRun.amiId);
    await assertImageMatchesDisks(vm, second.amiId);
    assert.ok(second.bytesUploaded >= changed, `${vm}: second run uploaded ${second.bytesUploaded} bytes < the ${changed} changed`);
    assert.ok(second.bytesUploaded < seedRun.bytesUploaded / 4,
      `${vm}: second run uploaded ${second.bytesUploaded} bytes, the seed ${seedRun.bytesUploaded}`);
  }
  // The first image of db01 still reads as the disk was before the change, and not as it is now.
  const first = runs.db01[0].amiId;
  const out = path.join(world.dir, 'db01-first.raw');
  await world.cli(['images', 'export', first, '--disk', 'vda', '-f', 'raw', '-o', out]);
  assert.ok(await imagesIdentical(out, 'raw', before, db.format), 'the first image differs from the disk as it was then');
  assert.ok(!(await imagesIdentical(out, 'raw', db.file, db.format)), 'the first image reads as the changed disk');
  fs.rmSync(before);
});

test('numberOfRecentAmisToKeep 2 keeps the two newest images of three', async () => {
  const third = await replicate('db01', 'third');
  await assertImageMatchesDisks('db01', third.amiId);
  // The run shows COMPLETED as its image is recorded; the oldest image goes right after, in the same call.
  const images = await waitFor('the oldest image of db01 to be deleted', async () => {
    const list = await world.cliJson(['images', 'list', '--job', jobs.db01]);
    return list.length <= 2 && list;
  }, { world, timeoutMs: 30000 });
  assert.deepEqual(images.map((i) => i.imageId).sort(), [runs.db01[1].amiId, runs.db01[2].amiId].sort());
  for (const i of images) {
    assert.equal(i.replicationJobId, jobs.db01);
    assert.equal(i.serverId, servers.db01.serverId);
    assert.deepEqual(i.disks.map((d) => d.name), ['vda']);
  }
  // The runs stay listed with their amiId even after the image is gone, as in SMS.
  const listed = await pages(paginateGetReplicationRuns({ client: sms, pageSize: 2 }, { replicationJobId: jobs.db01 }),
    'replicationRunList');
  assert.deepEqual(listed.map((p) => p.length), [2, 1]);
  assert.deepEqual(listed.flat().map((r) => r.amiId).sort(), runs.db01.map((r) => r.amiId).sort());
  assert.ok(listed.flat().every((r) => r.state === 'COMPLETED'));
});

test('UpdateReplicationJob changes frequency, description and retention', async () => {
  const next = new Date(Date.now() + 2 * HOUR);
  await sms.send(new UpdateReplicationJobCommand({
    replicationJobId: jobs.web01,
    frequency: 24,
    description: 'updated by the SDK test',
    numberOfRecentAmisToKeep: 1,
    nextReplicationRunStartTime: next,
  }));
  const { replicationJobList: [job] } = await sms.send(new GetReplicationJobsCommand({ replicationJobId: jobs.web01 }));
  assert.equal(job.frequency, 24);
  assert.equal(job.description, 'updated by the SDK test');
  assert.equal(job.numberOfRecentAmisToKeep, 1);
  assert.equal(job.nextReplicationRunStartTime.getTime(), Math.round(next.getTime() / 1000) * 1000);
  assert.equal(job.encrypted, true);  // members left out are left alone
  // Keeping one image deletes the older of web01's two at once.
  const images = await world.cliJson(['images', 'list', '--job', jobs.web01]);
  assert.deepEqual(images.map((i) => i.imageId), [runs.web01[1].amiId]);

  for (const frequency of [0, 99]) {
    await expectError(sms.send(new UpdateReplicationJobCommand({ replicationJobId: jobs.web01, frequency })), 'InvalidParameterException');
  }
  await expectError(sms.send(new UpdateReplicationJobCommand({ frequency: 12 })), 'MissingRequiredParameterException');
});

test('DeleteReplicationJob removes the job; later calls with its id are ReplicationJobNotFoundException', async () => {
  await sms.send(new DeleteReplicationJobCommand({ replicationJobId: jobs.web01 }));
  const e = await expectError(sms.send(new GetReplicationJobsCommand({ replicationJobId: jobs.web01 })),
    'ReplicationJobNotFoundException');
  assert.match(e.message, new RegExp(jobs.web01));
  await expectError(sms.send(new GetReplicationRunsCommand({ replicationJobId: jobs.web01 })), 'ReplicationJobNotFoundException');
  await expectError(sms.send(new DeleteReplicationJobCommand({ replicationJobId: jobs.web01 })), 'ReplicationJobNotFoundException');
  const { replicationJobList } = await sms.send(new GetReplicationJobsCommand({}));
  assert.deepEqual(replicationJobList.map((j) => j.replicationJobId), [jobs.db01]);
  // Its server can be given a new job.
  const out = await sms.send(new CreateReplicationJobCommand({ serverId: servers.web01.serverId, seedReplicationTime: seed, runOnce: true }));
  assert.notEqual(out.replicationJobId, jobs.web01);
});
