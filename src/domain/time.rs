//! Timestamps: milliseconds since the epoch in storage, RFC 3339 UTC with
//! milliseconds (`2024-01-15T10:30:00.000Z`) on the wire.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A calendar date `YYYY-MM-DD`: exactly four, two and two digits (chrono
/// alone also takes signed years and one-digit months), and a real date.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates_are_exactly_yyyy_mm_dd_and_real() {
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("2023-02-29").is_none());
        assert!(parse_date("-001-01-01").is_none());
        assert!(parse_date("+001-01-01").is_none());
        assert!(parse_date(" 2024-1-01").is_none());
        assert!(parse_date("2024-01-1 ").is_none());
    }
}
