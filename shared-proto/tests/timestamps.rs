//! Timestamps follow `docs/api.md` ("Formats"): RFC 3339 UTC with `Z`, microsecond precision,
//! trailing fractional zeros removed.

use chrono::DateTime;
use shared_proto::json::format_timestamp_us;

#[test]
fn whole_seconds_have_no_fraction() {
    assert_eq!(format_timestamp_us(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_timestamp_us(1_795_532_444_000_000),
        "2026-11-24T15:00:44Z"
    );
}

#[test]
fn trailing_fractional_zeros_are_removed() {
    assert_eq!(
        format_timestamp_us(1_795_532_444_116_600),
        "2026-11-24T15:00:44.1166Z"
    );
    assert_eq!(
        format_timestamp_us(1_795_532_444_100_000),
        "2026-11-24T15:00:44.1Z"
    );
    assert_eq!(
        format_timestamp_us(1_795_532_444_120_000),
        "2026-11-24T15:00:44.12Z"
    );
}

#[test]
fn leading_fractional_zeros_are_kept() {
    assert_eq!(format_timestamp_us(1), "1970-01-01T00:00:00.000001Z");
    assert_eq!(
        format_timestamp_us(1_795_532_700_000_010),
        "2026-11-24T15:05:00.00001Z"
    );
    assert_eq!(format_timestamp_us(999_999), "1970-01-01T00:00:00.999999Z");
}

#[test]
fn calendar_edges_are_correct() {
    // Leap days, the last microsecond of a year, and a century leap year.
    assert_eq!(
        format_timestamp_us(1_835_395_200_000_000),
        "2028-02-29T00:00:00Z"
    );
    assert_eq!(
        format_timestamp_us(1_798_761_599_999_999),
        "2026-12-31T23:59:59.999999Z"
    );
    assert_eq!(
        format_timestamp_us(951_782_400_000_000),
        "2000-02-29T00:00:00Z"
    );
}

#[test]
fn formatting_agrees_with_chrono_over_a_wide_sweep() {
    // From 1970 to about 2100, with a stride that visits every time of day and fraction shape.
    let mut us: i64 = 0;
    while us < 4_102_444_800_000_000 {
        let expected = {
            let time = DateTime::from_timestamp_micros(us).expect("in range");
            let mut text = time.format("%Y-%m-%dT%H:%M:%S").to_string();
            let micros = us.rem_euclid(1_000_000);
            if micros != 0 {
                let fraction = format!("{micros:06}");
                text.push('.');
                text.push_str(fraction.trim_end_matches('0'));
            }
            text.push('Z');
            text
        };
        assert_eq!(format_timestamp_us(us), expected, "{us}");
        us += 987_654_321_337;
    }
}
