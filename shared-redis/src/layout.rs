//! Every Redis key of both services, in one place, and the hash tags that make them work on a
//! Redis Cluster (`<p>` = `REDIS_KEY_PREFIX`).
//!
//! A script may only touch keys passed in `KEYS`, all in one hash slot. The slot of a key is
//! that of the text between its first `{` and the following `}` (the hash tag), so keys that a
//! script uses together share a tag:
//!
//! | key | type | tag (slot) | used by |
//! |---|---|---|---|
//! | `<p>:{u:<user>}:presence` | HASH gateway → sockets | the user | [`crate::presence`] |
//! | `<p>:{u:<user>}:ratelimit:send` | HASH `tokens`, `ts` | the user | [`crate::rate_limit`] |
//! | `<p>:{presence}:gateways` | ZSET gateway → last heartbeat (ms) | fleet registry | [`crate::presence`] |
//! | `<p>:{presence}:gateway:<gateway>:users` | SET of users | fleet registry | [`crate::presence`] |
//! | `<p>:{c:<conversation>}:typing` | ZSET user → entry expiry (ms) | the conversation | [`crate::typing`], api-service |
//! | `<p>:{c:<conversation>}:typing:rate:<user>` | HASH `tokens`, `ts` | the conversation | [`crate::typing`] |
//! | `<p>:{typing}:deadlines` | ZSET `<conversation>:<user>` → automatic-stop time (ms) | typing deadlines | [`crate::typing`] |
//!
//! So one user's presence and send bucket share a slot, one conversation's typists and their
//! relay buckets share a slot, and users and conversations spread over the cluster. The fleet
//! registry (which gateways live, which users each one holds) and the typing deadlines are one
//! slot each, because each is read as a whole (the reaper asks "which gateways are dead", the
//! sweeper "which deadlines are due"); their writes are one small command per connect,
//! disconnect or typing start. Steps that cross slots are separate commands, ordered so that a
//! failure between them is harmless (see the modules).
//!
//! The tags hold no prefix: keys of different prefixes may share a slot, which costs nothing. A
//! prefix must not hold `{` or `}` itself (its tag would then win and put every key in one slot).

use uuid::Uuid;

/// The key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`REDIS_KEY_PREFIX`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix, as given.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>:{u:<user>}:presence`: the user's sockets per gateway; exists ⇔ the user is online.
    pub fn presence_user(&self, user: &Uuid) -> String {
        format!("{}:{{u:{user}}}:presence", self.prefix)
    }

    /// `<p>:{u:<user>}:ratelimit:send`: the user's send bucket (api-service).
    pub fn send_bucket(&self, user: &Uuid) -> String {
        format!("{}:{{u:{user}}}:ratelimit:send", self.prefix)
    }

    /// `<p>:{presence}:gateways`: every gateway's last heartbeat.
    pub fn presence_gateways(&self) -> String {
        format!("{}:{{presence}}:gateways", self.prefix)
    }

    /// `<p>:{presence}:gateway:<gateway>:users`: users with a socket on that gateway (what to
    /// reap when it dies).
    pub fn presence_gateway_users(&self, gateway: &str) -> String {
        format!("{}:{{presence}}:gateway:{gateway}:users", self.prefix)
    }

    /// `<p>:{c:<conversation>}:typing`: the conversation's typists (read by api-service).
    pub fn typing(&self, conversation: &Uuid) -> String {
        format!("{}:{{c:{conversation}}}:typing", self.prefix)
    }

    /// `<p>:{c:<conversation>}:typing:rate:<user>`: the fleet-wide typing relay bucket.
    pub fn typing_rate(&self, conversation: &Uuid, user: &Uuid) -> String {
        format!("{}:{{c:{conversation}}}:typing:rate:{user}", self.prefix)
    }

    /// `<p>:{typing}:deadlines`: when each typist's automatic `typing.stop` is due.
    pub fn typing_deadlines(&self) -> String {
        format!("{}:{{typing}}:deadlines", self.prefix)
    }
}

/// The member of [`Keys::typing_deadlines`] for `user` typing in `conversation`.
pub fn deadline_member(conversation: &Uuid, user: &Uuid) -> String {
    format!("{conversation}:{user}")
}
