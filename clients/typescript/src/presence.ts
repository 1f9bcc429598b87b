/**
 * Who of my presence peers is online (docs/websocket.md, "Presence"): every socket starts with
 * `presence.snapshot` (the whole online set), then `presence.online` / `presence.offline` keep it
 * current.
 */
import { Emitter, type Listener } from "./emitter.js";

/** What changed: a whole snapshot, or one user. */
export type PresenceChange =
  | { kind: "snapshot"; online: readonly string[] }
  | { kind: "online"; userId: string }
  | { kind: "offline"; userId: string };

export class PresenceState {
  /** user id → online; users seen offline stay in the map with `false`. */
  private readonly users = new Map<string, boolean>();
  private readonly changes = new Emitter<{ change: PresenceChange }>();
  private snapshotReceived = false;

  /** True once a snapshot has arrived (before it, nobody is known to be online). */
  get ready(): boolean {
    return this.snapshotReceived;
  }

  /** Whether the user is online now. */
  isOnline(userId: string): boolean {
    return this.users.get(userId) === true;
  }

  /** The ids of the users online now. */
  onlineUserIds(): string[] {
    const ids: string[] = [];
    for (const [id, online] of this.users) if (online) ids.push(id);
    return ids;
  }

  /** A copy of the whole map: user id → online (users seen going offline are `false`). */
  toMap(): Map<string, boolean> {
    return new Map(this.users);
  }

  /** Calls `listener` after every change; returns the function that unsubscribes. */
  subscribe(listener: Listener<PresenceChange>): () => void {
    return this.changes.on("change", listener);
  }

  /** Replaces the online set (a `presence.snapshot`). */
  applySnapshot(onlineUserIds: readonly string[]): void {
    for (const id of this.users.keys()) this.users.set(id, false);
    for (const id of onlineUserIds) this.users.set(id, true);
    this.snapshotReceived = true;
    this.notify({ kind: "snapshot", online: [...onlineUserIds] });
  }

  /** Applies `presence.online` / `presence.offline`. */
  set(userId: string, online: boolean): void {
    this.users.set(userId, online);
    this.notify(online ? { kind: "online", userId } : { kind: "offline", userId });
  }

  private notify(change: PresenceChange): void {
    this.changes.emit("change", change);
  }
}
