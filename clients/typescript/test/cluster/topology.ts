// The clustered topology that `make dev-cluster` started (3 NATS nodes, a 6-node Redis Cluster,
// 2 api-services, 3 ws-gateways), read from the env file it wrote (.dev-cluster/env at the
// repository root, or RETICH_CLUSTER_ENV). The tests share that topology, so each test makes its
// own users and conversations; they run one at a time, and the failover test, which kills nodes,
// runs last.
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

import { MessagingApi, RealtimeConnection, type RealtimeOptions } from "../../src/index.js";
import { NodeWebSocket, eventually, type TestUser } from "../e2e/stack.js";

function repositoryRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "Cargo.toml"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("the repository root (Cargo.toml) was not found");
    dir = parent;
  }
  return dir;
}

/** `KEY='value'` lines of a shell env file. */
function readEnvFile(path: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (!match) continue;
    values[match[1] as string] = (match[2] as string).replace(/^'(.*)'$/, "$1");
  }
  return values;
}

export class Topology {
  readonly root = repositoryRoot();
  readonly env: Record<string, string>;
  readonly apiUrls: string[];
  readonly gatewayUrls: string[];
  readonly natsPorts: number[];
  readonly natsPids: number[];
  readonly redisPorts: number[];
  private readonly clients: RealtimeConnection[] = [];
  private readonly sockets: RawSocket[] = [];

  constructor() {
    const path = process.env.RETICH_CLUSTER_ENV ?? resolve(this.root, ".dev-cluster/env");
    if (!existsSync(path)) {
      throw new Error(`${path} is missing: start the topology first (make dev-cluster, or scripts/test-cluster.sh)`);
    }
    this.env = readEnvFile(path);
    const list = (key: string) => (this.env[key] ?? "").split(" ").filter(Boolean);
    this.apiUrls = list("CLUSTER_API_URLS");
    this.gatewayUrls = list("CLUSTER_GATEWAY_URLS");
    this.natsPorts = list("CLUSTER_NATS_PORTS").map(Number);
    this.natsPids = list("CLUSTER_NATS_PIDS").map(Number);
    this.redisPorts = list("CLUSTER_REDIS_PORTS").map(Number);
    if (this.apiUrls.length < 2 || this.gatewayUrls.length < 3 || this.natsPorts.length < 3 || this.redisPorts.length < 6) {
      throw new Error(`${path} does not describe the clustered topology`);
    }
  }

  /** A JWT for `user`, minted by `api-service token` with the topology's secret. */
  token(user: string): string {
    const out = spawnSync(join(this.env.CLUSTER_BIN_DIR as string, "api-service"), ["token", "--user", user, "--hours", "1"], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", JWT_SECRET: this.env.CLUSTER_JWT_SECRET as string },
      encoding: "utf8",
    });
    if (out.status !== 0) throw new Error(`api-service token failed: ${out.stderr}`);
    return out.stdout.trim();
  }

  /** A new user whose REST client talks to api-service number `api` (0 or 1). */
  user(api = 0): TestUser {
    const id = randomUUID();
    const token = this.token(id);
    return { id, token, api: this.api({ id, token } as TestUser, api) };
  }

  /** `user`'s REST client on api-service number `api`. */
  api(user: TestUser, api: number): MessagingApi {
    return new MessagingApi({ baseUrl: this.apiUrls[api % this.apiUrls.length] as string, token: user.token });
  }

  /** A realtime connection (the client library) over every gateway, starting with `first`. */
  realtime(user: TestUser, first = 0, options: Partial<RealtimeOptions> = {}): RealtimeConnection {
    const urls = this.gatewayUrls.map((_, i) => this.gatewayUrls[(first + i) % this.gatewayUrls.length] as string);
    const rt = new RealtimeConnection({
      urls,
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

  /** A socket on gateway number `gateway` read as the web client reads: one JSON.parse per message. */
  async socket(user: TestUser, gateway: number): Promise<RawSocket> {
    const socket = new RawSocket(`${this.gatewayUrls[gateway]}?token=${user.token}`, gateway);
    this.sockets.push(socket);
    await eventually(`presence.snapshot on gateway ${gateway}`, () => {
      if (socket.closed) throw new Error(`socket to gateway ${gateway} closed: ${socket.closeInfo}`);
      return socket.ofType("presence.snapshot").length > 0;
    });
    return socket;
  }

  /** The NATS node (index) with the most client connections from the services (Rust clients). */
  async busiestNatsNode(): Promise<number> {
    let best = 0;
    let most = -1;
    for (let i = 0; i < this.natsPorts.length; i++) {
      const connz = await fetch(`http://127.0.0.1:${(this.natsPorts[i] as number) + 4100}/connz`)
        .then((r) => r.json() as Promise<{ connections?: { lang?: string }[] }>)
        .catch(() => ({ connections: [] }));
      const services = (connz.connections ?? []).filter((c) => c.lang === "rust").length;
      if (services > most) {
        most = services;
        best = i;
      }
    }
    return best;
  }

  killNatsNode(index: number): void {
    process.kill(this.natsPids[index] as number, "SIGKILL");
  }

  /** The ports of the Redis masters, as the cluster sees them now. */
  redisMasters(): number[] {
    for (const port of this.redisPorts) {
      const out = spawnSync("redis-cli", ["-p", String(port), "cluster", "nodes"], { encoding: "utf8" });
      if (out.status !== 0 || !out.stdout.trim()) continue;
      return out.stdout
        .trim()
        .split("\n")
        .map((line) => line.split(" "))
        .filter((fields) => (fields[2] ?? "").includes("master") && !(fields[2] ?? "").includes("fail"))
        .map((fields) => Number((fields[1] ?? "").split("@")[0]?.split(":")[1]));
    }
    return [];
  }

  /** The master port serving `key`'s slot. */
  redisMasterOf(key: string): number {
    const slot = Number(spawnSync("redis-cli", ["-p", String(this.redisPorts[0]), "cluster", "keyslot", key], { encoding: "utf8" }).stdout.trim());
    for (const port of this.redisPorts) {
      const out = spawnSync("redis-cli", ["-p", String(port), "cluster", "slots"], { encoding: "utf8" });
      if (out.status !== 0) continue;
      // Flat output: start, end, master ip, master port, master id, replica ip, port, id, ...
      const lines = out.stdout.trim().split("\n");
      for (let i = 0; i + 3 < lines.length; i++) {
        const start = Number(lines[i]);
        const end = Number(lines[i + 1]);
        if (Number.isInteger(start) && Number.isInteger(end) && lines[i + 2]?.includes(".") && slot >= start && slot <= end) {
          return Number(lines[i + 3]);
        }
      }
    }
    throw new Error(`no master found for slot ${slot}`);
  }

  killRedisNode(port: number): void {
    const pidFile = resolve(this.root, `.dev-cluster/redis-${port}.pid`);
    process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGKILL");
  }

  close(): void {
    for (const rt of this.clients) rt.close();
    for (const socket of this.sockets) socket.close();
  }
}

/** A parsed server event. */
export interface Received {
  type: string;
  conversation_id: string;
  payload: Record<string, unknown>;
  at: number;
}

/** A WebSocket read like the ReTiCh web client reads it: one JSON.parse per message, nothing split. */
export class RawSocket {
  readonly events: Received[] = [];
  readonly unparsable: string[] = [];
  closed = false;
  closeInfo = "";
  private readonly ws: WebSocket;

  constructor(url: string, readonly gateway: number) {
    this.ws = new WebSocket(url);
    this.ws.on("message", (data) => {
      const text = data.toString();
      try {
        this.events.push({ ...(JSON.parse(text) as Omit<Received, "at">), at: Date.now() });
      } catch {
        this.unparsable.push(text);
      }
    });
    this.ws.on("close", (code, reason) => {
      this.closed = true;
      this.closeInfo = `${code} ${reason.toString()}`;
    });
    this.ws.on("error", (error) => {
      this.closeInfo = String(error);
    });
  }

  ofType(type: string, conversationId?: string): Received[] {
    return this.events.filter((e) => e.type === type && (conversationId === undefined || e.conversation_id === conversationId));
  }

  /** The seqs of the `message.new` events of one conversation, as received. */
  seqs(conversationId: string): number[] {
    return this.ofType("message.new", conversationId).map((e) => e.payload.seq as number);
  }

  send(frame: unknown): void {
    this.ws.send(JSON.stringify(frame));
  }

  close(): void {
    this.ws.close();
  }
}
