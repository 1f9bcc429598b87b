//! NATS subject names — the only place they are built and parsed:
//!
//! - `<prefix>.conv.<conversation_id>`: everything that happens inside a conversation;
//! - `<prefix>.user.<user_id>`: what concerns one user personally (`conversation.joined`,
//!   `conversation.left`);
//! - `<prefix>.user.many.<conversation_id>`: a personal event addressed to several users at once
//!   (the `conversation.joined` of a create or an add; the users are the event's
//!   `target_user_ids`). Published once however many users it concerns (split over as few
//!   messages as the server's `max_payload` allows): one event per user, each carrying the whole
//!   conversation, would make a group of N cost N² on NATS. It shares the
//!   `<prefix>.user.>` subscription with the personal subjects, so that a gateway handles a
//!   user's joins and departures in the order they were published.
//! - `<prefix>.presence.<user_id>`: presence changes of one user.
//! - `<prefix>.resync`: the api-service's notices of events that may not have reached NATS
//!   ([`crate::events::ResyncNotice`]); every gateway reads it and tells the sockets concerned.
//!
//! Ids are written lowercase hyphenated. The prefix (default `retich`; tests use their own) is
//! checked once with [`validate_prefix`] when configuration is loaded; the builders do not check
//! it again because they run once per published event.

use uuid::Uuid;

/// The token after the prefix in conversation subjects.
const CONVERSATION: &str = "conv";
/// The token after the prefix in personal subjects.
const USER: &str = "user";
/// The tokens after the prefix in subjects of personal events addressed to several users.
const USERS: &str = "user.many";
/// The token after the prefix in presence subjects.
const PRESENCE: &str = "presence";
/// The token after the prefix of the resync notice subject.
const RESYNC: &str = "resync";

/// Why a subject prefix was rejected by [`validate_prefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("the NATS subject prefix is empty")]
    EmptyPrefix,
    #[error("the NATS subject prefix contains whitespace")]
    Whitespace,
    #[error("the NATS subject prefix contains a wildcard ('*' or '>')")]
    Wildcard,
    #[error("the NATS subject prefix has an empty token (leading, trailing or doubled '.')")]
    EmptyToken,
}

/// A subject this crate builds, as recognised by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `<prefix>.conv.<id>`
    Conversation(Uuid),
    /// `<prefix>.user.<id>`
    User(Uuid),
    /// `<prefix>.user.many.<conversation_id>`
    Users(Uuid),
    /// `<prefix>.presence.<id>`
    Presence(Uuid),
}

impl Subject {
    /// The subject name of `self` under `prefix` (the inverse of [`parse`]).
    pub fn to_subject(&self, prefix: &str) -> String {
        match self {
            Self::Conversation(id) => conversation(prefix, id),
            Self::User(id) => user(prefix, id),
            Self::Users(id) => users(prefix, id),
            Self::Presence(id) => presence(prefix, id),
        }
    }
}

/// Checks that `prefix` can start a NATS subject: not empty, no whitespace, no wildcard, no empty
/// token. A prefix may itself hold several tokens (`test.3f2a`).
pub fn validate_prefix(prefix: &str) -> Result<(), SubjectError> {
    if prefix.is_empty() {
        return Err(SubjectError::EmptyPrefix);
    }
    if prefix.chars().any(char::is_whitespace) {
        return Err(SubjectError::Whitespace);
    }
    if prefix.contains(['*', '>']) {
        return Err(SubjectError::Wildcard);
    }
    if prefix.split('.').any(str::is_empty) {
        return Err(SubjectError::EmptyToken);
    }
    Ok(())
}

/// `<prefix>.conv.<conversation_id>`: the subject of everything inside one conversation.
pub fn conversation(prefix: &str, conversation_id: &Uuid) -> String {
    with_id(prefix, CONVERSATION, conversation_id)
}

/// `<prefix>.user.<user_id>`: the subject of events addressed to one user personally.
pub fn user(prefix: &str, user_id: &Uuid) -> String {
    with_id(prefix, USER, user_id)
}

/// `<prefix>.user.many.<conversation_id>`: the subject of a personal event about
/// `conversation_id` addressed to several users (module docs).
pub fn users(prefix: &str, conversation_id: &Uuid) -> String {
    with_id(prefix, USERS, conversation_id)
}

/// `<prefix>.presence.<user_id>`: the subject of one user's presence changes.
pub fn presence(prefix: &str, user_id: &Uuid) -> String {
    with_id(prefix, PRESENCE, user_id)
}

/// `<prefix>.resync`: notices of events that may not have been published (module docs).
pub fn resync(prefix: &str) -> String {
    format!("{prefix}.{RESYNC}")
}

/// `<prefix>.presence.*`: every user's presence changes.
pub fn all_presence(prefix: &str) -> String {
    format!("{prefix}.{PRESENCE}.*")
}

/// `<prefix>.conv.*`: every conversation's events.
pub fn all_conversations(prefix: &str) -> String {
    format!("{prefix}.{CONVERSATION}.*")
}

/// `<prefix>.user.>`: every personal event, whether addressed to one user or to several.
pub fn all_users(prefix: &str) -> String {
    format!("{prefix}.{USER}.>")
}

/// Recognises a subject built by this module under `prefix`. Anything else — another prefix, an
/// unknown kind, a wildcard, an id that is not a lowercase hyphenated UUID — is `None`.
pub fn parse(prefix: &str, subject: &str) -> Option<Subject> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    if let Some(conversation) = rest.strip_prefix(USERS).and_then(|id| id.strip_prefix('.')) {
        return parse_id(conversation).map(Subject::Users);
    }
    let (kind, id) = rest.split_once('.')?;
    let id = parse_id(id)?;
    match kind {
        CONVERSATION => Some(Subject::Conversation(id)),
        USER => Some(Subject::User(id)),
        PRESENCE => Some(Subject::Presence(id)),
        _ => None,
    }
}

fn with_id(prefix: &str, kind: &str, id: &Uuid) -> String {
    let mut subject = String::with_capacity(prefix.len() + kind.len() + 2 + 36);
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(kind);
    subject.push('.');
    subject.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    subject
}

/// Only the form [`with_id`] writes: 36 characters, hyphenated, lowercase.
fn parse_id(text: &str) -> Option<Uuid> {
    if text.len() != 36 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Uuid::try_parse(text).ok()
}
