//! NATS subject names are built and parsed in one place.

use shared_proto::subjects::{self, Subject, SubjectError};
use uuid::Uuid;

const ID: Uuid = Uuid::from_u128(0x6f1c2a4e_8b3d_4c1a_9e2f_0a1b2c3d4e5f);

#[test]
fn subjects_are_prefix_kind_and_lowercase_hyphenated_id() {
    assert_eq!(
        subjects::conversation("retich", &ID),
        "retich.conv.6f1c2a4e-8b3d-4c1a-9e2f-0a1b2c3d4e5f"
    );
    assert_eq!(
        subjects::user("retich", &ID),
        "retich.user.6f1c2a4e-8b3d-4c1a-9e2f-0a1b2c3d4e5f"
    );
    assert_eq!(
        subjects::users("retich", &ID),
        "retich.user.many.6f1c2a4e-8b3d-4c1a-9e2f-0a1b2c3d4e5f"
    );
    assert_eq!(
        subjects::presence("test.t1", &ID),
        "test.t1.presence.6f1c2a4e-8b3d-4c1a-9e2f-0a1b2c3d4e5f"
    );
}

#[test]
fn wildcard_helpers_cover_one_kind_under_the_prefix() {
    assert_eq!(subjects::all_presence("retich"), "retich.presence.*");
    assert_eq!(subjects::all_conversations("retich"), "retich.conv.*");
    assert_eq!(subjects::all_users("retich"), "retich.user.>");
}

#[test]
fn the_resync_notice_subject_is_outside_every_other_kind() {
    assert_eq!(subjects::resync("test.t1"), "test.t1.resync");
    assert_eq!(subjects::parse("test.t1", "test.t1.resync"), None);
}

#[test]
fn every_built_subject_parses_back_to_what_built_it() {
    for prefix in ["retich", "test.a1b2", "x"] {
        for subject in [
            Subject::Conversation(ID),
            Subject::User(ID),
            Subject::Users(ID),
            Subject::Presence(Uuid::nil()),
        ] {
            let name = subject.to_subject(prefix);
            assert_eq!(subjects::parse(prefix, &name), Some(subject), "{name}");
        }
    }
}

#[test]
fn parsing_rejects_foreign_prefixes_kinds_and_id_forms() {
    let id = "6f1c2a4e-8b3d-4c1a-9e2f-0a1b2c3d4e5f";
    for subject in [
        format!("other.conv.{id}"),
        format!("retichx.conv.{id}"),
        format!("retich.conversation.{id}"),
        format!("retich.conv.{}", id.to_uppercase()),
        format!("retich.conv.{}", id.replace('-', "")),
        format!("retich.conv.{id}.extra"),
        format!("retich.user.many.{id}.extra"),
        format!("retich.user.many.{}", id.to_uppercase()),
        format!("retich.user.{id}.{id}"),
        format!("retich.conv.many.{id}"),
        format!("retich.presence.many.{id}"),
        "retich.user.many".to_owned(),
        "retich.user.many.*".to_owned(),
        "retich.conv.*".to_owned(),
        "retich.conv".to_owned(),
        "retich".to_owned(),
    ] {
        assert_eq!(subjects::parse("retich", &subject), None, "{subject}");
    }
}

#[test]
fn prefix_validation_accepts_plain_and_dotted_prefixes() {
    for prefix in ["retich", "test_3f2a", "test.3f2a", "a-b"] {
        assert_eq!(subjects::validate_prefix(prefix), Ok(()), "{prefix}");
    }
}

#[test]
fn prefix_validation_rejects_empty_whitespace_wildcards_and_empty_tokens() {
    let cases = [
        ("", SubjectError::EmptyPrefix),
        ("ret ich", SubjectError::Whitespace),
        ("retich\t", SubjectError::Whitespace),
        ("retich.*", SubjectError::Wildcard),
        ("ret>", SubjectError::Wildcard),
        (".retich", SubjectError::EmptyToken),
        ("retich.", SubjectError::EmptyToken),
        ("a..b", SubjectError::EmptyToken),
    ];
    for (prefix, expected) in cases {
        assert_eq!(
            subjects::validate_prefix(prefix),
            Err(expected),
            "{prefix:?}"
        );
    }
}
