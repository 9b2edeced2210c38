//! The Dynamics 365 / Dataverse source against a fake that behaves like
//! the reference: an Azure AD v2 token endpoint (client credentials, scope
//! `<org>/.default`, AADSTS errors); OData v4 headers; `Prefer:
//! odata.maxpagesize` answered with `Preference-Applied` and an absolute
//! `@odata.nextLink` carrying `$skiptoken`; `$filter=modifiedon gt ...`;
//! `$skip` refused; option sets as numbers with formatted-value annotations
//! when asked for; 401 with `WWW-Authenticate`; 429 with `Retry-After`.
//! Change tracking as Dataverse does it: `Prefer: odata.track-changes`
//! refuses `$filter`/`$orderby`/`$expand`/`$top`, the last page carries
//! `@odata.deltaLink` with `$deltatoken=<version>!<time>`, a delta link
//! answers changed rows then `$deletedEntity` rows, an expired token is a
//! 400 `0x80044352` ("perform a full sync"); a table without "Track
//! changes" ignores the preference (no delta link).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::fake::{CrmSandbox, form, json_response, serve, token_of};
use super::{exited, text};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "51f81489-12ee-4a9e-aaae-a2591f45987d";
const SECRET: &str = "dyn-client-secret~abc";
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

#[derive(Clone, Copy)]
enum Fault {
    RateLimited,
    ServerError,
    Malformed,
    ForeignNextLink,
}

struct DLead {
    /// Change-tracking version: the fake's counter when last written.
    version: u64,
    modified: DateTime<Utc>,
    fields: BTreeMap<String, String>,
    status: i64,
}

#[derive(Default)]
struct Fake {
    base: String,
    leads: BTreeMap<String, DLead>,
    tokens: HashSet<String>,
    issued: u32,
    expire_after: Option<u32>,
    faults: VecDeque<Fault>,
    /// One entry per request: token, list, list-filter, track, delta,
    /// next, expired, rejected, 401, fault.
    log: Vec<String>,
    /// Row version counter (Dataverse's change-tracking version).
    version: u64,
    /// (lead id, version) of every deletion.
    deleted: Vec<(String, u64)>,
    /// Delta tokens older than this version have expired.
    expired_below: u64,
    /// The leads table has "Track changes" off: the preference is ignored.
    tracking_off: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn odata_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

async fn token(State(s): State<Shared>, body: String) -> Response {
    let f = form(&body);
    let mut fake = s.lock().unwrap();
    fake.log.push("token".into());
    let get = |k: &str| f.get(k).map(String::as_str);
    if get("grant_type") != Some("client_credentials") {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "AADSTS70003: grant type not supported",
                   "error_codes": [70003]}),
        );
    }
    let scope = format!("{}/.default", fake.base);
    if get("scope") != Some(scope.as_str()) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_scope", "error_description": "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
                   "error_codes": [70011], "timestamp": "2026-01-01 00:00:00Z", "trace_id": "t", "correlation_id": "c"}),
        );
    }
    if get("client_id") != Some(CLIENT_ID) || get("client_secret") != Some(SECRET) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                   "error_codes": [7000215], "timestamp": "2026-01-01 00:00:00Z", "trace_id": "t", "correlation_id": "c"}),
        );
    }
    fake.issued += 1;
    let access = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-{}", fake.issued);
    fake.tokens.insert(access.clone());
    json_response(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access}),
    )
}

fn status_label(code: i64) -> &'static str {
    match code {
        1 => "New",
        2 => "Contacted",
        3 => "Qualified",
        _ => "Lost",
    }
}

/// One lead as Dataverse returns it for `$select`.
fn render(id: &str, l: &DLead, select: &[String], annotate: bool) -> Value {
    let mut r = serde_json::Map::new();
    r.insert("@odata.etag".into(), json!(format!("W/\"{}\"", l.version)));
    for f in select {
        match f.as_str() {
            "leadid" => {
                r.insert(f.clone(), json!(id));
            }
            "modifiedon" => {
                r.insert(
                    f.clone(),
                    json!(l.modified.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                if annotate {
                    r.insert(
                        format!("{f}{FORMATTED}"),
                        json!(l.modified.format("%-m/%-d/%Y %-I:%M %p").to_string()),
                    );
                }
            }
            "statuscode" => {
                r.insert(f.clone(), json!(l.status));
                if annotate {
                    r.insert(format!("{f}{FORMATTED}"), json!(status_label(l.status)));
                }
            }
            other => {
                r.insert(
                    f.clone(),
                    l.fields.get(other).map(|v| json!(v)).unwrap_or(Value::Null),
                );
            }
        }
    }
    Value::Object(r)
}

fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

async fn list_leads(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut fake = s.lock().unwrap();
    match fake.expire_after {
        Some(0) => {
            fake.tokens.clear();
            fake.expire_after = None;
        }
        Some(n) => fake.expire_after = Some(n - 1),
        None => {}
    }
    if !token_of(&headers, "Bearer").is_some_and(|t| fake.tokens.contains(&t)) {
        fake.log.push("401".into());
        let mut r = odata_error(StatusCode::UNAUTHORIZED, "", "");
        r.headers_mut().insert(
            "www-authenticate",
            format!(
                "Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize, error=invalid_token, error_description=\"The access token expired\""
            )
            .parse()
            .unwrap(),
        );
        return r;
    }
    for h in ["odata-version", "odata-maxversion"] {
        if headers.get(h).and_then(|v| v.to_str().ok()) != Some("4.0") {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "0x80060888",
                &format!("missing {h}: 4.0"),
            );
        }
    }
    let fault = fake.faults.pop_front();
    if let Some(f) = fault
        && !matches!(f, Fault::ForeignNextLink)
    {
        fake.log.push("fault".into());
        return match f {
            Fault::RateLimited => {
                let mut r = odata_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0x80072322",
                    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                );
                r.headers_mut().insert("retry-after", "1".parse().unwrap());
                r
            }
            Fault::ServerError => odata_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "0x80040216",
                "An unexpected error occurred.",
            ),
            _ => json_response(
                StatusCode::OK,
                json!({"@odata.context": "x", "value": {"leadid": 1}}),
            ),
        };
    }
    if q.contains_key("$skip") {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            "The query parameter $skip is not supported",
        );
    }
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let asks_tracking = prefer.contains("odata.track-changes") || q.contains_key("$deltatoken");
    if asks_tracking {
        for opt in ["$filter", "$orderby", "$expand", "$top"] {
            if q.contains_key(opt) {
                fake.log.push("rejected".into());
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!(
                        "The \"{opt}\" query parameter isn't supported when Change Tracking is enabled."
                    ),
                );
            }
        }
    } else if q.get("$orderby").map(String::as_str) != Some("modifiedon asc") {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            "expected $orderby=modifiedon asc",
        );
    }
    let tracked = asks_tracking && !fake.tracking_off;
    let select: Vec<String> = q
        .get("$select")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_default();
    let since = match q.get("$filter") {
        None => None,
        Some(f) => {
            let Some(t) = f.strip_prefix("modifiedon gt ") else {
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!("unsupported $filter {f}"),
                );
            };
            Some(t.parse::<DateTime<Utc>>().unwrap())
        }
    };
    // `$deltatoken=<version>!<MM/dd/yyyy HH:mm:ss>`.
    let delta_from: Option<u64> = match q.get("$deltatoken") {
        None => None,
        Some(t) => match t.split('!').next().and_then(|v| v.parse::<u64>().ok()) {
            None => {
                fake.log.push("expired".into());
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "0x80044352",
                    "Version stamp associated with the client has expired. Please perform a full sync.",
                );
            }
            Some(v) if v < fake.expired_below => {
                fake.log.push("expired".into());
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "0x80044352",
                    "Version stamp associated with the client has expired. Please perform a full sync.",
                );
            }
            Some(v) => Some(v),
        },
    };
    let cookie = q.get("$skiptoken").map(|t| {
        let attr = |name: &str| -> Option<u64> {
            regex::Regex::new(&format!(r#"{name}="(\d+)""#))
                .unwrap()
                .captures(t)
                .map(|c| c[1].parse().unwrap())
        };
        (attr("offset").unwrap(), attr("snapshot"))
    });
    let (offset, snapshot) = match cookie {
        Some((o, snap)) => {
            fake.log.push("next".into());
            (o as usize, snap.unwrap_or(fake.version))
        }
        None => {
            let what = match (tracked, delta_from, since) {
                (true, Some(_), _) => "delta",
                (true, None, _) => "track",
                (false, _, Some(_)) => "list-filter",
                (false, _, None) => "list",
            };
            fake.log.push(what.into());
            (0, fake.version)
        }
    };
    let page_size: usize = regex::Regex::new(r"odata\.maxpagesize=(\d+)")
        .unwrap()
        .captures(&prefer)
        .map(|c| c[1].parse::<usize>().unwrap().min(5000))
        .unwrap_or(5000);
    let annotate = prefer.contains("OData.Community.Display.V1.FormattedValue")
        || prefer.contains("include-annotations=\"*\"");
    let base = fake.base.clone();
    // Rows of this answer: leads, then (delta answers) deleted ids.
    let mut rows: Vec<Value> = Vec::new();
    if tracked {
        let from = delta_from.unwrap_or(0);
        let mut hits: Vec<(&String, &DLead)> = fake
            .leads
            .iter()
            .filter(|(_, l)| l.version > from && l.version <= snapshot)
            .collect();
        hits.sort_by_key(|(id, l)| (l.version, (*id).clone()));
        rows.extend(hits.iter().map(|(id, l)| render(id, l, &select, annotate)));
        if delta_from.is_some() {
            let mut gone: Vec<&(String, u64)> = fake
                .deleted
                .iter()
                .filter(|(id, v)| *v > from && *v <= snapshot && !fake.leads.contains_key(id))
                .collect();
            gone.sort_by_key(|(_, v)| *v);
            rows.extend(gone.iter().map(|(id, _)| {
                json!({"@odata.context": format!("{base}/api/data/v9.2/$metadata#leads/$deletedEntity"),
                       "id": id, "reason": "deleted"})
            }));
        }
    } else {
        let mut hits: Vec<(&String, &DLead)> = fake
            .leads
            .iter()
            .filter(|(_, l)| since.is_none_or(|t| l.modified > t))
            .collect();
        hits.sort_by_key(|(id, l)| (l.modified, (*id).clone()));
        rows.extend(hits.iter().map(|(id, l)| render(id, l, &select, annotate)));
    }
    let total = rows.len();
    let value: Vec<Value> = rows.into_iter().skip(offset).take(page_size).collect();
    let context = if delta_from.is_some() && tracked {
        format!(
            "{base}/api/data/v9.2/$metadata#leads({})/$delta",
            select.join(",")
        )
    } else {
        format!("{base}/api/data/v9.2/$metadata#leads({})", select.join(","))
    };
    let mut body = json!({"@odata.context": context, "value": value});
    if offset + page_size < total {
        let mut query: Vec<String> = ["$select", "$orderby", "$filter", "$deltatoken"]
            .iter()
            .filter_map(|k| q.get(*k).map(|v| format!("{k}={}", enc(v).replace('+', "%20"))))
            .collect();
        let cookie = format!(
            "<cookie pagenumber=\"{}\" offset=\"{}\" snapshot=\"{snapshot}\" />",
            offset / page_size + 2,
            offset + page_size
        );
        query.push(format!("$skiptoken={}", enc(&cookie)));
        let host = if matches!(fault, Some(Fault::ForeignNextLink)) {
            fake.log.push("fault".into());
            "https://contoso.evil.example".to_string()
        } else {
            base.clone()
        };
        body["@odata.nextLink"] = json!(format!("{host}/api/data/v9.2/leads?{}", query.join("&")));
    } else if tracked {
        let token = format!("{snapshot}!{}", Utc::now().format("%m/%d/%Y %H:%M:%S"));
        body["@odata.deltaLink"] = json!(format!(
            "{base}/api/data/v9.2/leads?$select={}&$deltatoken={}",
            select.join(","),
            enc(&token)
        ));
    }
    let mut r = json_response(StatusCode::OK, body);
    let applied = if tracked {
        format!("odata.track-changes,odata.maxpagesize={page_size}")
    } else {
        format!("odata.maxpagesize={page_size}")
    };
    r.headers_mut()
        .insert("preference-applied", applied.parse().unwrap());
    r.headers_mut().insert("odata-version", "4.0".parse().unwrap());
    r
}

struct Dyn {
    crm: CrmSandbox,
    fake: Shared,
}

fn at(day: u32, month: u32) -> DateTime<Utc> {
    format!("2026-{month:02}-{day:02}T10:00:00Z").parse().unwrap()
}

fn lead_id(n: u64) -> String {
    format!("49b0be2e-d01c-ed11-b83e-0000{n:08}")
}

impl Dyn {
    fn new(leads: u64) -> Self {
        Self::with(leads, "")
    }

    /// With change tracking on.
    fn tracking(leads: u64) -> Self {
        Self::with(leads, "          change_tracking: true\n")
    }

    /// `extra`: more keys of the `dynamics:` block (10 spaces in).
    fn with(leads: u64, extra: &str) -> Self {
        let fake: Shared = Arc::default();
        let base = serve(
            Router::new()
                .route(&format!("/{TENANT}/oauth2/v2.0/token"), post(token))
                .route("/api/data/v9.2/leads", get(list_leads))
                .with_state(fake.clone()),
        );
        {
            let mut f = fake.lock().unwrap();
            f.base = base.clone();
            for n in 1..=leads {
                f.version += 1;
                let version = f.version;
                f.leads.insert(
                    lead_id(n),
                    DLead {
                        version,
                        modified: at(n as u32, 1),
                        status: 1,
                        fields: [
                            ("firstname", format!("Ada{n}")),
                            ("lastname", "Lovelace".to_string()),
                            ("emailaddress1", format!("ada{n}@contoso.com")),
                            ("telephone1", format!("+1 415 555 04{n:02}")),
                            ("companyname", "Contoso".to_string()),
                            ("address1_country", "United States".to_string()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    },
                );
            }
        }
        let yaml = format!(
            "        dynamics:\n          url: {base}\n          token_url: {base}/{TENANT}/oauth2/v2.0/token\n          \
             client_id: {CLIENT_ID}\n          client_secret: ${{DYN_SECRET}}\n          page_size: 2\n          \
             http:\n            backoff: 20ms\n{extra}"
        );
        Self {
            crm: CrmSandbox::new("d365", &yaml),
            fake,
        }
    }

    fn run(&self) -> Value {
        self.crm.run(&[("DYN_SECRET", SECRET)])
    }

    fn run_with(&self) -> std::process::Output {
        self.crm.run_with(&[("DYN_SECRET", SECRET)])
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut self.fake.lock().unwrap().log)
    }

    fn edit(&self, n: u64, email: &str, status: i64, modified: DateTime<Utc>) {
        let mut f = self.fake.lock().unwrap();
        let l = f.leads.get_mut(&lead_id(n)).unwrap();
        l.fields.insert("emailaddress1".into(), email.into());
        l.status = status;
        l.modified = modified;
        f.version += 1;
        let v = f.version;
        f.leads.get_mut(&lead_id(n)).unwrap().version = v;
    }

    /// The lead is deleted in Dataverse.
    fn delete(&self, n: u64) {
        let mut f = self.fake.lock().unwrap();
        f.leads.remove(&lead_id(n)).expect("a lead to delete");
        f.version += 1;
        let v = f.version;
        f.deleted.push((lead_id(n), v));
    }

    /// Turns `change_tracking` on or off in the pipeline's config.
    fn set_tracking(&self, on: bool) {
        let path = self.crm.path().join("pipeline.yaml");
        let line = "          change_tracking: true\n";
        let yaml = std::fs::read_to_string(&path).unwrap().replace(line, "");
        let yaml = if on {
            yaml.replace(
                "          page_size: 2\n",
                &format!("          page_size: 2\n{line}"),
            )
        } else {
            yaml
        };
        std::fs::write(path, yaml).unwrap();
    }
}

#[test]
fn dynamics_follows_next_links_then_filters_by_modifiedon() {
    let d = Dyn::new(5);
    let first = d.run();
    assert_eq!(first["rows_read"], 5, "{first}");
    assert_eq!(d.log(), ["token", "list", "next", "next"], "5 leads, pages of 2");
    assert_eq!(d.crm.count("SELECT count(*) FROM records"), 5);
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-01-05T10:00:00.000Z"));
    let id2 = lead_id(2);
    assert_eq!(d.crm.value_of("email", &id2), "ada2@contoso.com");
    assert_eq!(d.crm.value_of("company", &id2), "Contoso");
    assert_eq!(d.crm.value_of("country", &id2), "US");
    // statuscode 1 reads as its label "New", not as "1".
    assert_eq!(d.crm.value_of("status", &id2), "new");

    d.edit(2, "ada2.new@contoso.com", 3, at(1, 2));
    let second = d.run();
    assert_eq!(d.log(), ["token", "list-filter"]);
    // The edited lead and lead 5 (modified at the cursor, re-read by the
    // lookback): same record ids.
    assert_eq!(second["rows_read"], 2, "{second}");
    assert_eq!(d.crm.value_of("email", &id2), "ada2.new@contoso.com");
    assert_eq!(d.crm.value_of("status", &id2), "qualified");
    assert_eq!(d.crm.count("SELECT count(*) FROM records"), 5);
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-02-01T10:00:00.000Z"));
}

#[test]
fn dynamics_expired_token_mid_run_gets_a_new_one() {
    let d = Dyn::new(5);
    d.fake.lock().unwrap().expire_after = Some(1);
    let report = d.run();
    assert_eq!(report["rows_read"], 5, "{report}");
    assert_eq!(d.log(), ["token", "list", "401", "token", "next", "next"]);
}

#[test]
fn dynamics_retries_429_after_retry_after_and_a_5xx() {
    let d = Dyn::new(3);
    d.fake
        .lock()
        .unwrap()
        .faults
        .extend([Fault::RateLimited, Fault::ServerError]);
    let started = std::time::Instant::now();
    let report = d.run();
    assert_eq!(report["rows_read"], 3, "{report}");
    assert_eq!(d.log(), ["token", "fault", "fault", "list", "next"]);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
}

#[test]
fn dynamics_no_leads_is_a_quiet_run() {
    let d = Dyn::new(0);
    let report = d.run();
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["rows_read"], 0, "{report}");
    assert_eq!(d.log(), ["token", "list"]);
    assert_eq!(d.crm.cursor(), None);
}

#[test]
fn dynamics_malformed_page_or_foreign_next_link_fail_and_keep_the_cursor() {
    let d = Dyn::new(3);
    d.run();
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-01-03T10:00:00.000Z"));
    d.edit(1, "changed@contoso.com", 2, at(4, 3));
    d.fake.lock().unwrap().faults.push_back(Fault::Malformed);
    let o = d.run_with();
    let all = exited(&o, 1);
    assert!(
        all.contains("dynamics source `d365`") && all.contains("malformed response"),
        "{all}"
    );
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-01-03T10:00:00.000Z"));

    // A nextLink to another host would carry our token there: refused.
    d.edit(2, "changed2@contoso.com", 2, at(5, 3));
    d.fake.lock().unwrap().faults.push_back(Fault::ForeignNextLink);
    d.log();
    let o = d.run_with();
    let all = exited(&o, 1);
    assert!(
        all.contains("another host") && all.contains("contoso.evil.example"),
        "{all}"
    );
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-01-03T10:00:00.000Z"));

    let next = d.run();
    assert_eq!(next["rows_read"], 3, "{next}");
    assert_eq!(d.crm.value_of("email", &lead_id(1)), "changed@contoso.com");
    assert_eq!(d.crm.value_of("status", &lead_id(1)), "contacted");
}

#[test]
fn dynamics_check_ok_and_a_bad_secret_fails_without_leaking_it() {
    let d = Dyn::new(3);
    let o = d.crm.check(&[("DYN_SECRET", SECRET)]);
    let all = exited(&o, 0);
    assert!(
        all.contains("crm/d365 (dynamics): ok") && all.contains("2 record(s)"),
        "{all}"
    );
    assert!(!d.crm.path().join("warehouse").exists(), "check writes nothing");

    let wrong = "dyn-WRONG-secret~zzz";
    let o = d.crm.check(&[("DYN_SECRET", wrong)]);
    let all = exited(&o, 1);
    assert!(all.contains("FAILED") && all.contains("AADSTS7000215"), "{all}");
    assert!(!all.contains(wrong), "secret leaked: {all}");
}

#[test]
fn dynamics_change_tracking_reads_deltas_and_marks_deleted_leads() {
    let d = Dyn::tracking(5);
    let first = d.run();
    assert_eq!(first["rows_read"], 5, "{first}");
    // No $filter/$orderby (the fake refuses them with track-changes).
    assert_eq!(d.log(), ["token", "track", "next", "next"]);
    let cursor: Value = serde_json::from_str(&d.crm.cursor().unwrap()).unwrap();
    let link = cursor["delta_link"].as_str().unwrap().to_string();
    assert!(link.contains("$deltatoken=5%21"), "{link}");
    assert_eq!(cursor["modifiedon"], "2026-01-05T10:00:00.000Z");
    assert_eq!(d.crm.value_of("status", &lead_id(2)), "new");

    d.edit(2, "ada2.new@contoso.com", 3, at(1, 2));
    d.delete(3);
    let second = d.run();
    assert_eq!(d.log(), ["token", "delta"], "one delta page");
    assert_eq!(second["rows_read"], 1, "{second}");
    assert_eq!(second["records_deleted"], 1, "{second}");
    assert_eq!(d.crm.value_of("email", &lead_id(2)), "ada2.new@contoso.com");
    assert_eq!(d.crm.value_of("status", &lead_id(2)), "qualified");
    assert_eq!(
        d.crm.count(&format!(
            "SELECT count(*) FROM records WHERE deleted_at IS NOT NULL AND source_record_id = '{}'",
            lead_id(3)
        )),
        1
    );
    assert_eq!(
        d.crm
            .count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(
        d.crm.count(&format!(
            "SELECT count(*) FROM crm_links WHERE crm_id = '{}' AND deleted_at IS NOT NULL",
            lead_id(3)
        )),
        1
    );
    let cursor: Value = serde_json::from_str(&d.crm.cursor().unwrap()).unwrap();
    assert!(
        cursor["delta_link"]
            .as_str()
            .unwrap()
            .contains("$deltatoken=7%21"),
        "{cursor}"
    );
    assert_eq!(cursor["modifiedon"], "2026-02-01T10:00:00.000Z");
    // The runs table keeps the count.
    assert_eq!(
        d.crm
            .count("SELECT CAST(sum(records_deleted) AS BIGINT) FROM runs WHERE status = 'succeeded'"),
        1
    );

    // Nothing changed: an empty delta, nothing marked twice.
    let third = d.run();
    assert_eq!(d.log(), ["token", "delta"]);
    assert_eq!(third["rows_read"], 0, "{third}");
    assert_eq!(third["records_deleted"], 0, "{third}");
}

#[test]
fn dynamics_expired_delta_token_falls_back_to_a_full_read() {
    let d = Dyn::tracking(3);
    d.run();
    d.log();
    d.edit(1, "ada1.new@contoso.com", 2, at(2, 2));
    // Dataverse forgot the changes the saved token points at.
    {
        let mut f = d.fake.lock().unwrap();
        f.expired_below = f.version + 1;
    }
    let o = d.run_with();
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("delta link was refused") && all.contains("0x80044352"),
        "a warning says why everything is read again: {all}"
    );
    assert_eq!(d.log(), ["token", "expired", "track", "next"]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report[0]["rows_read"], 3, "{report}");
    assert_eq!(d.crm.value_of("email", &lead_id(1)), "ada1.new@contoso.com");
    // The new delta link works again.
    d.fake.lock().unwrap().expired_below = 0;
    d.delete(2);
    let next = d.run();
    assert_eq!(d.log(), ["token", "delta"]);
    assert_eq!(next["records_deleted"], 1, "{next}");
}

#[test]
fn dynamics_switching_modes_keeps_working_from_either_cursor() {
    // A modifiedon cursor, then change tracking: one full read (no
    // $filter: Dataverse refuses it with track-changes).
    let d = Dyn::new(3);
    d.run();
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-01-03T10:00:00.000Z"));
    d.log();
    d.set_tracking(true);
    let r = d.run();
    assert_eq!(d.log(), ["token", "track", "next"]);
    assert_eq!(r["rows_read"], 3, "{r}");
    let cursor: Value = serde_json::from_str(&d.crm.cursor().unwrap()).unwrap();
    assert_eq!(cursor["modifiedon"], "2026-01-03T10:00:00.000Z");

    // Back to modifiedon: the delta cursor's time is the filter.
    d.set_tracking(false);
    d.edit(2, "ada2.new@contoso.com", 1, at(1, 3));
    let r = d.run();
    assert_eq!(d.log(), ["token", "list-filter"]);
    assert_eq!(r["rows_read"], 2, "lead 3 (lookback) and lead 2: {r}");
    assert_eq!(d.crm.cursor().as_deref(), Some("2026-03-01T10:00:00.000Z"));
}

#[test]
fn dynamics_change_tracking_off_on_the_table_fails_clearly() {
    let d = Dyn::tracking(3);
    d.fake.lock().unwrap().tracking_off = true;
    let o = d.run_with();
    let all = exited(&o, 1);
    assert!(
        all.contains("no @odata.deltaLink") && all.contains("Track changes"),
        "{all}"
    );
    assert_eq!(d.crm.cursor(), None, "nothing saved");
}
