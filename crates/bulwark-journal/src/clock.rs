//! Wall-clock milliseconds, with a skew that tests move forward (TTL expiry without sleeping).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    skew_ms: Arc<AtomicI64>,
}

impl Clock {
    pub(crate) fn now_ms(&self) -> i64 {
        unix_ms(SystemTime::now()) + self.skew_ms.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn advance(&self, by: Duration) {
        self.skew_ms.fetch_add(duration_ms(by), Ordering::Relaxed);
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(d),
        Err(e) => -duration_ms(e.duration()),
    }
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// RFC 3339 with milliseconds, UTC (`2026-11-28T04:41:16.123Z`), of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string()
}

/// `2026-11-28T04:41:16Z` (RFC 3339) or a duration meaning "that long ago" (`1h`).
pub fn parse_time(raw: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(raw) {
        return Ok(t);
    }
    if let Ok(ago) = humantime::parse_duration(raw) {
        return now
            .checked_sub(ago)
            .ok_or_else(|| format!("{raw:?} reaches before 1970"));
    }
    Err(format!(
        "{raw:?} is neither an RFC 3339 time (2026-11-28T04:41:16Z) nor a duration ago (1h)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_parse_both_forms() {
        let now = SystemTime::now();
        let ms = unix_ms(now);
        assert_eq!(unix_ms(from_unix_ms(ms)), ms);
        let t = parse_time("2026-11-28T04:41:16Z", now).unwrap();
        assert_eq!(rfc3339(unix_ms(t)), "2026-11-28T04:41:16.000Z");
        let ago = parse_time("1h", now).unwrap();
        assert_eq!(unix_ms(now) - unix_ms(ago), 3_600_000);
        assert!(parse_time("yesterday", now).is_err());
    }
}
