// The test harness: a stack of the real binaries for one test — its own PostgreSQL database,
// NATS subject prefix, Redis key prefix and JWT secret, an api-service and one or more
// ws-gateways on free ports, optionally a nats-server of its own. Builds nothing: the binaries
// are expected in ../../target/debug (override with RETICH_BIN_DIR).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

import {
  MessagingApi,
  RealtimeConnection,
  type MessagingApiOptions,
  type RealtimeOptions,
  type WebSocketConstructor,
} from "../../src/index.js";

/** The package root (this file is build/test/e2e/stack.js once compiled). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("package.json not found");
    dir = parent;
  }
  return dir;
}

export const BIN_DIR = process.env.RETICH_BIN_DIR ?? resolve(packageRoot(), "../../target/debug");
const PG_HOST = process.env.RETICH_PG_HOST ?? "127.0.0.1";
const PG_PORT = process.env.RETICH_PG_PORT ?? "5432";
const PG_USER = process.env.RETICH_PG_USER ?? "root";
const REDIS_URL = process.env.RETICH_REDIS_URL ?? "redis://127.0.0.1:6379";
const SHARED_NATS_URL = process.env.RETICH_NATS_URL ?? "nats://127.0.0.1:4222";
const VERBOSE = process.env.RETICH_TEST_LOGS === "1";

/** The `ws` package's WebSocket, as the client's constructor type. */
export const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;

export function binary(name: "api-service" | "ws-gateway"): string {
  const path = join(BIN_DIR, name);
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing: build it first (cargo build -p api-service -p ws-gateway) or set RETICH_BIN_DIR`,
    );
  }
  return path;
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` every 25 ms until it is true; fails after `timeoutMs` with `what`. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A child process whose output is kept (printed when a test fails, or with RETICH_TEST_LOGS=1). */
export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly log: string[] = [];
  private exited: Promise<number | null>;

  constructor(name: string, command: string, args: string[], env: Record<string, string>) {
    this.name = name;
    this.child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk: Buffer) => {
      const text = chunk.toString();
      if (VERBOSE) process.stderr.write(`[${name}] ${text}`);
      this.log.push(text);
      if (this.log.length > 400) this.log.shift();
    };
    this.child.stdout?.on("data", keep);
    this.child.stderr?.on("data", keep);
    this.exited = new Promise((r) => this.child.once("exit", (code) => r(code)));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL, and waits for the exit. */
  async kill(): Promise<void> {
    if (this.running) this.child.kill("SIGKILL");
    await this.exited;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  tail(lines = 40): string {
    return this.log.join("").split("\n").slice(-lines).join("\n");
  }
}

async function httpStatus(url: string): Promise<number | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return undefined;
  }
}

/** A nats-server of the test's own on a free port that can be SIGKILLed and restarted on that port. */
export class OwnNats {
  port = 0;
  private proc: Proc | undefined;

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<OwnNats> {
    const nats = new OwnNats();
    nats.port = await freePort();
    await nats.restart();
    return nats;
  }

  async kill(): Promise<void> {
    await this.proc?.kill();
    this.proc = undefined;
  }

  /** Starts (again) on the same port and waits until it accepts connections. */
  async restart(): Promise<void> {
    await this.kill();
    const bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].find(existsSync) ?? "nats-server";
    this.proc = new Proc(`nats:${this.port}`, bin, ["-a", "127.0.0.1", "-p", String(this.port)], { ...process.env } as Record<string, string>);
    await eventually(`nats-server on ${this.port}`, async () => {
      const info = await readLine(this.port);
      return info?.startsWith("INFO") ?? false;
    });
  }
}

/** Connects and reads the first line the server sends (NATS greets with INFO). */
function readLine(port: number): Promise<string | undefined> {
  return new Promise((r) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    const done = (value: string | undefined) => {
      socket.destroy();
      r(value);
    };
    socket.setTimeout(1_000, () => done(undefined));
    socket.on("error", () => done(undefined));
    socket.on("data", (chunk) => {
      data += chunk.toString();
      if (data.includes("\n")) done(data);
    });
  });
}

export interface StackOptions {
  /** Number of gateways (default 1). */
  gateways?: number;
  /** NATS URL (default the shared server on 4222). */
  natsUrl?: string;
  /** Extra environment for api-service. */
  apiEnv?: Record<string, string>;
  /** Extra environment for the gateways. */
  gatewayEnv?: Record<string, string>;
}

export interface Gateway {
  port: number;
  url: string;
  proc: Proc;
}

/** One test's services. Call {@link Stack.stop} in `after`. */
export class Stack {
  readonly id = randomBytes(6).toString("hex");
  readonly dbName = `ts_test_${this.id}`;
  readonly databaseUrl = `postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${this.dbName}`;
  readonly secret = `ts-secret-${this.id}`;
  readonly subjectPrefix = `tstest${this.id}`;
  readonly redisPrefix = `tstest:${this.id}`;
  readonly uploadDir = mkdtempSync(join(tmpdir(), "retich-ts-uploads-"));
  natsUrl: string = SHARED_NATS_URL;
  api!: Proc;
  apiPort = 0;
  gateways: Gateway[] = [];
  private readonly clients: RealtimeConnection[] = [];
  private migrated = false;

  /** The environment both services share. */
  baseEnv(): Record<string, string> {
    return {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      LOG_FORMAT: "text",
      DATABASE_URL: this.databaseUrl,
      NATS_URL: this.natsUrl,
      NATS_SUBJECT_PREFIX: this.subjectPrefix,
      REDIS_URL: REDIS_URL,
      REDIS_KEY_PREFIX: this.redisPrefix,
      JWT_SECRET: this.secret,
      AUTH_MODE: "jwt",
    };
  }

  static async start(options: StackOptions = {}): Promise<Stack> {
    const stack = new Stack();
    try {
      await stack.boot(options);
    } catch (error) {
      await stack.stop();
      throw error;
    }
    return stack;
  }

  private async boot(options: StackOptions): Promise<void> {
    if (options.natsUrl) this.natsUrl = options.natsUrl;
    const api = binary("api-service");
    binary("ws-gateway");
    // Creates the database (missing) and applies the migrations.
    const migrate = spawnSync(api, ["migrate", "up"], { env: this.baseEnv(), encoding: "utf8", timeout: 120_000 });
    if (migrate.status !== 0) {
      throw new Error(`api-service migrate up failed (${migrate.status}): ${migrate.stderr}${migrate.stdout}`);
    }
    this.migrated = true;

    this.apiPort = await freePort();
    this.api = new Proc("api-service", api, ["serve"], {
      ...this.baseEnv(),
      PORT: String(this.apiPort),
      UPLOAD_DIR: this.uploadDir,
      UPLOAD_BASE_URL: `http://127.0.0.1:${this.apiPort}/uploads`,
      DATABASE_MAX_CONNECTIONS: "8",
      ...options.apiEnv,
    });
    for (let i = 0; i < (options.gateways ?? 1); i++) await this.startGateway(options.gatewayEnv);
    await eventually("api-service /ready", async () => {
      if (!this.api.running) throw new Error(`api-service exited:\n${this.api.tail()}`);
      return (await httpStatus(`${this.apiUrl}/ready`)) === 200;
    });
  }

  async startGateway(extra: Record<string, string> = {}): Promise<Gateway> {
    const port = await freePort();
    const proc = new Proc(`ws-gateway:${port}`, binary("ws-gateway"), ["serve"], {
      ...this.baseEnv(),
      PORT: String(port),
      DATABASE_MAX_CONNECTIONS: "4",
      PRESENCE_HEARTBEAT_SECONDS: "1",
      PRESENCE_EXPIRY_SECONDS: "3",
      WS_DRAIN_SECONDS: "1",
      WS_RESYNC_WINDOW_MS: "200",
      ...extra,
    });
    const gateway = { port, url: `ws://127.0.0.1:${port}/ws`, proc };
    this.gateways.push(gateway);
    await eventually(`ws-gateway ${port} /ready`, async () => {
      if (!proc.running) throw new Error(`ws-gateway exited:\n${proc.tail()}`);
      return (await httpStatus(`http://127.0.0.1:${port}/ready`)) === 200;
    });
    return gateway;
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  /** A JWT for `user`, minted by `api-service token`. */
  token(user: string): string {
    const out = spawnSync(binary("api-service"), ["token", "--user", user, "--hours", "1"], {
      env: this.baseEnv(),
      encoding: "utf8",
    });
    if (out.status !== 0) throw new Error(`api-service token failed: ${out.stderr}`);
    return out.stdout.trim();
  }

  /** A new user: id, token and a REST client. */
  user(options: Partial<MessagingApiOptions> = {}): TestUser {
    const id = randomUUID();
    const token = this.token(id);
    const api = new MessagingApi({ baseUrl: this.apiUrl, token, ...options });
    return { id, token, api };
  }

  /** A realtime connection for `user` (closed by {@link stop}). */
  realtime(user: TestUser, options: Partial<RealtimeOptions> = {}): RealtimeConnection {
    const rt = new RealtimeConnection({
      urls: this.gateways.map((g) => g.url),
      token: user.token,
      api: user.api,
      WebSocket: NodeWebSocket,
      reconnect: { initialDelayMs: 100, maxDelayMs: 2_000 },
      retry: { initialDelayMs: 100, maxDelayMs: 1_000 },
      ...options,
    });
    this.clients.push(rt);
    return rt;
  }

  /** The services' last log lines (for failure messages). */
  logs(): string {
    const procs = [this.api, ...this.gateways.map((g) => g.proc)].filter(Boolean);
    return procs.map((p) => `--- ${p.name}\n${p.tail(20)}`).join("\n");
  }

  async stop(): Promise<void> {
    for (const rt of this.clients) rt.close();
    await Promise.all(this.gateways.map((g) => g.proc.kill()));
    await this.api?.stop();
    if (this.migrated) {
      spawnSync(
        "psql",
        ["-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres", "-qc", `drop database if exists "${this.dbName}" with (force)`],
        { encoding: "utf8", timeout: 30_000 },
      );
    }
    await cleanRedis(this.redisPrefix);
    rmSync(this.uploadDir, { recursive: true, force: true });
  }
}

export interface TestUser {
  id: string;
  token: string;
  api: MessagingApi;
}

/** Deletes the test's Redis keys (best effort; most expire anyway). */
async function cleanRedis(prefix: string): Promise<void> {
  const url = new URL(REDIS_URL);
  const args = ["-h", url.hostname, "-p", url.port || "6379"];
  const scan = spawnSync("redis-cli", [...args, "--scan", "--pattern", `${prefix}:*`], { encoding: "utf8" });
  if (scan.status !== 0 || !scan.stdout.trim()) return;
  const keys = scan.stdout.trim().split("\n");
  for (let i = 0; i < keys.length; i += 500) {
    spawnSync("redis-cli", [...args, "del", ...keys.slice(i, i + 500)], { encoding: "utf8" });
  }
}

/** Collects `message.new` events of one conversation and checks them. */
export class MessageLog {
  readonly seqs: number[] = [];
  readonly contents: string[] = [];
  catchUps = 0;

  constructor(rt: RealtimeConnection, readonly conversationId: string) {
    rt.on("message.new", (event) => {
      if (event.conversation_id !== conversationId) return;
      this.seqs.push(event.payload.seq);
      this.contents.push(event.payload.content ?? "");
      if (event.catchUp) this.catchUps++;
    });
  }

  /** Waits until `count` messages arrived. */
  async waitFor(count: number, timeoutMs = 30_000): Promise<void> {
    await eventually(`${count} messages (have ${this.seqs.length})`, () => this.seqs.length >= count, timeoutMs);
  }
}

/** 1..n */
export function range(n: number, from = 1): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

/** A TCP proxy to `targetPort` that can drop a connection after forwarding a request. */
export class DroppingProxy {
  port = 0;
  /** Responses still to drop: the next connections whose request starts with this method. */
  dropsLeft = 0;
  dropMethod = "POST";
  dropped = 0;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  static async start(targetPort: number): Promise<DroppingProxy> {
    const proxy = new DroppingProxy();
    proxy.server = net.createServer((client) => {
      proxy.sockets.add(client);
      const upstream = net.connect(targetPort, "127.0.0.1");
      proxy.sockets.add(upstream);
      let drop = false;
      client.on("data", (chunk) => {
        if (!drop && proxy.dropsLeft > 0 && chunk.toString("latin1").startsWith(`${proxy.dropMethod} `)) {
          drop = true;
          proxy.dropsLeft--;
        }
        upstream.write(chunk);
      });
      upstream.on("data", (chunk) => {
        if (drop) {
          // The request was forwarded and the server answered: drop the connection instead of
          // passing the answer on.
          proxy.dropped++;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(chunk);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
        proxy.sockets.delete(client);
        proxy.sockets.delete(upstream);
      };
      client.on("close", close);
      upstream.on("close", close);
      client.on("error", close);
      upstream.on("error", close);
    });
    await new Promise<void>((r) => proxy.server!.listen(0, "127.0.0.1", () => r()));
    const address = proxy.server.address();
    proxy.port = typeof address === "object" && address ? address.port : 0;
    return proxy;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
