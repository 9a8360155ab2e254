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

/// A calendar date `YYYY-MM-DD` (exactly that form, and a real date).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}
