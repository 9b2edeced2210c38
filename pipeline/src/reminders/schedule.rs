//! Deadlines: when a reminder falls due, with quiet hours.

use chrono::{DateTime, Days, LocalResult, NaiveDateTime, TimeZone, Utc};

use super::config::{QuietWindow, RemindersConfig};

/// `t`, or the end of the quiet window `t` falls in.
pub fn out_of_quiet(t: DateTime<Utc>, w: &QuietWindow) -> DateTime<Utc> {
    let local = t.with_timezone(&w.tz);
    let (date, tod) = (local.date_naive(), local.time());
    let end_date = if w.from < w.to {
        (w.from <= tod && tod < w.to).then_some(date)
    } else if tod >= w.from {
        // Past midnight: the window ends tomorrow morning.
        date.checked_add_days(Days::new(1))
    } else if tod < w.to {
        Some(date)
    } else {
        None
    };
    let Some(end_date) = end_date else { return t };
    local_to_utc(&w.tz, end_date.and_time(w.to)).max(t)
}

/// A local wall-clock time as an instant: the earlier one when clocks go
/// back, the first valid one after a gap when they go forward.
fn local_to_utc(tz: &chrono_tz::Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    let mut n = naive;
    for _ in 0..4 {
        match tz.from_local_datetime(&n) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.with_timezone(&Utc),
            LocalResult::None => n += chrono::Duration::minutes(30),
        }
    }
    // No zone has a gap of two hours; fall back to reading it as UTC.
    Utc.from_utc_datetime(&naive)
}

fn shift(t: DateTime<Utc>, c: &RemindersConfig) -> DateTime<Utc> {
    match c.quiet_hours.as_ref().and_then(|q| q.window().ok()) {
        Some(w) => out_of_quiet(t, &w),
        None => t,
    }
}

fn add(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The contact deadline of a reminder created at `created`.
pub fn deadline(created: DateTime<Utc>, c: &RemindersConfig) -> DateTime<Utc> {
    shift(add(created, c.contact_within), c)
}

/// When an overdue reminder that was due at `due` repeats next. Missed
/// repeats (the daemon was down) are not caught up one by one: the next
/// one is a full interval after `now`.
pub fn next_repeat(due: DateTime<Utc>, now: DateTime<Utc>, c: &RemindersConfig) -> DateTime<Utc> {
    let next = add(due, c.repeat_every);
    let next = if next <= now {
        add(now, c.repeat_every)
    } else {
        next
    };
    shift(next, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminders::config::QuietHours;
    use std::time::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cfg(from: &str, to: &str, tz: &str) -> RemindersConfig {
        RemindersConfig {
            quiet_hours: Some(QuietHours {
                from: from.into(),
                to: to.into(),
                time_zone: tz.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_deadline_in_overnight_quiet_hours_moves_to_their_end() {
        // Kolkata is UTC+5:30. 21:00-08:00 local = 15:30-02:30 UTC.
        let c = cfg("21:00", "08:00", "Asia/Kolkata");
        // Created 20:58 local: +5m = 21:03 local, quiet -> 08:00 local next day.
        assert_eq!(
            deadline(at("2026-11-22T15:28:00Z"), &c),
            at("2026-11-23T02:30:00Z")
        );
        // Created 01:00 local (after midnight): -> 08:00 local the same day.
        assert_eq!(
            deadline(at("2026-11-21T19:30:00Z"), &c),
            at("2026-11-22T02:30:00Z")
        );
        // Created 10:00 local: outside, untouched.
        assert_eq!(
            deadline(at("2026-11-22T04:30:00Z"), &c),
            at("2026-11-22T04:35:00Z")
        );
        // Ending exactly at 08:00 local is outside (the window is half-open).
        assert_eq!(
            deadline(at("2026-11-22T02:25:00Z"), &c),
            at("2026-11-22T02:30:00Z")
        );
    }

    #[test]
    fn a_daytime_window_and_repeats() {
        let c = RemindersConfig {
            repeat_every: Duration::from_secs(600),
            ..cfg("12:00", "13:00", "UTC")
        };
        assert_eq!(
            deadline(at("2026-11-22T11:58:00Z"), &c),
            at("2026-11-22T13:00:00Z")
        );
        assert_eq!(
            deadline(at("2026-11-22T13:00:00Z"), &c),
            at("2026-11-22T13:05:00Z")
        );
        // A repeat landing in the window waits for its end.
        assert_eq!(
            next_repeat(at("2026-11-22T11:55:00Z"), at("2026-11-22T11:55:30Z"), &c),
            at("2026-11-22T13:00:00Z")
        );
        // Missed repeats are not replayed: one interval after now.
        assert_eq!(
            next_repeat(at("2026-11-22T08:00:00Z"), at("2026-11-22T10:00:00Z"), &c),
            at("2026-11-22T10:10:00Z")
        );
    }

    #[test]
    fn no_quiet_hours_no_shift() {
        let c = RemindersConfig::default();
        assert_eq!(
            deadline(at("2026-11-22T23:58:00Z"), &c),
            at("2026-11-23T00:03:00Z")
        );
    }

    #[test]
    fn a_dst_gap_end_is_the_first_valid_time() {
        // Europe/Berlin springs forward 2026-03-29 02:00 -> 03:00.
        let c = cfg("01:00", "02:30", "Europe/Berlin");
        // 00:58 UTC = 01:58 CET... inside; 02:30 local does not exist -> 03:00 CEST = 01:00 UTC.
        let d = deadline(at("2026-03-29T00:20:00Z"), &c);
        assert_eq!(d, at("2026-03-29T01:00:00Z"));
    }
}
