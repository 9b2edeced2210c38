//! Pipeline configuration: YAML into typed structs, `${VAR}` secrets, and
//! every problem reported at once with file, line and key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use leadflow_connectors::crm::CrmConfig;
use leadflow_connectors::dynamics::DynamicsConfig;
use leadflow_connectors::files::{FileDrop, FilesSourceConfig};
use leadflow_connectors::hubspot::HubSpotConfig;
use leadflow_connectors::salesforce::SalesforceConfig;
use leadflow_connectors::sheets::SheetsConfig;
use leadflow_connectors::zoho::ZohoConfig;
use leadflow_sinks::WarehouseConfig;
use leadflow_sinks::events::EventsConfig;
use leadflow_transforms::dedupe::DedupeConfig;
use leadflow_transforms::mapping::{Defaults, Mapper, MappingConfig};
use leadflow_transforms::normalise::country::CountryResolver;
use leadflow_transforms::normalise::phone::parse_region;
use leadflow_transforms::validate::{ValidateConfig, Validator};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::daemon::config::{DaemonConfig, schedule_problems};
use serde::{Deserialize, Serialize};

use crate::reminders::{AssignmentConfig, RemindersConfig};

/// A leadflow config file: a warehouse and the pipelines that fill it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the Delta tables live.
    #[serde(default)]
    pub warehouse: WarehouseConfig,
    /// The pipelines; `leadflow run` runs them all in order, or one with `--pipeline`.
    pub pipelines: Vec<PipelineConfig>,
    /// Where events of the `outbox` table (reminders) are delivered.
    #[serde(default)]
    pub events: EventsConfig,
    /// `leadflow daemon`: HTTP API address, token, shutdown grace.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Which value of each field a master's golden record keeps when its
    /// records disagree (newest, most_frequent, source_priority, longest).
    /// The rules of the leads' `masters`, and of every entity type that
    /// sets none of its own under `entities`.
    #[serde(default)]
    pub survivorship: leadflow_transforms::dedupe::SurvivorshipConfig,
    /// Settings of other entity types (the `entity:` of their pipelines),
    /// by entity name: e.g. `channel_partner: {survivorship: ...}`.
    #[serde(default)]
    pub entities: BTreeMap<String, EntityConfig>,
}

/// What one entity type sets for itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// The survivorship rules of this entity's golden records, instead of
    /// the top-level `survivorship`.
    #[serde(default)]
    pub survivorship: Option<leadflow_transforms::dedupe::SurvivorshipConfig>,
}

impl Config {
    /// Does a pipeline write entity type `entity` (its `entity:`)?
    pub fn has_entity(&self, entity: &str) -> bool {
        self.pipelines.iter().any(|p| p.entity.as_deref() == Some(entity))
    }

    /// The survivorship rules of an entity type (`None`: leads).
    pub fn survivorship_for(&self, entity: Option<&str>) -> &leadflow_transforms::dedupe::SurvivorshipConfig {
        entity
            .and_then(|e| self.entities.get(e))
            .and_then(|e| e.survivorship.as_ref())
            .unwrap_or(&self.survivorship)
    }
}

/// One pipeline: sources -> map -> normalise -> sql -> validate -> dedupe -> warehouse.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name: letters, digits, `-` and `_`. Used in metrics and run ids.
    pub name: String,
    /// What this pipeline is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The kind of party its records are, when not leads: e.g.
    /// `channel_partner`. Each entity type has its own masters, records,
    /// project links, merges, review, rejects and CRM links (under
    /// `entities/<entity>/` in the warehouse), deduplicated by the same
    /// engine; runs, ledgers and reminders stay shared. Lower-case letters,
    /// digits and `_`.
    #[serde(default)]
    pub entity: Option<String>,
    /// Values for rows that have none (project, phone region, ...).
    #[serde(default)]
    pub defaults: Defaults,
    /// Where the leads come from.
    pub sources: Vec<SourceConfig>,
    /// Source columns onto lead fields.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Normaliser settings.
    #[serde(default)]
    pub normalise: NormaliseConfig,
    /// Your own SQL stages, run in order after normalising. Each is a SELECT
    /// over the table `leads` that must keep every column (`SELECT *, ...` or
    /// `SELECT * FROM leads WHERE ...`); the normaliser UDFs are available.
    #[serde(default)]
    pub sql: Vec<String>,
    /// Validation rules; failing rows go to `rejects` with every reason.
    #[serde(default)]
    pub validate: ValidateConfig,
    /// Exact dedupe settings.
    #[serde(default)]
    pub dedupe: DedupeConfig,
    /// Owner assignment of project links without an owner: round-robin per
    /// project, sticky.
    #[serde(default)]
    pub assignment: Option<AssignmentConfig>,
    /// Contact reminders for new (master, project) links (`reminders: {}`
    /// for the defaults); none without this key.
    #[serde(default)]
    pub reminders: Option<RemindersConfig>,
    /// `leadflow daemon` runs the pipeline on this cron schedule, WITH a
    /// seconds field: "sec min hour day-of-month month day-of-week", e.g.
    /// "0 */5 * * * *" (every 5 minutes). Not together with `every`. Without
    /// `schedule` or `every` the daemon runs it only when triggered.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `leadflow daemon` runs the pipeline at this interval, e.g. "5m", "30s".
    /// Not together with `schedule`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub every: Option<std::time::Duration>,
    /// IANA time zone the `schedule` is read in, e.g. "Asia/Kolkata".
    /// Default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A source. Set exactly one kind: `files`, `hubspot`, `salesforce`,
/// `zoho`, `dynamics` or `google_sheets`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique within the pipeline; part of every record's key, so do not
    /// rename a source that already fed the warehouse.
    pub name: String,
    /// CRM sources: the account this source reads (HubSpot portal id,
    /// Salesforce org id, Zoho organisation, Dynamics environment). Part of
    /// each CRM record's identity in `crm_links`: set it when one warehouse
    /// reads two accounts of the same CRM, whose record ids can collide. Do
    /// not change it once the source fed the warehouse (its links would be
    /// new rows). Unset: the provider's only account.
    #[serde(default)]
    pub account: Option<String>,
    /// CSV/XLSX/ODS files in a local folder or object-store prefix.
    #[serde(default)]
    pub files: Option<FilesSourceConfig>,
    /// HubSpot CRM contacts or leads, read incrementally.
    #[serde(default)]
    pub hubspot: Option<HubSpotConfig>,
    /// Salesforce leads (SOQL on `Lead`), read incrementally by
    /// `SystemModstamp`.
    #[serde(default)]
    pub salesforce: Option<SalesforceConfig>,
    /// Zoho CRM records (Leads by default), read incrementally by
    /// `Modified_Time`.
    #[serde(default)]
    pub zoho: Option<ZohoConfig>,
    /// Dynamics 365 / Dataverse leads, read incrementally by `modifiedon`.
    #[serde(default)]
    pub dynamics: Option<DynamicsConfig>,
    /// A Google Sheet tab or range (service account), read in full each
    /// run; only new and edited rows go downstream.
    #[serde(default)]
    pub google_sheets: Option<SheetsConfig>,
}

impl SourceConfig {
    /// The kinds set on this source, as YAML keys (valid: exactly one).
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("files", self.files.is_some()),
            ("hubspot", self.hubspot.is_some()),
            ("salesforce", self.salesforce.is_some()),
            ("zoho", self.zoho.is_some()),
            ("dynamics", self.dynamics.is_some()),
            ("google_sheets", self.google_sheets.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// The CRM settings of a CRM source, relative paths resolved against
    /// the config's folder.
    pub fn crm(&self, base: &Path) -> Option<CrmConfig> {
        if let Some(c) = &self.hubspot {
            return Some(CrmConfig::HubSpot(c.clone()));
        }
        if let Some(c) = &self.salesforce {
            let mut c = c.clone();
            if let Some(f) = &c.private_key_file
                && Path::new(f).is_relative()
            {
                c.private_key_file = Some(base.join(f).to_string_lossy().into_owned());
            }
            return Some(CrmConfig::Salesforce(c));
        }
        if let Some(c) = &self.zoho {
            return Some(CrmConfig::Zoho(c.clone()));
        }
        if let Some(c) = &self.google_sheets {
            let mut c = c.clone();
            if let Some(f) = &c.credentials.key_file
                && Path::new(f).is_relative()
            {
                c.credentials.key_file = Some(base.join(f).to_string_lossy().into_owned());
            }
            return Some(CrmConfig::Sheets(c));
        }
        self.dynamics.clone().map(CrmConfig::Dynamics)
    }
}

/// Normaliser settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NormaliseConfig {
    /// Extra country spellings: `{"Blighty": GB}` (values are ISO alpha-2).
    pub countries: BTreeMap<String, String>,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// Every problem of a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{} in the config:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let at = match p.line {
                Some(l) => format!("{}:{l}", self.file.display()),
                None => self.file.display().to_string(),
            };
            let key = if p.key.is_empty() {
                String::new()
            } else {
                format!(" {}:", p.key)
            };
            writeln!(f, "  {at}:{key} {}", p.message)?;
        }
        Ok(())
    }
}

/// A loaded, checked config and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    /// Folder relative paths in the config resolve against.
    pub base: PathBuf,
}

impl LoadedConfig {
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.config.pipelines.iter().find(|p| p.name == name)
    }
}

/// Replace `${VAR}` and `${VAR:-default}` from the environment; `$${` is a
/// literal `${`. Missing variables are problems (their values never appear
/// in messages or logs).
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<ConfigProblem>) {
    let re = regex::Regex::new(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}").expect("valid regex");
    let mut problems = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut last = 0;
        for caps in re.captures_iter(line) {
            let m = caps.get(0).expect("match");
            out.push_str(&line[last..m.start()]);
            last = m.end();
            if m.as_str() == "$${" {
                out.push_str("${");
                continue;
            }
            let name = &caps[1];
            match (env(name), caps.get(2)) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d.as_str()),
                (None, None) => {
                    problems.push(ConfigProblem {
                        line: Some(lineno + 1),
                        key: String::new(),
                        message: format!(
                            "environment variable {name} is not set (referenced as ${{{name}}})"
                        ),
                    });
                }
            }
        }
        out.push_str(&line[last..]);
    }
    (out, problems)
}

/// Find the line of a key path (`pipelines`, `0`, `validate`, ...) in YAML
/// text, by indentation. Good enough for block-style configs; None when the
/// path is written in flow style.
pub fn locate(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut min_indent: i64 = -1;
    let mut found = None;
    for seg in path {
        if let Ok(idx) = seg.parse::<usize>() {
            // The idx-th "- " item deeper than the current key.
            let mut count = 0usize;
            let mut item_indent = None;
            let mut hit = None;
            for (i, l) in lines.iter().enumerate().skip(start) {
                let t = l.trim_start();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let ind = (l.len() - t.len()) as i64;
                if ind <= min_indent && !t.starts_with("- ") {
                    break;
                }
                if t.starts_with("- ") || t == "-" {
                    if item_indent.is_none() {
                        item_indent = Some(ind);
                    }
                    if Some(ind) == item_indent {
                        if count == idx {
                            hit = Some((i, ind));
                            break;
                        }
                        count += 1;
                    }
                }
            }
            let (i, ind) = hit?;
            found = Some(i + 1);
            start = i;
            min_indent = ind;
            // Keys of this item sit at ind + 2 (first one on the dash line).
            continue;
        }
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(start) {
            let t = l.trim_start().trim_start_matches("- ");
            let ind = (l.len() - l.trim_start().len()) as i64;
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            if i > start && ind <= min_indent && found.is_some() {
                break;
            }
            let key = t
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .trim_matches('\'');
            if key == seg && t.contains(':') {
                hit = Some((i, ind));
                break;
            }
        }
        let (i, ind) = hit?;
        found = Some(i + 1);
        start = i + 1;
        min_indent = ind;
    }
    found
}

fn section<T: DeserializeOwned>(
    value: &serde_norway::Value,
    path: &[String],
    text: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut full: Vec<String> = path.to_vec();
            for seg in e.path().iter() {
                let s = seg.to_string();
                if s != "?" && !s.is_empty() && s != "." {
                    full.extend(
                        s.split('.')
                            .filter(|x| !x.is_empty())
                            .map(|x| x.trim_matches(|c| c == '[' || c == ']').to_string()),
                    );
                }
            }
            let message = e.into_inner().to_string();
            // serde_norway appends its own (meaningless here) position.
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            problems.push(ConfigProblem {
                line: locate(text, &full).or_else(|| locate(text, path)),
                key: full.join("."),
                message,
            });
            None
        }
    }
}

/// Read, interpolate, parse and check a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<LoadedConfig, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![ConfigProblem {
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let (text, mut problems) = interpolate(&text, env);
    let value: serde_norway::Value = match serde_norway::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(ConfigProblem {
                line: e.location().map(|l| l.line()),
                key: String::new(),
                message: format!("not valid YAML: {e}"),
            });
            return Err(fail(problems));
        }
    };
    let config = parse_sections(&value, &text, &mut problems);
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    if let Some(config) = &config {
        check(config, &text, &base, &mut problems);
    }
    match config {
        Some(config) if problems.is_empty() => Ok(LoadedConfig {
            config,
            path: path.to_path_buf(),
            base,
        }),
        _ => Err(fail(problems)),
    }
}

/// Deserialize section by section so one mistake does not hide the others.
fn parse_sections(
    value: &serde_norway::Value,
    text: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Config> {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let Some(map) = value.as_mapping() else {
        problems.push(ConfigProblem {
            line: Some(1),
            key: String::new(),
            message: "the config must be a mapping with `pipelines:`".into(),
        });
        return None;
    };
    for k in map.keys() {
        let k = k.as_str().unwrap_or("?");
        if ![
            "warehouse",
            "pipelines",
            "events",
            "daemon",
            "survivorship",
            "entities",
        ]
        .contains(&k)
        {
            problems.push(ConfigProblem {
                line: locate(text, &p(&[k])),
                key: k.into(),
                message: format!(
                    "unknown key `{k}`, expected `warehouse`, `pipelines`, `events`, `daemon`, `survivorship` \
                     or `entities`"
                ),
            });
        }
    }
    let survivorship = match map.get("survivorship") {
        Some(v) => section::<leadflow_transforms::dedupe::SurvivorshipConfig>(
            v,
            &p(&["survivorship"]),
            text,
            problems,
        ),
        None => Some(Default::default()),
    };
    let entities = match map.get("entities") {
        Some(v) => section::<BTreeMap<String, EntityConfig>>(v, &p(&["entities"]), text, problems),
        None => Some(BTreeMap::new()),
    };
    let daemon = match map.get("daemon") {
        Some(v) => section::<DaemonConfig>(v, &p(&["daemon"]), text, problems),
        None => Some(DaemonConfig::default()),
    };
    let warehouse = match map.get("warehouse") {
        Some(v) => section::<WarehouseConfig>(v, &p(&["warehouse"]), text, problems),
        None => Some(WarehouseConfig::default()),
    };
    let events = match map.get("events") {
        Some(v) => section::<EventsConfig>(v, &p(&["events"]), text, problems),
        None => Some(EventsConfig::default()),
    };
    let Some(list) = map.get("pipelines") else {
        problems.push(ConfigProblem {
            line: None,
            key: "pipelines".into(),
            message: "missing: at least one pipeline is needed".into(),
        });
        return None;
    };
    let Some(list) = list.as_sequence() else {
        problems.push(ConfigProblem {
            line: locate(text, &p(&["pipelines"])),
            key: "pipelines".into(),
            message: "must be a list".into(),
        });
        return None;
    };
    let mut pipelines = Vec::new();
    let mut ok = true;
    for (i, item) in list.iter().enumerate() {
        let base = vec!["pipelines".to_string(), i.to_string()];
        let Some(pm) = item.as_mapping() else {
            problems.push(ConfigProblem {
                line: locate(text, &base),
                key: base.join("."),
                message: "a pipeline must be a mapping".into(),
            });
            ok = false;
            continue;
        };
        // Each sub-section alone first, so all their errors surface together.
        let mut section_ok = true;
        for (k, v) in pm {
            let key = k.as_str().unwrap_or("?").to_string();
            let mut path = base.clone();
            path.push(key.clone());
            let good = match key.as_str() {
                "defaults" => section::<Defaults>(v, &path, text, problems).is_some(),
                "mapping" => section::<MappingConfig>(v, &path, text, problems).is_some(),
                "normalise" => section::<NormaliseConfig>(v, &path, text, problems).is_some(),
                "validate" => section::<ValidateConfig>(v, &path, text, problems).is_some(),
                "dedupe" => section::<DedupeConfig>(v, &path, text, problems).is_some(),
                "sql" => section::<Vec<String>>(v, &path, text, problems).is_some(),
                "reminders" => section::<Option<RemindersConfig>>(v, &path, text, problems).is_some(),
                "assignment" => section::<Option<AssignmentConfig>>(v, &path, text, problems).is_some(),
                "sources" => match v.as_sequence() {
                    Some(srcs) => {
                        let mut all = true;
                        for (j, s) in srcs.iter().enumerate() {
                            let mut sp = path.clone();
                            sp.push(j.to_string());
                            all &= section::<SourceConfig>(s, &sp, text, problems).is_some();
                        }
                        all
                    }
                    None => section::<Vec<SourceConfig>>(v, &path, text, problems).is_some(),
                },
                "name" | "description" | "entity" => true,
                // Checked with the whole pipeline below (and by `check`).
                "schedule" | "every" | "time_zone" => true,
                other => {
                    problems.push(ConfigProblem {
                        line: locate(text, &path),
                        key: path.join("."),
                        message: format!(
                            "unknown key `{other}`, expected one of name, description, entity, defaults, sources, mapping, normalise, sql, validate, dedupe, assignment, reminders, schedule, every, time_zone"
                        ),
                    });
                    false
                }
            };
            section_ok &= good;
        }
        if section_ok {
            match section::<PipelineConfig>(item, &base, text, problems) {
                Some(pc) => pipelines.push(pc),
                None => ok = false,
            }
        } else {
            ok = false;
        }
    }
    if ok
        && let Some(warehouse) = warehouse
        && let Some(events) = events
        && let Some(daemon) = daemon
        && let Some(survivorship) = survivorship
        && let Some(entities) = entities
    {
        return Some(Config {
            warehouse,
            pipelines,
            events,
            daemon,
            survivorship,
            entities,
        });
    }
    None
}

/// Checks serde cannot do: names, references, compiled mappings and rules.
fn check(config: &Config, text: &str, base: &Path, problems: &mut Vec<ConfigProblem>) {
    let at = |path: &[String]| locate(text, path);
    let path = |parts: &[&dyn fmt::Display]| parts.iter().map(|p| p.to_string()).collect::<Vec<String>>();
    if config.pipelines.is_empty() {
        problems.push(ConfigProblem {
            line: at(&path(&[&"pipelines"])),
            key: "pipelines".into(),
            message: "no pipelines defined".into(),
        });
    }
    if let Err(e) = leadflow_sinks::Warehouse::resolve(&config.warehouse.uri, base) {
        problems.push(ConfigProblem {
            line: at(&path(&[&"warehouse", &"uri"])),
            key: "warehouse.uri".into(),
            message: e.to_string(),
        });
    }
    let sections = [
        ("warehouse", config.warehouse.problems()),
        ("daemon", config.daemon.problems()),
    ];
    for (section, found) in sections {
        for (key, message) in found {
            let key = path(&[&section, &key]);
            problems.push(ConfigProblem {
                line: at(&key).or_else(|| at(&path(&[&section]))),
                key: key.join("."),
                message,
            });
        }
    }
    // Survivorship rules: the top-level ones (source names of any
    // pipeline), then each entity's own (source names of its pipelines).
    let sources_of = |entity: Option<&str>| -> BTreeSet<&str> {
        config
            .pipelines
            .iter()
            .filter(|p| entity.is_none() || p.entity.as_deref() == entity)
            .flat_map(|p| p.sources.iter().map(|s| s.name.as_str()))
            .collect()
    };
    let mut rule_sets = vec![(
        vec!["survivorship".to_string()],
        &config.survivorship,
        sources_of(None),
        "any pipeline".to_string(),
    )];
    for (name, e) in &config.entities {
        let at_entity = vec!["entities".to_string(), name.clone()];
        let entity_problem = crate::entity_problem(name)
            .or_else(|| (!config.has_entity(name)).then(|| format!("no pipeline has `entity: {name}`")));
        if let Some(message) = entity_problem {
            problems.push(ConfigProblem {
                line: at(&at_entity),
                key: at_entity.join("."),
                message,
            });
            continue;
        }
        if let Some(rules) = &e.survivorship {
            let mut key = at_entity;
            key.push("survivorship".into());
            let whose = format!("a pipeline of entity `{name}`");
            rule_sets.push((key, rules, sources_of(Some(name.as_str())), whose));
        }
    }
    for (base_key, rules, sources, whose) in rule_sets {
        let mut found = rules.problems();
        for s in &rules.source_priority {
            if !sources.contains(s.as_str()) {
                found.push((
                    "source_priority".into(),
                    format!(
                        "`{s}` is not a source of {whose} (sources: {})",
                        sources.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for (key, message) in found {
            let mut full = base_key.clone();
            full.push(key);
            problems.push(ConfigProblem {
                line: at(&full).or_else(|| at(&base_key)),
                key: full.join("."),
                message,
            });
        }
    }
    let name_re = regex::Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_-]*$").expect("valid regex");
    let mut names = BTreeSet::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        let mut push = |key: Vec<String>, message: String| {
            problems.push(ConfigProblem {
                line: at(&key).or_else(|| at(&path(&[&"pipelines", &i]))),
                key: key.join("."),
                message,
            });
        };
        if !name_re.is_match(&p.name) {
            push(
                path(&[&"pipelines", &i, &"name"]),
                format!(
                    "pipeline name {:?} may hold only letters, digits, `-` and `_`",
                    p.name
                ),
            );
        }
        if !names.insert(p.name.clone()) {
            push(
                path(&[&"pipelines", &i, &"name"]),
                format!("pipeline name `{}` is used twice", p.name),
            );
        }
        if let Some(e) = &p.entity
            && let Some(problem) = crate::entity_problem(e)
        {
            push(path(&[&"pipelines", &i, &"entity"]), problem);
        }
        if p.sources.is_empty() {
            push(
                path(&[&"pipelines", &i, &"sources"]),
                "a pipeline needs at least one source".into(),
            );
        }
        let mut source_names = BTreeSet::new();
        // (provider, object, account) -> the source reading it.
        let mut crm_reads: BTreeMap<(&str, String, Option<&str>), &str> = BTreeMap::new();
        for (j, s) in p.sources.iter().enumerate() {
            let sp = |k: &str| path(&[&"pipelines", &i, &"sources", &j, &k]);
            if !name_re.is_match(&s.name) {
                push(
                    sp("name"),
                    format!(
                        "source name {:?} may hold only letters, digits, `-` and `_`",
                        s.name
                    ),
                );
            }
            if !source_names.insert(s.name.clone()) {
                push(
                    sp("name"),
                    format!("source name `{}` is used twice in this pipeline", s.name),
                );
            }
            let kinds = s.kinds();
            if let Some(a) = &s.account {
                if a.trim().is_empty() {
                    push(
                        sp("account"),
                        "`account` is empty: name the CRM account, or leave it out".into(),
                    );
                }
                if !s.crm(base).is_some_and(|c| c.is_crm()) && kinds.len() == 1 {
                    push(
                        sp("account"),
                        format!(
                            "`account` names the CRM account a CRM source reads; a `{}` source has none",
                            kinds[0]
                        ),
                    );
                }
            }
            match kinds.as_slice() {
                [] => push(
                    path(&[&"pipelines", &i, &"sources", &j]),
                    "set a source kind: `files:`, `hubspot:`, `salesforce:`, `zoho:`, `dynamics:` or \
                     `google_sheets:`"
                        .into(),
                ),
                ["files"] => {
                    let files = resolve_files(s.files.as_ref().expect("kind is set"), base);
                    if let Err(e) = FileDrop::new(&s.name, &files) {
                        push(sp("files"), e.to_string());
                    }
                }
                [kind] => {
                    if let Some(crm) = s.crm(base) {
                        for problem in crm.problems() {
                            push(sp(kind), problem);
                        }
                        let account = s.account.as_deref();
                        if crm.is_crm()
                            && let Some(other) =
                                crm_reads.insert((crm.kind(), crm.object(), account), &s.name)
                        {
                            push(
                                sp("account"),
                                format!(
                                    "sources `{other}` and `{}` both read {} {} of {}: one CRM record \
                                     would belong to two sources; read it once, or, if they are two \
                                     accounts, give each its `account`",
                                    s.name,
                                    crm.kind(),
                                    crm.object(),
                                    account
                                        .map_or("the same account".to_string(), |a| format!("account `{a}`"))
                                ),
                            );
                        }
                    }
                }
                many => push(
                    path(&[&"pipelines", &i, &"sources", &j]),
                    format!(
                        "set exactly one source kind, not {}",
                        many.iter()
                            .map(|k| format!("`{k}:`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                ),
            }
        }
        if let Some(r) = &p.defaults.phone_region
            && parse_region(r).is_none()
        {
            push(
                path(&[&"pipelines", &i, &"defaults", &"phone_region"]),
                format!("`{r}` is not an ISO 3166-1 alpha-2 region with phone numbers"),
            );
        }
        if let Err(errs) = Mapper::new(&p.mapping, &p.defaults) {
            for e in errs {
                push(path(&[&"pipelines", &i, &"mapping"]), e.to_string());
            }
        }
        if let Err(errs) = Validator::new(&p.validate) {
            for e in errs {
                push(path(&[&"pipelines", &i, &"validate"]), e.to_string());
            }
        }
        if let Err(e) = CountryResolver::new(&p.normalise.countries) {
            push(
                path(&[&"pipelines", &i, &"normalise", &"countries"]),
                e.to_string(),
            );
        }
        if p.dedupe.keys.is_empty() {
            push(
                path(&[&"pipelines", &i, &"dedupe", &"keys"]),
                "at least one match key is needed (phone, email)".into(),
            );
        }
        if !(0.0..=1.0).contains(&p.dedupe.name_similarity) {
            push(
                path(&[&"pipelines", &i, &"dedupe", &"name_similarity"]),
                "must be between 0 and 1".into(),
            );
        }
        if p.dedupe.mode == leadflow_transforms::dedupe::DedupeMode::Probabilistic {
            // The model loads and fits, vetoes and thresholds make sense,
            // and every column read is one the link stage has.
            let at = path(&[&"pipelines", &i, &"dedupe", &"linkage"]);
            if let Err(e) = leadflow_transforms::dedupe::scorer(&p.dedupe) {
                push(at.clone(), e.to_string());
            }
            for c in leadflow_transforms::linkage::frame::needed_columns(&p.dedupe.linkage) {
                if leadflow_transforms::schema::RECORDS_SCHEMA
                    .field_with_name(&c)
                    .is_err()
                {
                    push(
                        at.clone(),
                        format!("column `{c}` is not a lead column the link stage has"),
                    );
                }
            }
        }
        for (key, message) in schedule_problems(p) {
            push(path(&[&"pipelines", &i, &key]), message);
        }
        for (k, stmt) in p.sql.iter().enumerate() {
            if let Err(e) = crate::stages::check_sql(stmt) {
                push(path(&[&"pipelines", &i, &"sql", &k]), e);
            }
        }
        if let Some(r) = &p.reminders {
            for (k, m) in crate::reminders::config::check_reminders(r) {
                let mut key = path(&[&"pipelines", &i, &"reminders"]);
                key.extend(k.split('.').map(str::to_string));
                push(key, m);
            }
        }
        if let Some(a) = &p.assignment {
            for (k, m) in crate::reminders::config::check_assignment(a) {
                let mut key = path(&[&"pipelines", &i, &"assignment"]);
                key.extend(k.split('.').map(str::to_string));
                push(key, m);
            }
        }
    }
    for (k, message) in leadflow_sinks::events::check_config(&config.events) {
        let mut key = vec!["events".to_string()];
        key.extend(k.split('.').map(str::to_string));
        problems.push(ConfigProblem {
            line: at(&key).or_else(|| at(&key[..key.len().min(3)])),
            key: key.join("."),
            message,
        });
    }
}

/// Relative local folders in a files source resolve against the config's folder.
pub fn resolve_files(files: &FilesSourceConfig, base: &Path) -> FilesSourceConfig {
    let mut f = files.clone();
    let p = Path::new(&files.path);
    if !files.path.contains("://") && p.is_relative() {
        f.path = base.join(p).to_string_lossy().into_owned();
    }
    f
}

/// Plan every pipeline's `sql:` stages (async: DataFusion plans). Problems
/// come back as a ConfigError like the others.
pub async fn check_sql_stages(loaded: &LoadedConfig) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(&loaded.path).unwrap_or_default();
    let mut problems = Vec::new();
    for (i, p) in loaded.config.pipelines.iter().enumerate() {
        let opts = leadflow_transforms::normalise::NormaliseOptions {
            default_region: p.defaults.phone_region.clone(),
            country_overrides: p.normalise.countries.clone(),
        };
        for (k, message) in crate::stages::check_stages(&opts, &p.sql).await {
            let path: Vec<String> = [
                "pipelines".to_string(),
                i.to_string(),
                "sql".into(),
                k.to_string(),
            ]
            .to_vec();
            problems.push(ConfigProblem {
                line: locate(&text, &path),
                key: path.join("."),
                message,
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError {
            file: loaded.path.clone(),
            problems,
        })
    }
}

/// The JSON Schema of the config file, for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_and_reports_missing_vars_by_line() {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
        let (out, problems) = interpolate(
            "a: ${TOKEN}\nb: ${MISSING}\nc: ${OTHER:-x}\nd: $${LITERAL}\n",
            &env,
        );
        assert_eq!(out, "a: s3cret\nb: \nc: x\nd: ${LITERAL}\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(2));
        assert!(problems[0].message.contains("MISSING"));
    }

    #[test]
    fn locates_nested_keys() {
        let text = "warehouse:\n  uri: x\npipelines:\n  - name: a\n    validate:\n      required: [x]\n  - name: b\n    mapping:\n      columns:\n        A: phone\n";
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(locate(text, &p(&["warehouse", "uri"])), Some(2));
        assert_eq!(
            locate(text, &p(&["pipelines", "0", "validate", "required"])),
            Some(6)
        );
        assert_eq!(locate(text, &p(&["pipelines", "1", "name"])), Some(7));
        assert_eq!(
            locate(text, &p(&["pipelines", "1", "mapping", "columns"])),
            Some(9)
        );
    }

    #[test]
    fn crm_sources_take_exactly_one_kind_and_list_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.yaml");
        std::fs::write(
            &path,
            "warehouse:\n  uri: ./warehouse\npipelines:\n  - name: crm\n    sources:\n      - name: sf\n        \
             salesforce:\n          client_id: app\n          client_secret: ${SF_SECRET}\n          \
             username: u@x.io\n          private_key_file: keys/missing.pem\n      - name: two\n        \
             zoho: {client_id: a, client_secret: s, refresh_token: r}\n        \
             dynamics: {url: \"https://x.crm.dynamics.com\", tenant_id: t, client_id: a, client_secret: s}\n      \
             - name: d365\n        dynamics: {url: \"https://x.crm.dynamics.com\", client_id: a, client_secret: s, \
             page_size: 0}\n    dedupe:\n      keys: [phone, email]\n",
        )
        .unwrap();
        let env = |k: &str| (k == "SF_SECRET").then(|| "s3cret-value".to_string());
        let err = load_with_env(&path, &env).unwrap_err();
        let text = err.to_string();
        for needle in [
            "`client_secret` (refresh-token flow) or a JWT private key",
            "missing.pem",
            "not `zoho:` and `dynamics:`",
            "`tenant_id` (Azure AD tenant) or `token_url`",
            "page_size",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(!text.contains("s3cret-value"), "{text}");
        // The relative key path resolves against the config's folder.
        assert!(
            text.contains(&dir.path().join("keys/missing.pem").display().to_string()),
            "{text}"
        );

        // A misspelt key is a structural problem, named with its path.
        std::fs::write(
            &path,
            "pipelines:\n  - name: crm\n    sources:\n      - name: z\n        zoho: {client_id: a, \
             client_secret: s, refresh_token: r, data_center: eu}\n",
        )
        .unwrap();
        let text = load_with_env(&path, &env).unwrap_err().to_string();
        assert!(
            text.contains("data_center") && text.contains("sources.0.zoho"),
            "{text}"
        );
    }
}
