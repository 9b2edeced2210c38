//! The Zoho CRM source against a fake Zoho that behaves like the reference:
//! an accounts server whose token errors come back as HTTP 200 with an
//! `error` field; `api_domain` in the token response (a different host
//! than the accounts server); `Zoho-oauthtoken` (a `Bearer` header is
//! refused); `fields` required; `page` up to 10, then `page_token`; 204 when
//! nothing matches, 304 when nothing changed since `If-Modified-Since`;
//! 401 INVALID_TOKEN; 429 TOO_MANY_REQUESTS with `Retry-After`;
//! `Leads/deleted?type=all|recycle|permanent` with `If-Modified-Since`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};

use super::exited;
use super::fake::{CrmSandbox, form, host, json_response, other_host, serve, token_of};

const CLIENT_ID: &str = "1000.LEADFLOWTESTCLIENT";
const SECRET: &str = "zoho-client-secret-789";
const REFRESH: &str = "1000.refresh.abcdef";

#[derive(Clone, Copy)]
enum Fault {
    RateLimited,
    ServerError,
    Malformed,
}

struct ZLead {
    modified: DateTime<Utc>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fake {
    base: String,
    leads: BTreeMap<String, ZLead>,
    /// Deleted leads: id -> (deleted_time, `recycle` or `permanent`).
    deleted: BTreeMap<String, (DateTime<Utc>, &'static str)>,
    tokens: HashSet<String>,
    issued: u32,
    expire_after: Option<u32>,
    faults: VecDeque<Fault>,
    /// One entry per request: token, list, list-since, page-N, page-token,
    /// 401, fault, 204, 304, wrong-host, deleted, deleted-304.
    log: Vec<String>,
    /// `expires_in` of issued tokens (Zoho's is 3600); a token older than
    /// that is refused with 401 INVALID_TOKEN, as Zoho does.
    lifetime: Option<std::time::Duration>,
    /// When each token was issued.
    issued_at: HashMap<String, std::time::Instant>,
    /// How long each listing page takes.
    page_delay: Option<std::time::Duration>,
}

type Shared = Arc<Mutex<Fake>>;

fn error(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    json_response(
        status,
        json!({"code": code, "details": details, "message": message, "status": "error"}),
    )
}

fn empty(status: StatusCode) -> Response {
    Response::builder().status(status).body(Body::empty()).unwrap()
}

/// Zoho passes the grant as query parameters (a form body works too).
async fn token(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>, body: String) -> Response {
    let mut f = form(&body);
    f.extend(q);
    let mut fake = s.lock().unwrap();
    fake.log.push("token".into());
    let get = |k: &str| f.get(k).map(String::as_str);
    if get("grant_type") != Some("refresh_token") || get("refresh_token") != Some(REFRESH) {
        return json_response(StatusCode::OK, json!({"error": "invalid_code"}));
    }
    if get("client_id") != Some(CLIENT_ID) || get("client_secret") != Some(SECRET) {
        return json_response(StatusCode::OK, json!({"error": "invalid_client"}));
    }
    fake.issued += 1;
    let access = format!("1000.{:032x}.{}", fake.issued, fake.issued);
    fake.tokens.insert(access.clone());
    fake.issued_at.insert(access.clone(), std::time::Instant::now());
    let expires_in = fake.lifetime.map_or(3600, |l| l.as_secs());
    json_response(
        StatusCode::OK,
        json!({"access_token": access, "scope": "ZohoCRM.modules.ALL", "api_domain": other_host(&fake.base),
               "token_type": "Bearer", "expires_in": expires_in}),
    )
}

fn ist(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
        .to_rfc3339()
}

/// The API host named in the token response, and a live `Zoho-oauthtoken`.
fn gate(fake: &mut Fake, headers: &HeaderMap) -> Option<Response> {
    if host(headers) != other_host(&fake.base).trim_start_matches("http://") {
        fake.log.push("wrong-host".into());
        return Some(error(
            StatusCode::BAD_REQUEST,
            "INVALID_URL_PATTERN",
            "Please check if the URL trying to access is a correct one",
            json!({}),
        ));
    }
    match fake.expire_after {
        Some(0) => {
            fake.tokens.clear();
            fake.expire_after = None;
        }
        Some(n) => fake.expire_after = Some(n - 1),
        None => {}
    }
    let live = |t: &String| {
        fake.tokens.contains(t)
            && fake
                .lifetime
                .is_none_or(|l| fake.issued_at.get(t).is_some_and(|at| at.elapsed() < l))
    };
    if !token_of(headers, "Zoho-oauthtoken").is_some_and(|t| live(&t)) {
        fake.log.push("401".into());
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_TOKEN",
            "invalid oauth token",
            json!({}),
        ));
    }
    None
}

/// `GET /crm/v8/Leads/deleted?type=&page=&per_page=` (+ If-Modified-Since):
/// deleted records with `deleted_time`; 304 when none since.
async fn deleted_leads(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    let kind = q.get("type").map(String::as_str).unwrap_or("all");
    if !["all", "recycle", "permanent"].contains(&kind) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "invalid data",
            json!({"param_name": "type"}),
        );
    }
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(200);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if per_page > 200 || page == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "invalid data",
            json!({"param_name": "per_page"}),
        );
    }
    let since = headers.get("if-modified-since").map(|v| {
        DateTime::parse_from_rfc3339(v.to_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    });
    let hits: Vec<(String, DateTime<Utc>, &str)> = fake
        .deleted
        .iter()
        .filter(|(_, (t, k))| since.is_none_or(|s| *t > s) && (kind == "all" || *k == kind))
        .map(|(id, (t, k))| (id.clone(), *t, *k))
        .collect();
    if hits.is_empty() {
        fake.log.push("deleted-304".into());
        return empty(if since.is_some() {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::NO_CONTENT
        });
    }
    fake.log.push("deleted".into());
    let data: Vec<Value> = hits
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(id, t, k)| {
            let by = json!({"name": "Patricia Boyle", "id": "410888000000086001"});
            json!({"deleted_by": by, "id": id, "display_name": "John", "type": k,
                   "created_by": by, "deleted_time": ist(*t)})
        })
        .collect();
    let more = page * per_page < hits.len();
    json_response(
        StatusCode::OK,
        json!({"data": data, "info": {"per_page": per_page, "count": data.len(), "page": page, "more_records": more}}),
    )
}

async fn list_leads(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let delay = s.lock().unwrap().page_delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    if let Some(fault) = fake.faults.pop_front() {
        fake.log.push("fault".into());
        return match fault {
            Fault::RateLimited => {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "Too many concurrent requests",
                    json!({}),
                );
                r.headers_mut().insert("retry-after", "1".parse().unwrap());
                r
            }
            Fault::ServerError => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal Server Error",
                json!({}),
            ),
            Fault::Malformed => json_response(
                StatusCode::OK,
                json!({"data": [{"Last_Name": "No id"}], "info": {"more_records": false, "count": 1, "page": 1, "per_page": 200}}),
            ),
        };
    }
    let Some(fields) = q.get("fields") else {
        return error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "fields"}),
        );
    };
    let fields: Vec<String> = fields.split(',').map(String::from).collect();
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(200);
    if per_page > 200 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "invalid data",
            json!({"param_name": "per_page"}),
        );
    }
    assert_eq!(q.get("sort_by").map(String::as_str), Some("Modified_Time"));
    assert_eq!(q.get("sort_order").map(String::as_str), Some("asc"));
    let since = headers.get("if-modified-since").map(|v| {
        DateTime::parse_from_rfc3339(v.to_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    });
    let (offset, page) = match (q.get("page_token"), q.get("page")) {
        (Some(t), _) => {
            let Some(offset) = t.strip_prefix("ptk-").and_then(|o| o.parse::<usize>().ok()) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "EXPIRED_VALUE",
                    "the page token is expired or invalid",
                    json!({"param_name": "page_token"}),
                );
            };
            fake.log.push("page-token".into());
            (offset, None)
        }
        (None, p) => {
            let page: usize = p.and_then(|p| p.parse().ok()).unwrap_or(1);
            if page > 10 || page * per_page > 2000 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    "You can only get upto 2000 records using page param. Use page_token param instead",
                    json!({"param_name": "page"}),
                );
            }
            let entry = match (page, since.is_some()) {
                (1, false) => "list".to_string(),
                (1, true) => "list-since".to_string(),
                (n, _) => format!("page-{n}"),
            };
            fake.log.push(entry);
            ((page - 1) * per_page, Some(page))
        }
    };
    let mut hits: Vec<(&String, &ZLead)> = fake
        .leads
        .iter()
        .filter(|(_, l)| since.is_none_or(|t| l.modified > t))
        .collect();
    hits.sort_by_key(|(id, l)| (l.modified, (*id).clone()));
    if hits.is_empty() {
        let status = if since.is_some() {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::NO_CONTENT
        };
        fake.log.push(status.as_u16().to_string());
        return empty(status);
    }
    let data: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(per_page)
        .map(|(id, l)| {
            let mut r = serde_json::Map::new();
            r.insert("id".into(), json!(id));
            for f in &fields {
                let v = match f.as_str() {
                    "Modified_Time" => json!(ist(l.modified)),
                    "Owner" => json!({"name": "Patricia Boyle", "id": "4150868000000225013", "email": "patricia.boyle@example.com"}),
                    other => l.fields.get(other).map(|v| json!(v)).unwrap_or(Value::Null),
                };
                r.insert(f.clone(), v);
            }
            Value::Object(r)
        })
        .collect();
    let more = offset + per_page < hits.len();
    let body = json!({"data": data, "info": {
        "call": false, "per_page": per_page, "count": data.len(), "sort_by": "Modified_Time", "sort_order": "asc",
        "page": page.unwrap_or(0), "more_records": more, "email": false, "previous_page_token": null,
        "next_page_token": if more { json!(format!("ptk-{}", offset + per_page)) } else { Value::Null },
        "page_token_expiry": "2026-12-31T15:08:14+05:30"}});
    json_response(StatusCode::OK, body)
}

struct Zoho {
    crm: CrmSandbox,
    fake: Shared,
}

fn at(day: u32, month: u32) -> DateTime<Utc> {
    format!("2026-{month:02}-{day:02}T10:00:00Z").parse().unwrap()
}

fn lead_id(n: u64) -> String {
    format!("41508680000{n:08}")
}

impl Zoho {
    fn new(leads: u64) -> Self {
        let fake: Shared = Arc::default();
        let base = serve(
            Router::new()
                .route("/oauth/v2/token", post(token))
                .route("/crm/v8/Leads", get(list_leads))
                .route("/crm/v8/Leads/deleted", get(deleted_leads))
                .with_state(fake.clone()),
        );
        {
            let mut f = fake.lock().unwrap();
            f.base = base.clone();
            for n in 1..=leads {
                f.leads.insert(
                    lead_id(n),
                    ZLead {
                        modified: at(n as u32, 1),
                        fields: [
                            ("First_Name", format!("John{n}")),
                            ("Last_Name", "Doe".to_string()),
                            ("Email", format!("john{n}@zylker.com")),
                            ("Phone", format!("+1 415 555 03{n:02}")),
                            ("Company", "Zylker Corp".to_string()),
                            ("Lead_Status", "Contacted".to_string()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    },
                );
            }
        }
        // The accounts server of the data centre is replaced by the fake;
        // the API host comes from the token response.
        let yaml = format!(
            "        zoho:\n          client_id: {CLIENT_ID}\n          client_secret: ${{ZOHO_SECRET}}\n          \
             refresh_token: ${{ZOHO_REFRESH}}\n          data_centre: eu\n          accounts_url: {base}\n          \
             page_size: 2\n          lookback: 0s\n          http:\n            backoff: 20ms\n"
        );
        Self {
            crm: CrmSandbox::new("zoho", &yaml),
            fake,
        }
    }

    fn env(&self) -> [(&'static str, &'static str); 2] {
        [("ZOHO_SECRET", SECRET), ("ZOHO_REFRESH", REFRESH)]
    }

    fn run(&self) -> Value {
        self.crm.run(&self.env())
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut self.fake.lock().unwrap().log)
    }

    fn edit(&self, n: u64, email: &str, modified: DateTime<Utc>) {
        let mut f = self.fake.lock().unwrap();
        let l = f.leads.get_mut(&lead_id(n)).unwrap();
        l.fields.insert("Email".into(), email.into());
        l.modified = modified;
    }
}

#[test]
fn zoho_pages_past_the_page_limit_with_page_token_then_reads_changes() {
    let z = Zoho::new(25);
    let first = z.run();
    assert_eq!(first["rows_read"], 25, "{first}");
    let log = z.log();
    let expected: Vec<String> = ["token", "list"]
        .into_iter()
        .map(String::from)
        .chain((2..=10).map(|p| format!("page-{p}")))
        .chain(std::iter::repeat_n("page-token".to_string(), 3))
        .collect();
    assert_eq!(log, expected, "pages 1..=10 of 2, then page_token");
    assert_eq!(z.crm.count("SELECT count(*) FROM records"), 25);
    // Modified_Time comes in IST; the cursor is UTC.
    assert_eq!(z.crm.cursor().as_deref(), Some("2026-01-25T10:00:00.000Z"));
    let id7 = lead_id(7);
    assert_eq!(z.crm.value_of("email", &id7), "john7@zylker.com");
    assert_eq!(z.crm.value_of("first_name", &id7), "John7");
    assert_eq!(z.crm.value_of("owner", &id7), "Patricia Boyle");
    assert_eq!(z.crm.value_of("status", &id7), "contacted");
    assert_eq!(z.crm.value_of("phone_raw", &id7), "+1 415 555 0307");

    z.edit(7, "john7.new@zylker.com", at(1, 2));
    let second = z.run();
    assert_eq!(z.log(), ["token", "list-since", "deleted-304"]);
    assert_eq!(second["rows_read"], 1, "{second}");
    assert_eq!(z.crm.value_of("email", &id7), "john7.new@zylker.com");
    assert_eq!(z.crm.count("SELECT count(*) FROM records"), 25);
    assert_eq!(z.crm.cursor().as_deref(), Some("2026-02-01T10:00:00.000Z"));

    // Nothing changed since: 304, a quiet run, the cursor stays.
    let third = z.run();
    assert_eq!(third["rows_read"], 0, "{third}");
    assert_eq!(z.log(), ["token", "list-since", "304", "deleted-304"]);
    assert_eq!(z.crm.cursor().as_deref(), Some("2026-02-01T10:00:00.000Z"));
}

#[test]
fn zoho_invalid_token_mid_run_gets_a_new_token_and_goes_on() {
    let z = Zoho::new(5);
    z.fake.lock().unwrap().expire_after = Some(1);
    let report = z.run();
    assert_eq!(report["rows_read"], 5, "{report}");
    assert_eq!(z.log(), ["token", "list", "401", "token", "page-2", "page-3"]);
}

#[test]
fn zoho_token_expiring_mid_run_is_renewed_before_it_runs_out() {
    // Tokens live 2 s (the source renews at half the lifetime for short
    // ones); pages take 0.6 s: the listing outlives the first token. No
    // 401 ever: the cached token is replaced before it expires.
    let z = Zoho::new(8);
    {
        let mut f = z.fake.lock().unwrap();
        f.lifetime = Some(std::time::Duration::from_secs(2));
        f.page_delay = Some(std::time::Duration::from_millis(600));
    }
    let started = std::time::Instant::now();
    let report = z.run();
    assert_eq!(report["rows_read"], 8, "{report}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(2400));
    let log = z.log();
    assert!(!log.contains(&"401".to_string()), "never refused: {log:?}");
    let tokens = log.iter().filter(|l| *l == "token").count();
    assert!(tokens >= 2, "a second token during the listing: {log:?}");
    // The new token came between pages, not only at the start.
    let pages: Vec<&String> = log.iter().filter(|l| *l != "token").collect();
    assert_eq!(pages, ["list", "page-2", "page-3", "page-4"], "{log:?}");
    assert_ne!(log[..2], ["token", "token"], "{log:?}");
    assert_eq!(log[0], "token");
    assert!(
        log[2..].contains(&"token".to_string()),
        "renewed after the first page: {log:?}"
    );
}

#[test]
fn zoho_retries_429_after_retry_after_and_a_5xx() {
    let z = Zoho::new(3);
    z.fake
        .lock()
        .unwrap()
        .faults
        .extend([Fault::RateLimited, Fault::ServerError]);
    let started = std::time::Instant::now();
    let report = z.run();
    assert_eq!(report["rows_read"], 3, "{report}");
    assert_eq!(z.log(), ["token", "fault", "fault", "list", "page-2"]);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
}

#[test]
fn zoho_empty_module_answers_204_and_the_run_succeeds() {
    let z = Zoho::new(0);
    let report = z.run();
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["rows_read"], 0, "{report}");
    assert_eq!(z.log(), ["token", "list", "204"]);
    assert_eq!(z.crm.cursor(), None);
}

#[test]
fn zoho_malformed_page_names_the_source_and_keeps_the_cursor() {
    let z = Zoho::new(2);
    z.run();
    z.edit(1, "changed@zylker.com", at(3, 3));
    z.fake.lock().unwrap().faults.push_back(Fault::Malformed);
    let o = z.crm.run_with(&z.env());
    let all = exited(&o, 1);
    assert!(
        all.contains("zoho source `zoho`") && all.contains("malformed response") && all.contains("no id"),
        "{all}"
    );
    assert_eq!(z.crm.cursor().as_deref(), Some("2026-01-02T10:00:00.000Z"));
    let next = z.run();
    assert_eq!(next["rows_read"], 1, "{next}");
    assert_eq!(z.crm.value_of("email", &lead_id(1)), "changed@zylker.com");
}

#[test]
fn zoho_token_error_in_an_http_200_fails_the_check_without_the_secret() {
    let z = Zoho::new(3);
    let o = z.crm.check(&z.env());
    let all = exited(&o, 0);
    assert!(
        all.contains("crm/zoho (zoho): ok") && all.contains("2 record(s)"),
        "{all}"
    );
    assert_eq!(z.log(), ["token", "list"]);

    let wrong = "zoho-WRONG-secret-000";
    let o = z.crm.check(&[("ZOHO_SECRET", wrong), ("ZOHO_REFRESH", REFRESH)]);
    let all = exited(&o, 1);
    assert!(all.contains("FAILED") && all.contains("invalid_client"), "{all}");
    assert!(
        !all.contains(wrong) && !all.contains(REFRESH),
        "secret leaked: {all}"
    );
    let o = z
        .crm
        .run_with(&[("ZOHO_SECRET", wrong), ("ZOHO_REFRESH", REFRESH)]);
    let all = exited(&o, 1);
    assert!(
        all.contains("token request") && all.contains("invalid_client"),
        "{all}"
    );
    assert!(!all.contains(wrong), "secret leaked: {all}");
}

#[test]
fn zoho_deleted_leads_are_marked_from_the_recycle_bin_and_for_good() {
    let z = Zoho::new(4);
    z.run();
    assert_eq!(
        z.crm.count(
            "SELECT count(*) FROM records WHERE origin = 'crm' AND provider = 'zoho' AND crm_id = source_record_id"
        ),
        4
    );
    z.log();
    {
        let mut f = z.fake.lock().unwrap();
        f.leads.remove(&lead_id(2));
        f.deleted.insert(lead_id(2), (at(1, 2), "recycle"));
        f.leads.remove(&lead_id(3));
        f.deleted.insert(lead_id(3), (at(2, 2), "permanent"));
        // Deleted before the cursor: an earlier run's business.
        f.deleted.insert(lead_id(99), (at(1, 1), "permanent"));
    }
    let run = z.run();
    assert_eq!(run["records_deleted"], 2, "{run}");
    assert_eq!(z.log(), ["token", "list-since", "304", "deleted"]);
    assert_eq!(
        z.crm.count(&format!(
            "SELECT count(*) FROM records WHERE deleted_at IS NOT NULL AND source_record_id IN ('{}', '{}')",
            lead_id(2),
            lead_id(3)
        )),
        2
    );
    assert_eq!(
        z.crm
            .count("SELECT count(*) FROM crm_links WHERE crm_object = 'Leads' AND deleted_at IS NOT NULL"),
        2
    );
    assert_eq!(z.crm.count("SELECT count(*) FROM masters"), 4);
    // The newest deletion is the new cursor: IST times, stored as UTC.
    assert_eq!(z.crm.cursor().as_deref(), Some("2026-02-02T10:00:00.000Z"));

    let again = z.run();
    assert_eq!(again["records_deleted"], 0, "{again}");
    assert_eq!(z.log(), ["token", "list-since", "304", "deleted-304"]);
    assert_eq!(
        z.crm
            .count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        2
    );
}
