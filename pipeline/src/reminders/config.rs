//! The `reminders:` and `assignment:` sections of a pipeline.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Contact reminders: every new (master, project) link gets a reminder with
/// a deadline; while nobody marks it contacted it is repeated as
/// `reminder.overdue` events, then expires.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemindersConfig {
    /// Time allowed for the first contact of a new lead, e.g. "5m".
    #[serde(default = "default_contact_within", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub contact_within: Duration,
    /// Interval between `reminder.overdue` events while the deadline is missed, e.g. "1m".
    #[serde(default = "default_repeat_every", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub repeat_every: Duration,
    /// Overdue events before the reminder expires (event `reminder.expired`).
    #[serde(default = "default_max_repeats")]
    pub max_repeats: u32,
    /// Hours nobody is called: a deadline or repeat falling inside moves to their end.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        Self {
            contact_within: default_contact_within(),
            repeat_every: default_repeat_every(),
            max_repeats: default_max_repeats(),
            quiet_hours: None,
        }
    }
}

fn default_contact_within() -> Duration {
    Duration::from_secs(300)
}
fn default_repeat_every() -> Duration {
    Duration::from_secs(60)
}
fn default_max_repeats() -> u32 {
    10
}

/// A daily quiet window in a time zone, e.g. from "21:00" to "08:00" in
/// Asia/Kolkata (a window past midnight is fine).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, local time "HH:MM".
    pub from: String,
    /// End, local time "HH:MM" (exclusive).
    pub to: String,
    /// IANA time zone name, e.g. "Asia/Kolkata"; default UTC.
    #[serde(default = "default_tz")]
    pub time_zone: String,
}

fn default_tz() -> String {
    "UTC".into()
}

/// Quiet hours, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuietWindow {
    pub from: NaiveTime,
    pub to: NaiveTime,
    pub tz: Tz,
}

impl QuietHours {
    /// Parse the window; errors name the field and say what is expected.
    pub fn window(&self) -> Result<QuietWindow, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let time = |field: &'static str, v: &str, problems: &mut Vec<(&'static str, String)>| {
            NaiveTime::parse_from_str(v.trim(), "%H:%M")
                .map_err(|_| problems.push((field, format!("{v:?} is not a time of day like \"21:00\""))))
                .ok()
        };
        let from = time("from", &self.from, &mut problems);
        let to = time("to", &self.to, &mut problems);
        let tz = self
            .time_zone
            .parse::<Tz>()
            .map_err(|_| {
                problems.push((
                    "time_zone",
                    format!(
                        "{:?} is not an IANA time zone like \"Asia/Kolkata\"",
                        self.time_zone
                    ),
                ))
            })
            .ok();
        if let (Some(f), Some(t)) = (from, to)
            && f == t
        {
            problems.push(("to", "must differ from `from`".into()));
        }
        match (from, to, tz) {
            (Some(from), Some(to), Some(tz)) if problems.is_empty() => Ok(QuietWindow { from, to, tz }),
            _ => Err(problems),
        }
    }
}

/// Owner assignment of new project links: round-robin per project over a
/// list of owners, sticky (a master keeps its owner in a project). Owners
/// that come with the lead data are kept; only links without one are assigned.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentConfig {
    /// Project name -> owners to rotate over; `"*"` covers every other project.
    pub owners: BTreeMap<String, Vec<String>>,
}

impl AssignmentConfig {
    /// The owners who take links of `project`.
    pub fn owners_for(&self, project: &str) -> Option<&[String]> {
        self.owners
            .get(project)
            .or_else(|| self.owners.get("*"))
            .map(Vec::as_slice)
            .filter(|o| !o.is_empty())
    }
}

/// Problems of the `reminders:` section, as (key below it, message).
pub fn check_reminders(c: &RemindersConfig) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if c.contact_within.is_zero() {
        p.push(("contact_within".into(), "must be longer than 0s".into()));
    }
    if c.repeat_every < Duration::from_secs(1) {
        p.push(("repeat_every".into(), "must be at least 1s".into()));
    }
    if let Some(q) = &c.quiet_hours
        && let Err(errs) = q.window()
    {
        for (k, m) in errs {
            p.push((format!("quiet_hours.{k}"), m));
        }
    }
    p
}

/// Problems of the `assignment:` section, as (key below it, message).
pub fn check_assignment(c: &AssignmentConfig) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if c.owners.is_empty() {
        p.push((
            "owners".into(),
            "list owners per project, e.g. `\"*\": [desk]` for every project".into(),
        ));
    }
    for (project, owners) in &c.owners {
        if owners.is_empty() {
            p.push((format!("owners.{project}"), "needs at least one owner".into()));
        }
        if owners.iter().any(|o| o.trim().is_empty()) {
            p.push((format!("owners.{project}"), "an owner name is empty".into()));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_durations() {
        let c: RemindersConfig = serde_norway::from_str("{}").unwrap();
        assert_eq!(c, RemindersConfig::default());
        assert_eq!(c.contact_within, Duration::from_secs(300));
        let c: RemindersConfig =
            serde_norway::from_str("contact_within: 1s\nrepeat_every: 2m\nmax_repeats: 3\n").unwrap();
        assert_eq!(c.contact_within, Duration::from_secs(1));
        assert_eq!(c.repeat_every, Duration::from_secs(120));
        assert!(check_reminders(&c).is_empty());
        assert!(serde_norway::from_str::<RemindersConfig>("contact_within: soon\n").is_err());
        assert!(serde_norway::from_str::<RemindersConfig>("every: 1m\n").is_err());
    }

    #[test]
    fn quiet_hours_are_checked() {
        let q = QuietHours {
            from: "21:00".into(),
            to: "8am".into(),
            time_zone: "Mars/Olympus".into(),
        };
        let errs = q.window().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["to", "time_zone"]);
        let c = RemindersConfig {
            quiet_hours: Some(q),
            repeat_every: Duration::ZERO,
            ..Default::default()
        };
        let keys: Vec<String> = check_reminders(&c).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["repeat_every", "quiet_hours.to", "quiet_hours.time_zone"]);
    }

    #[test]
    fn owners_fall_back_to_the_wildcard() {
        let c: AssignmentConfig =
            serde_norway::from_str("owners:\n  Riverside Towers: [asha, ravi]\n  \"*\": [desk]\n").unwrap();
        assert_eq!(c.owners_for("Riverside Towers").unwrap(), ["asha", "ravi"]);
        assert_eq!(c.owners_for("Lakeside Villas").unwrap(), ["desk"]);
        assert!(check_assignment(&c).is_empty());
        let empty: AssignmentConfig = serde_norway::from_str("owners:\n  A: []\n").unwrap();
        assert_eq!(empty.owners_for("A"), None);
        assert_eq!(check_assignment(&empty).len(), 1);
    }
}
