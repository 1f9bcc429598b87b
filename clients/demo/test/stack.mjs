// The services for one browser test, started the way clients/typescript's end-to-end tests do:
// the debug binaries (../../target/debug, or RETICH_BIN_DIR) with a fresh PostgreSQL database,
// their own NATS subject prefix, Redis key prefix and JWT secret, on free ports. api-service
// serves the built demo (DEMO_DIR) with a users.json of two fresh users next to it.
//
// Builds nothing: `cargo build -p api-service -p ws-gateway` first.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const DEMO_ROOT = resolve(here, "..");
const BIN_DIR = process.env.RETICH_BIN_DIR ?? resolve(DEMO_ROOT, "../../target/debug");
const PG_HOST = process.env.RETICH_PG_HOST ?? "127.0.0.1";
const PG_PORT = process.env.RETICH_PG_PORT ?? "5432";
const PG_USER = process.env.RETICH_PG_USER ?? "root";
const REDIS_URL = process.env.RETICH_REDIS_URL ?? "redis://127.0.0.1:6379";
const NATS_URL = process.env.RETICH_NATS_URL ?? "nats://127.0.0.1:4222";
const VERBOSE = process.env.RETICH_TEST_LOGS === "1";

function binary(name) {
  const path = join(BIN_DIR, name);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: build it first (cargo build -p api-service -p ws-gateway) or set RETICH_BIN_DIR`);
  }
  return path;
}

/** A port that was free a moment ago. */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it is true; fails after `timeoutMs` naming `what`. */
async function eventually(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function httpStatus(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000), redirect: "manual" });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return undefined;
  }
}

/** A child process whose last output lines are kept for failure messages. */
class Proc {
  constructor(name, command, args, env) {
    this.name = name;
    this.log = [];
    this.child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk) => {
      const text = chunk.toString();
      if (VERBOSE) process.stderr.write(`[${name}] ${text}`);
      this.log.push(text);
      if (this.log.length > 200) this.log.shift();
    };
    this.child.stdout.on("data", keep);
    this.child.stderr.on("data", keep);
    this.exited = new Promise((r) => this.child.once("exit", r));
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000) {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  tail(lines = 20) {
    return this.log.join("").split("\n").slice(-lines).join("\n");
  }
}

export class Stack {
  id = randomBytes(6).toString("hex");
  dbName = `demo_test_${this.id}`;
  secret = `demo-secret-${this.id}`;
  uploadDir = mkdtempSync(join(tmpdir(), "retich-demo-uploads-"));
  /** The built demo plus users.json: what DEMO_DIR points at. */
  demoDir = mkdtempSync(join(tmpdir(), "retich-demo-site-"));
  procs = [];
  migrated = false;

  env() {
    return {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      LOG_FORMAT: "text",
      DATABASE_URL: `postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${this.dbName}`,
      NATS_URL,
      NATS_SUBJECT_PREFIX: `demotest${this.id}`,
      REDIS_URL,
      REDIS_KEY_PREFIX: `demotest:${this.id}`,
      JWT_SECRET: this.secret,
      AUTH_MODE: "jwt",
    };
  }

  /**
   * Starts everything. `users` are names; each gets a fresh id and a token in users.json.
   */
  static async start(users = ["Alice", "Bob"]) {
    const stack = new Stack();
    try {
      await stack.boot(users);
    } catch (error) {
      await stack.stop();
      throw error;
    }
    return stack;
  }

  async boot(names) {
    const built = join(DEMO_ROOT, "dist");
    if (!existsSync(join(built, "index.html")) || !existsSync(join(built, "lib/index.js"))) {
      throw new Error(`${built} is not built: npm run build`);
    }
    const api = binary("api-service");
    binary("ws-gateway");

    // Creates the database and applies the migrations.
    const migrate = spawnSync(api, ["migrate", "up"], { env: this.env(), encoding: "utf8", timeout: 120_000 });
    if (migrate.status !== 0) throw new Error(`api-service migrate up failed: ${migrate.stderr}${migrate.stdout}`);
    this.migrated = true;

    // What `make dev` puts in DEMO_DIR: the built demo and users.json.
    cpSync(built, this.demoDir, { recursive: true });
    this.users = names.map((name) => {
      const id = randomUUID();
      return { name, id, token: this.token(id) };
    });
    writeFileSync(join(this.demoDir, "users.json"), `${JSON.stringify(this.users, null, 2)}\n`);

    this.apiPort = await freePort();
    this.gatewayPort = await freePort();
    this.api = this.spawn("api-service", api, {
      PORT: String(this.apiPort),
      UPLOAD_DIR: this.uploadDir,
      UPLOAD_BASE_URL: `${this.apiUrl}/uploads`,
      DATABASE_MAX_CONNECTIONS: "8",
      DEMO_DIR: this.demoDir,
      // The test sends 50 messages at once over REST (the default burst is 40).
      RATE_LIMIT_MESSAGES_BURST: "100",
    });
    await this.waitReady(this.api, `${this.apiUrl}/ready`);
    await this.startGateway();
    await this.checkDemo();
  }

  async waitReady(proc, url) {
    await eventually(`${proc.name} /ready`, async () => {
      if (!proc.running) throw new Error(`${proc.name} exited:\n${proc.tail()}`);
      return (await httpStatus(url)) === 200;
    });
  }

  /** Starts ws-gateway (again) on its port and waits until it is ready. */
  async startGateway() {
    this.gateway = this.spawn("ws-gateway", binary("ws-gateway"), {
      PORT: String(this.gatewayPort),
      DATABASE_MAX_CONNECTIONS: "4",
      WS_DRAIN_SECONDS: "1",
      // A killed gateway's presence entries expire after 3 s instead of about 40 s.
      PRESENCE_HEARTBEAT_SECONDS: "1",
      PRESENCE_EXPIRY_SECONDS: "3",
    });
    await this.waitReady(this.gateway, `http://127.0.0.1:${this.gatewayPort}/ready`);
  }

  /** Kills ws-gateway (SIGKILL: its sockets drop without a close frame). */
  async killGateway() {
    this.gateway.child.kill("SIGKILL");
    await this.gateway.exited;
  }

  /** api-service serves DEMO_DIR: /demo redirects to /demo/, which is index.html. */
  async checkDemo() {
    const redirect = await httpStatus(`${this.apiUrl}/demo`);
    const index = await httpStatus(`${this.apiUrl}/demo/`);
    if (redirect !== 302 && redirect !== 301 && redirect !== 307 && redirect !== 308) {
      throw new Error(`GET /demo answered ${redirect}, not a redirect to /demo/: does this api-service serve DEMO_DIR?`);
    }
    if (index !== 200) throw new Error(`GET /demo/ answered ${index}, not 200 with index.html`);
  }

  spawn(name, command, extraEnv) {
    const proc = new Proc(name, command, ["serve"], { ...this.env(), ...extraEnv });
    this.procs.push(proc);
    return proc;
  }

  get apiUrl() {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  get gatewayUrl() {
    return `ws://127.0.0.1:${this.gatewayPort}/ws`;
  }

  /** The demo's address for this stack (the gateway is on another port: `?ws=`). */
  get demoUrl() {
    return `${this.apiUrl}/demo/?ws=${encodeURIComponent(this.gatewayUrl)}`;
  }

  /** A JWT for `user`, minted by `api-service token` with this stack's secret. */
  token(user) {
    const out = spawnSync(binary("api-service"), ["token", "--user", user, "--hours", "1"], {
      env: this.env(),
      encoding: "utf8",
    });
    if (out.status !== 0) throw new Error(`api-service token failed: ${out.stderr}`);
    return out.stdout.trim();
  }

  /** The services' last log lines (for failure messages). */
  logs() {
    return this.procs.map((p) => `--- ${p.name}\n${p.tail()}`).join("\n");
  }

  async stop() {
    await Promise.all(this.procs.map((p) => p.stop()));
    if (this.migrated) {
      spawnSync(
        "psql",
        ["-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres", "-qc", `drop database if exists "${this.dbName}" with (force)`],
        { encoding: "utf8", timeout: 30_000 },
      );
    }
    cleanRedis(`demotest:${this.id}`);
    rmSync(this.uploadDir, { recursive: true, force: true });
    rmSync(this.demoDir, { recursive: true, force: true });
  }
}

/** Deletes the test's Redis keys (best effort; most expire anyway). */
function cleanRedis(prefix) {
  const url = new URL(REDIS_URL);
  const args = ["-h", url.hostname, "-p", url.port || "6379"];
  const scan = spawnSync("redis-cli", [...args, "--scan", "--pattern", `${prefix}:*`], { encoding: "utf8" });
  if (scan.status !== 0 || !scan.stdout.trim()) return;
  const keys = scan.stdout.trim().split("\n");
  for (let i = 0; i < keys.length; i += 500) spawnSync("redis-cli", [...args, "del", ...keys.slice(i, i + 500)]);
}
