// Test harness for the SDK suite: a ferry server and a connector started as processes on a temporary data
// directory, a VM inventory generated with qemu-img/qemu-io, and SMS clients from the official AWS SDK.
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { SMSClient } from '@aws-sdk/client-sms';

const execFileP = promisify(execFile);

export const MiB = 1024 * 1024;
export { sleep };

export const FERRY = process.env.FERRY_BINARY;
if (!FERRY || !fs.existsSync(FERRY)) {
  throw new Error(`FERRY_BINARY must name the built ferry binary (ctest sets it); got '${FERRY ?? ''}'`);
}

// Every process a test started, killed on the way out however the test ends. setpriv's parent-death signal
// also takes them down if this process is killed outright (ctest's timeout), when no handler runs.
const live = new Set();
const DEATHSIG = fs.existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--'] : [];
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const p of live) p.kill('SIGKILL');
    process.exit(128 + os.constants.signals[signal]);
  });
}

// Runs a program to completion; throws with its stderr if it exits non-zero.
export async function run(program, args, options = {}) {
  try {
    return await execFileP(program, args, { maxBuffer: 64 * MiB, ...options });
  } catch (e) {
    const detail = [e.stderr, e.stdout].filter(Boolean).join('\n').trim();
    const how = e.signal ? `killed by ${e.signal}` : `exit ${e.code}`;
    throw new Error(`${path.basename(program)} ${args.join(' ')} failed (${how}): ${detail || e.message}`);
  }
}

// --- Disks ---

export async function makeDisk(file, format, sizeMiB) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', format, file, `${sizeMiB}M`]);
}

// Writes `length` random bytes at `offset`: data that neither compresses nor deduplicates, so the bytes a run
// uploads measure what it found changed.
export async function writeRandom(file, format, offset, length) {
  const source = path.join(os.tmpdir(), `ferry-sdk-random-${crypto.randomUUID()}`);
  fs.writeFileSync(source, crypto.randomBytes(length));
  try {
    await run('qemu-io', ['-f', format, '-c', `write -q -s ${source} ${offset} ${length}`, file]);
  } finally {
    fs.rmSync(source, { force: true });
  }
}

// qemu-img compare: true when both images read the same (a longer one must read zeros past the shorter's end).
export async function imagesIdentical(a, aFormat, b, bFormat) {
  try {
    await execFileP('qemu-img', ['compare', '-q', '-U', '-f', aFormat, '-F', bFormat, a, b]);
    return true;
  } catch (e) {
    if (e.code === 1) return false;
    throw new Error(`qemu-img compare ${a} ${b} failed: ${e.stderr || e.message}`);
  }
}

// --- Inventory ---

// The VMs the connector serves. `disks` name the files the tests write into; `format` is qemu's name for them.
export const VMS = {
  // VMware VM with two VMDKs (the SMS disk names are the vmx device keys).
  web01: {
    manager: 'vmware',
    disks: [
      { name: 'scsi0:0', file: 'vmware/web01/web01.vmdk', format: 'vmdk', sizeMiB: 32, random: [0, 12 * MiB] },
      { name: 'scsi0:1', file: 'vmware/web01/web01_1.vmdk', format: 'vmdk', sizeMiB: 16, random: [4 * MiB, 6 * MiB] },
    ],
  },
  // libvirt domain with one qcow2 disk.
  db01: {
    manager: 'libvirt',
    disks: [{ name: 'vda', file: 'images/db01.qcow2', format: 'qcow2', sizeMiB: 48, random: [8 * MiB, 16 * MiB] }],
  },
};

const WEB01_VMX = `.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web01"
guestOS = "ubuntu-64"
numvcpus = "2"
memSize = "2048"
uuid.bios = "56 4d 0a 1b 2c 3d 4e 5f-60 71 82 93 a4 b5 c6 d7"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web01.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "web01_1.vmdk"
ethernet0.present = "TRUE"
`;

// Line 3 lacks its '=': the connector reports the VM with an error instead of leaving it out.
const BROKEN_VMX = 'displayName = "broken01"\n\nscsi0:0.fileName "broken01.vmdk"\n';

function domainXml(name, uuid, disk) {
  return `<domain type='kvm'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
`;
}

// Writes the inventory under `root` and returns the connector configuration's path. `names` picks VMS entries;
// the connector serves the managers they need, and the VMware datastore also holds a VM whose .vmx is broken.
export async function makeInventory(root, names = Object.keys(VMS)) {
  const jobs = [];
  for (const name of names) {
    for (const d of VMS[name].disks) {
      const file = path.join(root, d.file);
      jobs.push(makeDisk(file, d.format, d.sizeMiB).then(() => writeRandom(file, d.format, ...d.random)));
    }
  }
  await Promise.all(jobs);
  const managers = [];
  if (names.some((n) => VMS[n].manager === 'vmware')) {
    managers.push({ type: 'vmware', name: 'esx1', path: 'vmware' });
    fs.mkdirSync(path.join(root, 'vmware/broken01'), { recursive: true });
    fs.writeFileSync(path.join(root, 'vmware/broken01/broken01.vmx'), BROKEN_VMX);
    if (names.includes('web01')) fs.writeFileSync(path.join(root, 'vmware/web01/web01.vmx'), WEB01_VMX);
  }
  if (names.some((n) => VMS[n].manager === 'libvirt')) {
    // The disks live beside the XML directory (as /var/lib/libvirt/images beside /etc/libvirt/qemu): allowed.
    managers.push({ type: 'libvirt', name: 'kvm1', path: 'libvirt', allow: [path.dirname(VMS.db01.disks[0].file)] });
    fs.mkdirSync(path.join(root, 'libvirt'), { recursive: true });
    fs.writeFileSync(path.join(root, 'libvirt/db01.xml'),
      domainXml('db01', '7c1f0e6a-3b2d-4c5e-8f90-a1b2c3d4e5f6', path.join(root, VMS.db01.disks[0].file)));
  }
  const config = path.join(root, 'connector.json');
  fs.writeFileSync(config, JSON.stringify({ name: 'dc1', managers }, null, 2));
  return config;
}

// --- Processes ---

export class Process {
  constructor(name, args, logFile, env) {
    this.name = name;
    this.logFile = logFile;
    const log = fs.openSync(logFile, 'a');
    const argv = [...DEATHSIG, FERRY, ...args];
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', log, log], env });
    fs.closeSync(log);
    live.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        live.delete(this.child);
        this.exitCode = code;
        this.exitSignal = signal;
        resolve({ code, signal });
      });
    });
  }

  get running() { return this.exitCode === undefined && this.exitSignal === undefined; }

  signal(sig) { if (this.running) this.child.kill(sig); }

  async stop() {
    if (!this.running) return;
    this.child.kill('SIGCONT');  // a stopped process cannot act on SIGTERM
    this.child.kill('SIGTERM');
    const killed = await Promise.race([this.exited, sleep(10000).then(() => null)]);
    if (!killed) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  tail(lines = 30) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

// Polls `probe` every `intervalMs` until it returns a truthy value, which is returned. A probe may throw to
// give up early (a FAILED run). On timeout the error carries the server's and connector's last log lines.
export async function waitFor(what, probe, { timeoutMs = 60000, intervalMs = 200, world } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${world ? world.logs() : ''}`);
    }
    await sleep(intervalMs);
  }
}

// A ferry server with its own data directory and one connector serving a generated inventory (`vms`: names in
// VMS). stop() ends both and removes the directory (kept when FERRY_SDK_KEEP is set, for a post-mortem).
export class World {
  static async start({ connectorTimeout = 3, vms } = {}) {
    const w = new World();
    w.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sdk-'));
    try {
      await w.#startServer(connectorTimeout);
      await w.#startConnector(vms);
    } catch (e) {
      await w.stop();
      throw e;
    }
    return w;
  }

  async #startServer(connectorTimeout) {
    const data = path.join(this.dir, 'data');
    const { stdout } = await run(FERRY, ['server', 'init', '--data', data, '--json']);
    const init = JSON.parse(stdout);
    fs.writeFileSync(path.join(this.dir, 'admin.json'), stdout, { mode: 0o600 });  // for a post-mortem (FERRY_SDK_KEEP)
    this.dataDir = data;
    this.credentials = { accessKeyId: init.accessKeyId, secretAccessKey: init.secretAccessKey };
    const addressFile = path.join(this.dir, 'address');
    // Exports may go anywhere in the test's directory (the server writes only below its --export-dir).
    this.server = new Process('server', ['server', '--data', data, '--listen', '127.0.0.1:0', '--address-file', addressFile,
      '--connector-timeout', String(connectorTimeout), '--export-dir', this.dir], path.join(this.dir, 'server.log'), process.env);
    this.url = await waitFor('the server to write its address', () => {
      if (!this.server.running) throw new Error(`ferry server exited (${this.server.exitCode ?? this.server.exitSignal}):\n${this.server.tail()}`);
      return fs.existsSync(addressFile) && fs.readFileSync(addressFile, 'utf8').trim();
    }, { timeoutMs: 30000, intervalMs: 50 });
    const health = await fetch(`${this.url}/health`);
    if ((await health.text()).trim() !== 'ok') throw new Error(`${this.url}/health did not answer ok`);
  }

  async #startConnector(vms) {
    const inventory = path.join(this.dir, 'inventory');
    this.inventory = inventory;
    const config = await makeInventory(inventory, vms);
    const token = (await this.cli(['connectors', 'token'])).stdout.trim();
    this.connector = new Process('connector', ['connector', '--server', this.url, '--token', token, '--config', config,
      '--state', path.join(this.dir, 'connector-state'), '--poll-interval-ms', '200', '--threads', '2'],
    path.join(this.dir, 'connector.log'), process.env);
  }

  // The environment the ferry CLI reads its endpoint and admin key from; no profile file from the user's home.
  get cliEnv() {
    return {
      ...process.env,
      FERRY_ENDPOINT: this.url,
      AWS_ACCESS_KEY_ID: this.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: this.credentials.secretAccessKey,
      FERRY_CONFIG: path.join(this.dir, 'ferry-config'),
    };
  }

  cli(args) { return run(FERRY, args, { env: this.cliEnv }); }

  async cliJson(args) { return JSON.parse((await this.cli([...args, '--json'])).stdout); }

  // Absolute path of a VM disk's file in the inventory.
  diskFile(vm, diskName) {
    const d = VMS[vm].disks.find((x) => x.name === diskName);
    return { file: path.join(this.inventory, d.file), format: d.format };
  }

  // An SMS client of the official SDK pointed at this server. `options` go to the SMSClient constructor.
  client({ region = 'us-east-1', ...options } = {}) {
    const client = new SMSClient({ endpoint: this.url, region, credentials: this.credentials, ...options });
    captureRawBodies(client);
    return client;
  }

  logs() {
    return [this.server, this.connector].filter(Boolean)
      .map((p) => `\n--- ${p.name} log (${p.logFile}) ---\n${p.tail()}`).join('');
  }

  async stop() {
    await Promise.all([this.connector?.stop(), this.server?.stop()]);
    if (this.dir && !process.env.FERRY_SDK_KEEP) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// The SDK keeps only the members its model knows; ferry's additions (a run's bytesUploaded) are read from the
// response JSON itself. The innermost middleware buffers the body before the SDK parses it; the outermost hangs
// the parsed JSON on the command's output as a non-enumerable `$raw`.
function captureRawBodies(client) {
  client.middlewareStack.add((next) => async (args) => {
    const result = await next(args);
    const chunks = [];
    for await (const chunk of result.response.body) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    result.response.body = new Uint8Array(body);
    try {
      result.response.ferryRawJson = JSON.parse(body.toString('utf8') || '{}');
    } catch {
      // Not JSON: the SDK will say so itself.
    }
    return result;
  }, { step: 'deserialize', priority: 'low', name: 'ferryBufferBody' });
  client.middlewareStack.add((next) => async (args) => {
    const result = await next(args);
    if (result.output && result.response?.ferryRawJson) {
      Object.defineProperty(result.output, '$raw', { value: result.response.ferryRawJson, enumerable: false });
    }
    return result;
  }, { step: 'initialize', priority: 'high', name: 'ferryRawOutput' });
}

// Runs `promise` expecting an SMS error; returns it after checking its name and HTTP status.
export async function expectError(promise, name, status = 400) {
  let error;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  if (!error) throw new Error(`expected ${name}, but the call succeeded`);
  if (error.name !== name || error.$metadata?.httpStatusCode !== status) {
    throw new Error(`expected ${name} (HTTP ${status}), got ${error.name} (HTTP ${error.$metadata?.httpStatusCode}): ${error.message}`);
  }
  return error;
}
