//! Delivery accounting for fan-out: every accepted message (by its bench number, carried in
//! `client_msg_id` and so in the `message.new` payload) must reach every socket of every member
//! of its group exactly once. A socket's tally compares what it received with what it should
//! have received.

use serde::Serialize;

/// What one socket (or the sum over sockets) got compared with what it should have got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Expected messages received at least once.
    pub delivered: u64,
    /// Expected messages never received.
    pub missing: u64,
    /// Receipts beyond the first of a message.
    pub duplicates: u64,
    /// Distinct messages received that were not expected on this socket (another group's, or a
    /// send whose HTTP call failed but which was stored anyway).
    pub unexpected: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.delivered += other.delivered;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.unexpected += other.unexpected;
    }
}

/// Compares `received` (message numbers in any order, repeats allowed) with `expected` (sorted,
/// distinct message numbers).
pub fn tally(expected: &[u64], received: &[u64]) -> Tally {
    debug_assert!(expected.windows(2).all(|w| w[0] < w[1]), "expected sorted");
    let mut received = received.to_vec();
    received.sort_unstable();
    let before = received.len() as u64;
    received.dedup();
    let duplicates = before - received.len() as u64;
    // Both sorted and distinct: count the intersection with one merge walk.
    let (mut i, mut j, mut both) = (0, 0, 0u64);
    while i < expected.len() && j < received.len() {
        match expected[i].cmp(&received[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    Tally {
        delivered: both,
        missing: expected.len() as u64 - both,
        duplicates,
        unexpected: received.len() as u64 - both,
    }
}

/// The bench number in a `message.new` event line, read from the payload's `client_msg_id`
/// (`"<prefix><n>"`). A substring scan rather than a JSON parse: at hundreds of thousands of
/// deliveries per second the load tool must stay cheaper than the gateway it measures. Lines of
/// other event types give `None`.
pub fn message_number(line: &str, prefix: &str) -> Option<u64> {
    // The gateway writes `type` first (a prefix test); any other key order still works.
    if !(line.starts_with(MESSAGE_NEW) || line.contains(&MESSAGE_NEW[1..])) {
        return None;
    }
    let key = "\"client_msg_id\":\"";
    let start = line.find(key)? + key.len();
    let rest = line[start..].strip_prefix(prefix)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if rest.as_bytes().get(digits) != Some(&b'"') {
        return None;
    }
    rest[..digits].parse().ok()
}

/// How a `message.new` event line starts.
const MESSAGE_NEW: &str = "{\"type\":\"message.new\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_exactly_once_delivery_has_nothing_missing_or_duplicated() {
        let t = tally(&[1, 2, 3], &[3, 1, 2]);
        assert_eq!(
            t,
            Tally {
                delivered: 3,
                missing: 0,
                duplicates: 0,
                unexpected: 0
            }
        );
    }

    #[test]
    fn missing_duplicate_and_unexpected_receipts_are_each_counted() {
        // 2 and 4 never arrived, 1 arrived three times, 9 was not for this socket (twice).
        let t = tally(&[1, 2, 3, 4], &[1, 9, 1, 3, 1, 9]);
        assert_eq!(
            t,
            Tally {
                delivered: 2,
                missing: 2,
                duplicates: 3,
                unexpected: 1
            }
        );
    }

    #[test]
    fn nothing_received_means_everything_missing() {
        let t = tally(&[5, 6], &[]);
        assert_eq!(t.missing, 2);
        assert_eq!(t.delivered, 0);
    }

    #[test]
    fn tallies_add_up() {
        let mut total = Tally::default();
        total.add(tally(&[1, 2], &[1]));
        total.add(tally(&[1, 2], &[1, 2, 2]));
        assert_eq!(total.delivered, 3);
        assert_eq!(total.missing, 1);
        assert_eq!(total.duplicates, 1);
    }

    #[test]
    fn the_message_number_comes_from_client_msg_id_of_message_new_only() {
        let line = r#"{"type":"message.new","conversation_id":"c","payload":{"id":"x","seq":4,"client_msg_id":"bench-42","content":"hi"}}"#;
        assert_eq!(message_number(line, "bench-"), Some(42));
        let other = r#"{"type":"message.updated","conversation_id":"c","payload":{"client_msg_id":"bench-42"}}"#;
        assert_eq!(message_number(other, "bench-"), None);
        let foreign =
            r#"{"type":"message.new","conversation_id":"c","payload":{"client_msg_id":"app-42"}}"#;
        assert_eq!(message_number(foreign, "bench-"), None);
        let without = r#"{"type":"message.new","conversation_id":"c","payload":{"id":"x"}}"#;
        assert_eq!(message_number(without, "bench-"), None);
        let reordered =
            r#"{"conversation_id":"c","type":"message.new","payload":{"client_msg_id":"bench-7"}}"#;
        assert_eq!(message_number(reordered, "bench-"), Some(7));
        let not_a_number = r#"{"type":"message.new","conversation_id":"c","payload":{"client_msg_id":"bench-7x"}}"#;
        assert_eq!(message_number(not_a_number, "bench-"), None);
    }
}
