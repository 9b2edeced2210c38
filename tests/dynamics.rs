//! The Dynamics 365 / Dataverse source against a fake that behaves like
//! the reference: an Azure AD v2 token endpoint (client credentials, scope
//! `<org>/.default`, AADSTS errors); OData v4 headers; `Prefer:
//! odata.maxpagesize` answered with `Preference-Applied` and an absolute
//! `@odata.nextLink` carrying `$skiptoken`; `$filter=modifiedon gt ...`;
//! `$skip` refused; option sets as numbers with formatted-value annotations
//! when asked for; 401 with `WWW-Authenticate`; 429 with `Retry-After`.

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
use super::text;

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
    /// One entry per request: token, list, list-filter, next, 401, fault.
    log: Vec<String>,
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
    if q.get("$orderby").map(String::as_str) != Some("modifiedon asc") {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            "expected $orderby=modifiedon asc",
        );
    }
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
    let offset: usize = match q.get("$skiptoken") {
        Some(t) => {
            fake.log.push("next".into());
            let re = regex::Regex::new(r#"offset="(\d+)""#).unwrap();
            re.captures(t).unwrap()[1].parse().unwrap()
        }
        None => {
            fake.log
                .push(if since.is_some() { "list-filter" } else { "list" }.into());
            0
        }
    };
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let page_size: usize = regex::Regex::new(r"odata\.maxpagesize=(\d+)")
        .unwrap()
        .captures(&prefer)
        .map(|c| c[1].parse::<usize>().unwrap().min(5000))
        .unwrap_or(5000);
    let annotate = prefer.contains("OData.Community.Display.V1.FormattedValue")
        || prefer.contains("include-annotations=\"*\"");
    let mut hits: Vec<(&String, &DLead)> = fake
        .leads
        .iter()
        .filter(|(_, l)| since.is_none_or(|t| l.modified > t))
        .collect();
    hits.sort_by_key(|(id, l)| (l.modified, (*id).clone()));
    let value: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|(id, l)| {
            let mut r = serde_json::Map::new();
            r.insert("@odata.etag".into(), json!("W/\"72201545\""));
            for f in &select {
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
        })
        .collect();
    let mut body = json!({
        "@odata.context": format!("{}/api/data/v9.2/$metadata#leads({})", fake.base, select.join(",")),
        "value": value,
    });
    if offset + page_size < hits.len() {
        let mut query: Vec<String> = ["$select", "$orderby", "$filter"]
            .iter()
            .filter_map(|k| q.get(*k).map(|v| format!("{k}={}", v.replace(' ', "%20"))))
            .collect();
        let cookie = format!(
            "<cookie pagenumber=\"{}\" offset=\"{}\" />",
            offset / page_size + 2,
            offset + page_size
        );
        query.push(format!(
            "$skiptoken={}",
            url::form_urlencoded::byte_serialize(cookie.as_bytes()).collect::<String>()
        ));
        let host = if matches!(fault, Some(Fault::ForeignNextLink)) {
            fake.log.push("fault".into());
            "https://contoso.evil.example".to_string()
        } else {
            fake.base.clone()
        };
        body["@odata.nextLink"] = json!(format!("{host}/api/data/v9.2/leads?{}", query.join("&")));
    }
    let mut r = json_response(StatusCode::OK, body);
    r.headers_mut().insert(
        "preference-applied",
        format!("odata.maxpagesize={page_size}").parse().unwrap(),
    );
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
                f.leads.insert(
                    lead_id(n),
                    DLead {
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
             http:\n            backoff: 20ms\n"
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
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
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
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
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
    let all = text(&o);
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(
        all.contains("crm/d365 (dynamics): ok") && all.contains("2 record(s)"),
        "{all}"
    );
    assert!(!d.crm.path().join("warehouse").exists(), "check writes nothing");

    let wrong = "dyn-WRONG-secret~zzz";
    let o = d.crm.check(&[("DYN_SECRET", wrong)]);
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("FAILED") && all.contains("AADSTS7000215"), "{all}");
    assert!(!all.contains(wrong), "secret leaked: {all}");
}
