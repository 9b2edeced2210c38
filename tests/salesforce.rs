//! The Salesforce source against a fake Salesforce that behaves like the
//! reference: a token endpoint (refresh token, or JWT bearer verified with
//! the public key) answering with `instance_url` and no `expires_in`; data
//! calls only on that instance host; SOQL on Lead with a `SystemModstamp`
//! filter; `done` + relative `nextRecordsUrl` paging (pages smaller than
//! asked for, as Salesforce may); error arrays; 401 INVALID_SESSION_ID;
//! 403 REQUEST_LIMIT_EXCEEDED; `Sforce-Limit-Info` on every answer;
//! `sobjects/Lead/deleted/?start=&end=` (at most 15 days back).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::fake::{CrmSandbox, form, host, json_response, other_host, serve, token_of};
use super::{exited, repo};

const CLIENT_ID: &str = "3MVG9-leadflow-test-app";
const SECRET: &str = "sf-consumer-secret-123";
const REFRESH: &str = "5Aep861-refresh-token-456";
const USERNAME: &str = "integration@leadflow.test";
const API: &str = "/services/data/v62.0";

#[derive(Clone, Copy)]
enum Fault {
    LimitExceeded,
    ServerError,
    Malformed,
}

struct Lead {
    modstamp: DateTime<Utc>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fake {
    /// The login host; the token names the instance host (`localhost`).
    base: String,
    leads: BTreeMap<String, Lead>,
    /// Deleted leads: id -> deletedDate.
    deleted: BTreeMap<String, DateTime<Utc>>,
    tokens: HashSet<String>,
    issued: u32,
    /// Revoke every token when this many more data requests came in.
    expire_after: Option<u32>,
    /// Salesforce may return fewer records per page than asked for.
    page_cap: usize,
    faults: VecDeque<Fault>,
    /// Query locators: id -> (lead ids of the query, fields, page size).
    locators: HashMap<String, (Vec<String>, Vec<String>, usize)>,
    /// One entry per request: token, token-jwt, query, query-where, more,
    /// 401, fault, wrong-host, deleted.
    log: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn lead_id(n: u64) -> String {
    format!("00Q5g00000{n:08}")
}

fn sf_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = json_response(status, json!([{"message": message, "errorCode": code}]));
    r.headers_mut()
        .insert("sforce-limit-info", "api-usage=18/5000".parse().unwrap());
    r
}

fn ok(body: Value) -> Response {
    let mut r = json_response(StatusCode::OK, body);
    r.headers_mut()
        .insert("sforce-limit-info", "api-usage=19/5000".parse().unwrap());
    r
}

async fn token(State(s): State<Shared>, body: String) -> Response {
    let f = form(&body);
    let mut fake = s.lock().unwrap();
    let get = |k: &str| f.get(k).map(String::as_str);
    let ok = match get("grant_type") {
        Some("refresh_token") => {
            fake.log.push("token".into());
            get("client_id") == Some(CLIENT_ID)
                && get("refresh_token") == Some(REFRESH)
                && get("client_secret").is_none_or(|s| s == SECRET)
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            fake.log.push("token-jwt".into());
            verify_assertion(get("assertion").unwrap_or(""), &fake.base)
        }
        _ => false,
    };
    if !ok {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}),
        );
    }
    fake.issued += 1;
    let access = format!("00Dx0000000BV7z!AR8AQ.session-{}", fake.issued);
    fake.tokens.insert(access.clone());
    // No expires_in: the client learns of expiry from a 401.
    json_response(
        StatusCode::OK,
        json!({"access_token": access, "instance_url": other_host(&fake.base),
               "id": "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P",
               "token_type": "Bearer", "issued_at": "1278448832702",
               "signature": "0CmxinZir53Yex7nE0TD+zMpvIWYGb/bdJh6XfOH6EQ=", "scope": "api refresh_token"}),
    )
}

/// RS256 signature against the fixture public key, and the claims
/// Salesforce checks: iss = consumer key, sub = username, aud = login URL,
/// exp in the future.
fn verify_assertion(assertion: &str, login_url: &str) -> bool {
    let public = std::fs::read(repo().join("tests/fixtures/jwt-test-key.pub.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[login_url]);
    v.set_issuer(&[CLIENT_ID]);
    v.sub = Some(USERNAME.to_string());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    // Validation checks the claims itself; their values are not needed here.
    jsonwebtoken::decode::<Value>(assertion, &key, &v).is_ok()
}

/// Host, token expiry, bearer token and injected faults of data calls.
fn gate(fake: &mut Fake, headers: &HeaderMap) -> Option<Response> {
    if host(headers) != other_host(&fake.base).trim_start_matches("http://") {
        fake.log.push("wrong-host".into());
        return Some(errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
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
    if !token_of(headers, "Bearer").is_some_and(|t| fake.tokens.contains(&t)) {
        fake.log.push("401".into());
        return Some(errors(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        ));
    }
    let fault = fake.faults.pop_front()?;
    fake.log.push("fault".into());
    Some(match fault {
        Fault::LimitExceeded => errors(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ),
        Fault::ServerError => errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 1234-5678",
        ),
        Fault::Malformed => ok(json!({"totalSize": 1, "done": true, "records": [{"FirstName": "No Id"}]})),
    })
}

fn page(fake: &mut Fake, ids: Vec<String>, fields: Vec<String>, size: usize, offset: usize) -> Response {
    let records: Vec<Value> = ids
        .iter()
        .skip(offset)
        .take(size)
        .map(|id| {
            let lead = &fake.leads[id];
            let mut r = serde_json::Map::new();
            r.insert(
                "attributes".into(),
                json!({"type": "Lead", "url": format!("{API}/sobjects/Lead/{id}")}),
            );
            for f in &fields {
                let v = match f.as_str() {
                    "Id" => Value::String(id.clone()),
                    "SystemModstamp" => Value::String(sf_time(lead.modstamp)),
                    other => lead
                        .fields
                        .get(other)
                        .map(|v| Value::String(v.clone()))
                        .unwrap_or(Value::Null),
                };
                r.insert(f.clone(), v);
            }
            Value::Object(r)
        })
        .collect();
    let total = ids.len();
    let done = offset + size >= total;
    let mut body = json!({"totalSize": total, "done": done, "records": records});
    if !done {
        let locator = format!("01gRO0000016PIA{}", fake.locators.len());
        body["nextRecordsUrl"] = json!(format!("{API}/query/{locator}-{}", offset + size));
        fake.locators.insert(locator, (ids, fields, size));
    }
    ok(body)
}

async fn query(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    let soql = q.get("q").cloned().unwrap_or_default();
    let re = regex::Regex::new(
        r"^SELECT (.+) FROM Lead(?: WHERE SystemModstamp (>=|>) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ))? ORDER BY SystemModstamp, Id$",
    )
    .unwrap();
    let Some(c) = re.captures(&soql) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            &format!("unexpected token in: {soql}"),
        );
    };
    let fields: Vec<String> = c[1].split(", ").map(String::from).collect();
    let since = c.get(3).map(|t| t.as_str().parse::<DateTime<Utc>>().unwrap());
    let inclusive = c.get(2).is_some_and(|o| o.as_str() == ">=");
    fake.log
        .push(if since.is_some() { "query-where" } else { "query" }.into());
    let mut hits: Vec<(&String, &Lead)> = fake
        .leads
        .iter()
        .filter(|(_, l)| match since {
            Some(t) if inclusive => l.modstamp >= t,
            Some(t) => l.modstamp > t,
            None => true,
        })
        .collect();
    hits.sort_by_key(|(id, l)| (l.modstamp, (*id).clone()));
    let ids: Vec<String> = hits.into_iter().map(|(id, _)| id.clone()).collect();
    let asked: usize = headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("batchSize="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let size = asked.min(fake.page_cap);
    page(&mut fake, ids, fields, size, 0)
}

async fn more(State(s): State<Shared>, headers: HeaderMap, Path(locator): Path<String>) -> Response {
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    fake.log.push("more".into());
    let parsed = locator
        .rsplit_once('-')
        .and_then(|(l, o)| Some((l.to_string(), o.parse::<usize>().ok()?)));
    let Some((ids, fields, size, offset)) = parsed.and_then(|(l, o)| {
        let (ids, fields, size) = fake.locators.get(&l)?.clone();
        Some((ids, fields, size, o))
    }) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        );
    };
    page(&mut fake, ids, fields, size, offset)
}

/// `GET /sobjects/Lead/deleted/?start=&end=`: ISO 8601 with offsets, start
/// at most 15 days back (else INVALID_REPLICATION_DATE), end after start.
async fn deleted(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    fake.log.push("deleted".into());
    let parse = |k: &str| {
        q.get(k)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let (Some(start), Some(end)) = (parse("start"), parse("end")) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_DATE_FORMAT",
            "start and end must be ISO 8601 dates",
        );
    };
    let now = Utc::now();
    if start < now - chrono::Duration::days(15) {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "startDate must be within the last 15 days",
        );
    }
    if end <= start {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "endDate must be after startDate",
        );
    }
    let hits: Vec<Value> = fake
        .deleted
        .iter()
        .filter(|(_, t)| **t >= start && **t <= end)
        .map(|(id, t)| json!({"id": id, "deletedDate": sf_time(*t)}))
        .collect();
    ok(json!({"deletedRecords": hits,
              "earliestDateAvailable": sf_time(now - chrono::Duration::days(15)),
              "latestDateCovered": sf_time(end)}))
}

struct Sf {
    crm: CrmSandbox,
    fake: Shared,
}

fn at(day: u32, month: u32) -> DateTime<Utc> {
    format!("2026-{month:02}-{day:02}T10:00:00Z").parse().unwrap()
}

impl Sf {
    /// `leads` leads (modified on January 1st, 2nd, ...), pages of 2.
    fn new(leads: u64) -> Self {
        Self::with_auth(
            leads,
            "client_secret: ${SF_SECRET}\n          refresh_token: ${SF_REFRESH}",
        )
    }

    fn with_auth(leads: u64, auth: &str) -> Self {
        let fake: Shared = Arc::default();
        let base = serve(
            Router::new()
                .route("/services/oauth2/token", post(token))
                .route(&format!("{API}/query"), get(query))
                .route(&format!("{API}/query/{{locator}}"), get(more))
                .route(&format!("{API}/sobjects/Lead/deleted/"), get(deleted))
                .with_state(fake.clone()),
        );
        {
            let mut f = fake.lock().unwrap();
            f.base = base.clone();
            f.page_cap = 2;
            for n in 1..=leads {
                f.leads.insert(
                    lead_id(n),
                    Lead {
                        modstamp: at(n as u32, 1),
                        fields: [
                            ("FirstName", format!("Ada{n}")),
                            ("LastName", "Lovelace".to_string()),
                            ("Email", format!("ada{n}@example.com")),
                            ("Phone", format!("+1 415 555 02{n:02}")),
                            ("Company", format!("Analytical Engines {n}")),
                            ("Status", "Open - Not Contacted".to_string()),
                            ("LeadSource", "Web".to_string()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    },
                );
            }
        }
        let yaml = format!(
            "        salesforce:\n          client_id: {CLIENT_ID}\n          {auth}\n          login_url: {base}\n          \
             page_size: 200\n          http:\n            backoff: 20ms\n"
        );
        Self {
            crm: CrmSandbox::new("sf", &yaml),
            fake,
        }
    }

    fn env(&self) -> [(&'static str, &'static str); 2] {
        [("SF_SECRET", SECRET), ("SF_REFRESH", REFRESH)]
    }

    fn run(&self) -> Value {
        self.crm.run(&self.env())
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut self.fake.lock().unwrap().log)
    }

    /// Delete lead `n` in Salesforce at `at`.
    fn delete(&self, n: u64, at: DateTime<Utc>) {
        let mut f = self.fake.lock().unwrap();
        f.leads.remove(&lead_id(n)).unwrap();
        f.deleted.insert(lead_id(n), at);
    }

    fn edit(&self, n: u64, email: &str, modstamp: DateTime<Utc>) {
        let mut f = self.fake.lock().unwrap();
        let l = f.leads.get_mut(&lead_id(n)).unwrap();
        l.fields.insert("Email".into(), email.into());
        l.modstamp = modstamp;
    }
}

#[test]
fn salesforce_pages_through_all_leads_then_reads_only_changes() {
    let sf = Sf::new(5);
    let first = sf.run();
    assert_eq!(first["rows_read"], 5, "{first}");
    assert_eq!(
        sf.log(),
        ["token", "query", "more", "more"],
        "5 leads, pages of 2"
    );
    assert_eq!(sf.crm.cursor().as_deref(), Some("2026-01-05T10:00:00.000Z"));
    assert_eq!(sf.crm.count("SELECT count(*) FROM records"), 5);
    let id3 = lead_id(3);
    assert_eq!(sf.crm.value_of("email", &id3), "ada3@example.com");
    assert_eq!(sf.crm.value_of("company", &id3), "Analytical Engines 3");
    assert_eq!(sf.crm.value_of("first_name", &id3), "Ada3");
    // LeadSource has no lead field: kept as an extra.
    assert!(sf.crm.value_of("extras", &id3).contains("LeadSource"));

    sf.edit(3, "ada.new@example.com", at(1, 2));
    sf.fake.lock().unwrap().leads.insert(
        lead_id(6),
        Lead {
            modstamp: at(2, 2),
            fields: [
                ("LastName", "Newcomer"),
                ("Email", "new6@example.com"),
                ("MobilePhone", "+1 415 555 0299"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        },
    );
    let second = sf.run();
    let log = sf.log();
    assert_eq!(log[0], "token", "a new process gets a new token: {log:?}");
    assert_eq!(log[1], "query-where", "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("deleted"), "{log:?}");
    // The edited and the new lead, plus lead 5 whose SystemModstamp is the
    // cursor itself (>=, minus lookback): same record id, no duplicate.
    assert_eq!(second["rows_read"], 3, "{second}");
    assert_eq!(sf.crm.value_of("email", &id3), "ada.new@example.com");
    assert_eq!(sf.crm.value_of("email", &lead_id(6)), "new6@example.com");
    // No Phone: the MobilePhone default fills in.
    assert_eq!(sf.crm.value_of("phone_raw", &lead_id(6)), "+1 415 555 0299");
    assert_eq!(sf.crm.count("SELECT count(*) FROM records"), 6);
    assert_eq!(sf.crm.cursor().as_deref(), Some("2026-02-02T10:00:00.000Z"));
}

#[test]
fn salesforce_expired_session_gets_one_new_token_and_the_run_goes_on() {
    let sf = Sf::new(5);
    sf.fake.lock().unwrap().expire_after = Some(1);
    let report = sf.run();
    assert_eq!(report["rows_read"], 5, "{report}");
    assert_eq!(
        sf.log(),
        ["token", "query", "401", "token", "more", "more"],
        "the session dies after the first page"
    );
    assert_eq!(sf.crm.count("SELECT count(*) FROM records"), 5);
}

#[test]
fn salesforce_request_limit_ends_the_run_and_the_next_run_resumes() {
    let sf = Sf::new(2);
    sf.run();
    sf.log();
    let cursor = sf.crm.cursor();
    sf.edit(1, "changed1@example.com", at(1, 3));
    sf.fake.lock().unwrap().faults.push_back(Fault::LimitExceeded);
    let o = sf.crm.run_with(&sf.env());
    let all = exited(&o, 1);
    assert!(
        all.contains("REQUEST_LIMIT_EXCEEDED") && all.contains("request limit is used up"),
        "{all}"
    );
    assert!(all.contains("`sf`"), "names the source: {all}");
    assert_eq!(sf.log(), ["token", "fault"], "no retry against a daily limit");
    assert_eq!(sf.crm.cursor(), cursor, "cursor unchanged");
    assert_eq!(sf.crm.value_of("email", &lead_id(1)), "ada1@example.com");

    let next = sf.run();
    assert_eq!(next["status"], "succeeded", "{next}");
    assert_eq!(sf.crm.value_of("email", &lead_id(1)), "changed1@example.com");
    assert_eq!(sf.crm.cursor().as_deref(), Some("2026-03-01T10:00:00.000Z"));
}

#[test]
fn salesforce_retries_a_5xx_and_an_empty_org_is_a_quiet_run() {
    let sf = Sf::new(0);
    sf.fake.lock().unwrap().faults.push_back(Fault::ServerError);
    let report = sf.run();
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["rows_read"], 0, "{report}");
    assert_eq!(sf.log(), ["token", "fault", "query"]);
    assert_eq!(sf.crm.cursor(), None, "nothing seen, no cursor");
}

#[test]
fn salesforce_malformed_page_names_the_source_and_keeps_the_cursor() {
    let sf = Sf::new(2);
    sf.run();
    assert_eq!(sf.crm.cursor().as_deref(), Some("2026-01-02T10:00:00.000Z"));
    sf.edit(2, "changed2@example.com", at(5, 3));
    sf.fake.lock().unwrap().faults.push_back(Fault::Malformed);
    let o = sf.crm.run_with(&sf.env());
    let all = exited(&o, 1);
    assert!(
        all.contains("malformed response") && all.contains("salesforce source `sf`") && all.contains("no Id"),
        "{all}"
    );
    assert_eq!(sf.crm.cursor().as_deref(), Some("2026-01-02T10:00:00.000Z"));
    let next = sf.run();
    assert_eq!(next["rows_read"], 1, "{next}");
    assert_eq!(sf.crm.value_of("email", &lead_id(2)), "changed2@example.com");
}

#[test]
fn salesforce_jwt_bearer_assertion_is_verified_with_the_public_key() {
    let key = repo().join("tests/fixtures/jwt-test-key.pem");
    let sf = Sf::with_auth(
        3,
        &format!(
            "username: {USERNAME}\n          private_key_file: {}",
            key.display()
        ),
    );
    let report = sf.run();
    assert_eq!(report["rows_read"], 3, "{report}");
    assert_eq!(sf.log(), ["token-jwt", "query", "more"]);

    // The endpoint really checks the claims: another user is refused.
    let wrong = Sf::with_auth(
        1,
        &format!(
            "username: someone.else@leadflow.test\n          private_key_file: {}",
            key.display()
        ),
    );
    let o = wrong.crm.run_with(&[]);
    let all = exited(&o, 1);
    assert!(all.contains("invalid_grant"), "{all}");
    assert!(!all.contains("BEGIN PRIVATE KEY"), "{all}");

    // A key the connected app does not know: the signature check refuses it.
    let other_key = Sf::with_auth(
        1,
        &format!(
            "username: {USERNAME}\n          private_key_file: {}",
            repo().join("tests/fixtures/jwt-other-key.pem").display()
        ),
    );
    let o = other_key.crm.run_with(&[]);
    let all = exited(&o, 1);
    assert!(all.contains("invalid_grant"), "{all}");
    assert_eq!(other_key.log(), ["token-jwt"]);

    // `jwt_audience` replaces the login URL as `aud` (this fake wants its own).
    let other_aud = Sf::with_auth(
        1,
        &format!(
            "username: {USERNAME}\n          private_key_file: {}\n          jwt_audience: https://login.salesforce.com",
            key.display()
        ),
    );
    let o = other_aud.crm.run_with(&[]);
    exited(&o, 1);
    assert_eq!(other_aud.log(), ["token-jwt"]);
}

#[test]
fn salesforce_check_tests_the_connection_and_writes_nothing() {
    let sf = Sf::new(3);
    let o = sf.crm.check(&sf.env());
    let all = exited(&o, 0);
    assert!(all.contains("crm/sf (salesforce): ok"), "{all}");
    assert!(all.contains("2 record(s)"), "one page of 2: {all}");
    assert_eq!(sf.log(), ["token", "query"]);
    assert!(!sf.crm.path().join("warehouse").exists(), "check writes nothing");

    let wrong = "5Aep861-WRONG-refresh-999";
    let o = sf.crm.check(&[("SF_SECRET", SECRET), ("SF_REFRESH", wrong)]);
    let all = exited(&o, 1);
    assert!(all.contains("FAILED") && all.contains("invalid_grant"), "{all}");
    assert!(
        !all.contains(wrong) && !all.contains(SECRET),
        "secret leaked: {all}"
    );
}

#[test]
fn salesforce_deleted_lead_is_marked_and_its_person_stays() {
    let sf = Sf::new(3);
    sf.run();
    assert_eq!(
        sf.crm.count(
            "SELECT count(*) FROM records WHERE origin = 'crm' AND provider = 'salesforce' \
             AND crm_id = source_record_id"
        ),
        3
    );
    assert_eq!(
        sf.crm
            .count("SELECT count(*) FROM crm_links WHERE crm_object = 'Lead' AND direction = 'inbound'"),
        3
    );
    sf.log();
    // Deleted an hour ago; the cursor (January) is older than the 15 days
    // Salesforce keeps: the run asks from the oldest day it may.
    let when = Utc::now() - chrono::Duration::hours(1);
    sf.delete(2, when);
    let run = sf.run();
    assert_eq!(run["records_deleted"], 1, "{run}");
    assert_eq!(sf.log(), ["token", "query-where", "deleted"]);
    let id2 = lead_id(2);
    assert_eq!(
        sf.crm.count(&format!(
            "SELECT count(*) FROM records WHERE source_record_id = '{id2}' AND deleted_at IS NOT NULL"
        )),
        1
    );
    assert_eq!(
        sf.crm.count(&format!(
            "SELECT count(*) FROM crm_links WHERE crm_id = '{id2}' AND deleted_at IS NOT NULL"
        )),
        1
    );
    assert_eq!(sf.crm.count("SELECT count(*) FROM masters"), 3);
    assert_eq!(
        sf.crm
            .count("SELECT count(*) FROM records WHERE deleted_at IS NULL"),
        2
    );

    // Read again: already marked, nothing changes.
    let again = sf.run();
    assert_eq!(again["records_deleted"], 0, "{again}");
    assert_eq!(
        sf.crm
            .count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        1
    );
}
