//! The HubSpot source against a fake HubSpot (axum on 127.0.0.1:0) that
//! behaves like the reference: `after` paging with `paging` omitted on the
//! last page, search sorted by lastmodifieddate with GTE filters, 401 with
//! HubSpot's error envelope, 429 with `Retry-After`, and `archived=true`
//! listing only archived (deleted) contacts with `archivedAt`. Also the
//! origin columns, `crm_links`, the outbound-link rule (`leadflow crm-link
//! add`) and deletions, through the HubSpot source.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::fake::{CrmSandbox, form, json_response, serve};
use super::{exited, leadflow, text};

const TOKEN: &str = "pat-na1-good-token-1234";

#[derive(Clone, Copy)]
enum Fault {
    /// No fault for this request (to place a later one).
    Pass,
    RateLimited,
    ServerError,
    Malformed,
    /// The bearer token of this request expires now: it and every later
    /// request with it get 401 EXPIRED_AUTHENTICATION.
    ExpireToken,
}

#[derive(Default)]
struct Fake {
    /// id -> properties (all strings, like HubSpot).
    contacts: BTreeMap<u64, BTreeMap<String, String>>,
    /// Archived (deleted) contacts: id -> (properties, archivedAt).
    archived: BTreeMap<u64, (BTreeMap<String, String>, String)>,
    faults: VecDeque<Fault>,
    /// OAuth access tokens the token endpoint handed out, and the expired ones.
    issued: Vec<String>,
    expired: Vec<String>,
    /// The app was uninstalled: no token from the endpoint is accepted.
    revoked_app: bool,
    /// One line per request: "list", "archived", "search", "fault".
    log: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn contact(id: u64, first: &str, email: &str, modified: &str) -> BTreeMap<String, String> {
    [
        ("hs_object_id", id.to_string()),
        ("firstname", first.to_string()),
        ("lastname", "Tester".to_string()),
        ("email", email.to_string()),
        ("phone", format!("+1 415 555 01{id:02}")),
        ("createdate", "2026-01-01T00:00:00.000Z".to_string()),
        ("lastmodifieddate", modified.to_string()),
        ("hs_lead_status", "NEW".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Auth and injected faults, shared by both endpoints.
fn gate(fake: &mut Fake, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let expired = || {
        Some(json_response(
            StatusCode::UNAUTHORIZED,
            json!({"status": "error", "category": "EXPIRED_AUTHENTICATION", "correlationId": "c0ffee",
                   "message": "The OAuth token used to make this call expired 7 second(s) ago."}),
        ))
    };
    if fake.expired.contains(&given) {
        fake.log.push("expired".into());
        return expired();
    }
    if given != TOKEN && (fake.revoked_app || !fake.issued.contains(&given)) {
        return Some(json_response(
            StatusCode::UNAUTHORIZED,
            json!({"status": "error", "category": "INVALID_AUTHENTICATION", "correlationId": "c0ffee",
                   "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication."}),
        ));
    }
    let fault = fake.faults.pop_front()?;
    if let Fault::Pass = fault {
        return None;
    }
    if let Fault::ExpireToken = fault {
        fake.expired.push(given);
        fake.log.push("expired".into());
        return expired();
    }
    fake.log.push("fault".into());
    Some(match fault {
        Fault::Pass | Fault::ExpireToken => unreachable!("handled above"),
        Fault::RateLimited => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "1")
            .header("x-hubspot-ratelimit-secondly-remaining", "0")
            .body(Body::from(
                json!({"status": "error", "message": "You have reached your secondly limit.",
                       "errorType": "RATE_LIMIT", "policyName": "SECONDLY", "correlationId": "c1"})
                .to_string(),
            ))
            .unwrap(),
        Fault::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "message": "internal error", "correlationId": "c2"}),
        ),
        Fault::Malformed => json_response(StatusCode::OK, json!({"results": [{"properties": {"email": 5}}]})),
    })
}

fn object(id: u64, props: &BTreeMap<String, String>, wanted: &[String]) -> Value {
    let properties: serde_json::Map<String, Value> = props
        .iter()
        .filter(|(k, _)| wanted.contains(k) || *k == "hs_object_id")
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({"id": id.to_string(), "properties": properties,
           "createdAt": props["createdate"], "updatedAt": props["lastmodifieddate"], "archived": false})
}

fn page(items: Vec<Value>, offset: usize, limit: usize, total: usize, base: &str) -> Value {
    let mut body = json!({"results": items});
    if offset + limit < total {
        let after = (offset + limit).to_string();
        body["paging"] = json!({"next": {"after": after, "link": format!("{base}?after={after}")}});
    }
    body
}

async fn list(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    // `archived=true` lists only archived records, `false` (default) only live ones.
    let archived = match q.get("archived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"status": "error", "category": "VALIDATION_ERROR",
                       "message": format!("Invalid input for archived: {other}")}),
            );
        }
    };
    fake.log.push(if archived { "archived" } else { "list" }.into());
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    if limit > 100 {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "message": "limit > 100"}),
        );
    }
    let offset: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let wanted: Vec<String> = q
        .get("properties")
        .map(|p| p.split(',').map(String::from).collect())
        .unwrap_or_default();
    if archived {
        let items = fake
            .archived
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(id, (p, at))| {
                let mut o = object(*id, p, &wanted);
                o["archived"] = json!(true);
                o["archivedAt"] = json!(at);
                o
            })
            .collect();
        let total = fake.archived.len();
        return json_response(
            StatusCode::OK,
            page(items, offset, limit, total, "/crm/v3/objects/contacts"),
        );
    }
    let items = fake
        .contacts
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, p)| object(*id, p, &wanted))
        .collect();
    json_response(
        StatusCode::OK,
        page(
            items,
            offset,
            limit,
            fake.contacts.len(),
            "/crm/v3/objects/contacts",
        ),
    )
}

fn millis(iso: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso)
        .unwrap()
        .timestamp_millis()
}

async fn search(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let mut fake = s.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers) {
        return r;
    }
    fake.log.push("search".into());
    let req: Value = serde_json::from_str(&body).unwrap();
    let limit = req["limit"].as_u64().unwrap_or(10) as usize;
    if limit > 200 {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "message": "limit > 200"}),
        );
    }
    let filter = &req["filterGroups"][0]["filters"][0];
    assert_eq!(filter["propertyName"], "lastmodifieddate");
    assert_eq!(filter["operator"], "GTE");
    let from: i64 = filter["value"].as_str().unwrap().parse().unwrap();
    assert_eq!(req["sorts"][0]["direction"], "ASCENDING");
    let wanted: Vec<String> = req["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut hits: Vec<(&u64, &BTreeMap<String, String>)> = fake
        .contacts
        .iter()
        .filter(|(_, p)| millis(&p["lastmodifieddate"]) >= from)
        .collect();
    hits.sort_by_key(|(id, p)| (millis(&p["lastmodifieddate"]), **id));
    let offset: usize = req["after"].as_str().and_then(|a| a.parse().ok()).unwrap_or(0);
    if offset + limit > 10_000 {
        // HubSpot's search cannot page past 10,000 results.
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "category": "VALIDATION_ERROR",
                   "message": "Paging beyond 10000 results is not supported"}),
        );
    }
    let total = hits.len();
    let items = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, p)| object(**id, p, &wanted))
        .collect();
    let mut body = page(items, offset, limit, total, "/crm/v3/objects/contacts/search");
    body["total"] = json!(total);
    json_response(StatusCode::OK, body)
}

/// OAuth v1 token endpoint: refresh-token grant, form-encoded.
async fn token(State(s): State<Shared>, body: String) -> Response {
    let form = form(&body);
    let mut fake = s.lock().unwrap();
    fake.log.push("token".into());
    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("client_id").map(String::as_str) == Some("app-1")
        && form.get("client_secret").map(String::as_str) == Some("client-secret-abc")
        && form.get("refresh_token").map(String::as_str) == Some("refresh-xyz");
    if !ok {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}),
        );
    }
    // A new access token per grant, as HubSpot hands out.
    let access = format!("oauth-access-{}", fake.issued.len() + 1);
    fake.issued.push(access.clone());
    json_response(
        StatusCode::OK,
        json!({"access_token": access, "refresh_token": "refresh-xyz", "expires_in": 1800,
               "token_type": "bearer", "token_use": "access_token", "hub_id": 62515}),
    )
}

struct Crm {
    crm: CrmSandbox,
    fake: Shared,
}

/// A fake HubSpot portal holding contacts 1..=`contacts`; its base URL.
fn portal(contacts: u64) -> (Shared, String) {
    let fake: Shared = Arc::default();
    for id in 1..=contacts {
        let c = contact(
            id,
            &format!("Person{id}"),
            &format!("p{id}@example.com"),
            &format!("2026-01-{id:02}T10:00:00.000Z"),
        );
        fake.lock().unwrap().contacts.insert(id, c);
    }
    let base = serve(
        Router::new()
            .route("/crm/v3/objects/contacts", get(list))
            .route("/crm/v3/objects/contacts/search", post(search))
            .route("/oauth/v1/token", post(token))
            .with_state(fake.clone()),
    );
    (fake, base)
}

impl Crm {
    fn new(contacts: u64) -> Self {
        Self::with_auth(contacts, "token: ${HUBSPOT_TOKEN}")
    }

    /// `auth` is the YAML line(s) of the credentials; `{base}` is replaced.
    fn with_auth(contacts: u64, auth: &str) -> Self {
        let (fake, base) = portal(contacts);
        let auth = auth.replace("{base}", &base);
        let yaml = format!(
            "        hubspot:\n          {auth}\n          base_url: {base}\n          page_size: 2\n          \
             http:\n            backoff: 20ms\n"
        );
        Self {
            crm: CrmSandbox::new("hubspot", &yaml),
            fake,
        }
    }

    fn run_with(&self, token: &str) -> std::process::Output {
        self.crm.run_with(&[("HUBSPOT_TOKEN", token)])
    }

    fn run(&self) -> Value {
        self.crm.run(&[("HUBSPOT_TOKEN", TOKEN)])
    }

    fn count(&self, sql: &str) -> i64 {
        self.crm.count(sql)
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut self.fake.lock().unwrap().log)
    }

    fn cursor(&self) -> String {
        self.crm.cursor().expect("a saved cursor")
    }

    fn email_of(&self, id: &str) -> String {
        self.crm.value_of("email", id)
    }

    /// Archive (delete) a contact in HubSpot at `at`.
    fn archive(&self, id: u64, at: &str) {
        let mut fake = self.fake.lock().unwrap();
        let c = fake.contacts.remove(&id).unwrap();
        fake.archived.insert(id, (c, at.to_string()));
    }

    fn add(&self, id: u64, first: &str, email: &str, phone: &str, modified: &str) {
        let mut c = contact(id, first, email, modified);
        c.insert("phone".into(), phone.into());
        c.insert("lastname".into(), "Other".into());
        self.fake.lock().unwrap().contacts.insert(id, c);
    }

    fn crm_link(&self, crm_id: &str, master: &str) -> std::process::Output {
        leadflow(
            &[
                "crm-link",
                "add",
                &self.crm.sandbox.config(),
                "--pipeline",
                "crm",
                "--source",
                "hubspot",
                "--crm-id",
                crm_id,
                "--master",
                master,
            ],
            &[("HUBSPOT_TOKEN", TOKEN)],
        )
    }

    fn text_of(&self, sql: &str) -> String {
        super::fake::first_text(&self.crm.sandbox.sql(sql))
    }

    fn edit(&self, id: u64, email: &str, modified: &str) {
        let mut fake = self.fake.lock().unwrap();
        let c = fake.contacts.get_mut(&id).unwrap();
        c.insert("email".into(), email.into());
        c.insert("lastmodifieddate".into(), modified.into());
    }
}

#[test]
fn hubspot_lists_all_pages_then_searches_from_the_cursor() {
    let crm = Crm::new(5);
    let first = crm.run();
    assert_eq!(first["rows_read"], 5, "{first}");
    assert_eq!(crm.log(), ["list", "list", "list"], "5 contacts, 2 per page");
    assert_eq!(crm.cursor(), "2026-01-05T10:00:00.000Z");
    assert_eq!(crm.count("SELECT count(*) FROM records"), 5);
    assert_eq!(crm.email_of("3"), "p3@example.com");

    crm.edit(3, "new3@example.com", "2026-02-01T09:00:00.000Z");
    let new = contact(6, "Newbie", "p6@example.com", "2026-02-02T09:00:00.000Z");
    crm.fake.lock().unwrap().contacts.insert(6, new);
    let second = crm.run();
    let log = crm.log();
    assert!(
        log.iter().any(|l| l == "search") && log.iter().all(|l| l == "search" || l == "archived"),
        "{log:?}"
    );
    assert_eq!(
        log.last().map(String::as_str),
        Some("archived"),
        "deletions read after changes"
    );
    // The edited and the new contact, plus contact 5 whose lastmodifieddate
    // is the cursor itself (GTE, minus lookback): re-read, same record id.
    assert_eq!(second["rows_read"], 3, "{second}");
    assert_eq!(second["records_known"], 2, "{second}");
    assert_eq!(crm.email_of("3"), "new3@example.com");
    assert_eq!(crm.email_of("6"), "p6@example.com");
    assert_eq!(crm.count("SELECT count(*) FROM records"), 6);
    assert_eq!(crm.cursor(), "2026-02-02T09:00:00.000Z");
}

#[test]
fn hubspot_retries_429_with_retry_after_and_500() {
    let crm = Crm::new(3);
    crm.fake
        .lock()
        .unwrap()
        .faults
        .extend([Fault::RateLimited, Fault::ServerError]);
    let started = std::time::Instant::now();
    let report = crm.run();
    assert_eq!(report["rows_read"], 3, "{report}");
    assert_eq!(crm.log(), ["fault", "fault", "list", "list"]);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
}

#[test]
fn hubspot_bad_token_fails_with_a_clear_error_and_no_token_text() {
    let crm = Crm::new(2);
    let secret = "pat-na1-WRONG-secret-9876";
    let o = crm.run_with(secret);
    let all = exited(&o, 1);
    assert!(all.contains("hubspot") && all.contains("401"), "{all}");
    assert!(all.contains("credentials"), "{all}");
    assert!(
        !all.contains(secret) && !all.contains("WRONG"),
        "token leaked: {all}"
    );
}

#[test]
fn hubspot_malformed_page_fails_and_keeps_the_cursor() {
    let crm = Crm::new(2);
    crm.run();
    assert_eq!(crm.cursor(), "2026-01-02T10:00:00.000Z");
    crm.edit(1, "changed1@example.com", "2026-03-01T00:00:00.000Z");
    crm.fake.lock().unwrap().faults.push_back(Fault::Malformed);
    let o = crm.run_with(TOKEN);
    let all = exited(&o, 1);
    assert!(all.contains("malformed response"), "{all}");
    assert_eq!(crm.cursor(), "2026-01-02T10:00:00.000Z", "cursor unchanged");
    assert_eq!(crm.email_of("1"), "p1@example.com");

    let next = crm.run();
    assert_eq!(next["status"], "succeeded", "{next}");
    assert_eq!(crm.email_of("1"), "changed1@example.com");
    assert_eq!(crm.cursor(), "2026-03-01T00:00:00.000Z");
}

#[test]
fn hubspot_oauth_refreshes_once_and_reuses_the_token() {
    let crm = Crm::with_auth(
        3,
        "oauth: {client_id: app-1, client_secret: client-secret-abc, refresh_token: refresh-xyz, \
         token_url: \"{base}/oauth/v1/token\"}",
    );
    let report = crm.run();
    assert_eq!(report["rows_read"], 3, "{report}");
    assert_eq!(crm.log(), ["token", "list", "list"]);
}

#[test]
fn hubspot_token_expiring_mid_run_is_refreshed_once_and_the_run_goes_on() {
    let crm = Crm::with_auth(
        5,
        "oauth: {client_id: app-1, client_secret: client-secret-abc, refresh_token: refresh-xyz, \
         token_url: \"{base}/oauth/v1/token\"}",
    );
    // The token dies on the second page.
    crm.fake.lock().unwrap().faults = VecDeque::from([Fault::Pass, Fault::ExpireToken]);
    let report = crm.run();
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["rows_read"], 5, "{report}");
    assert_eq!(crm.log(), ["token", "list", "expired", "token", "list", "list"]);
    assert_eq!(crm.count("SELECT count(*) FROM records"), 5);
}

#[test]
fn hubspot_401_that_is_not_an_expiry_is_not_retried() {
    let crm = Crm::with_auth(
        3,
        "oauth: {client_id: app-1, client_secret: client-secret-abc, refresh_token: refresh-xyz, \
         token_url: \"{base}/oauth/v1/token\"}",
    );
    // Tokens still come from the endpoint, but the API knows none of them.
    crm.fake.lock().unwrap().revoked_app = true;
    let o = crm.crm.run_with(&[]);
    let all = exited(&o, 1);
    assert!(
        all.contains("401") && all.contains("INVALID_AUTHENTICATION"),
        "{all}"
    );
    assert!(!all.contains("oauth-access-"), "no token text: {all}");
    // One token, one request: no refresh loop on a 401 that is not an expiry.
    assert_eq!(crm.log(), ["token"]);
}

#[test]
fn hubspot_config_problems_are_listed_and_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hs.yaml");
    std::fs::write(
        &path,
        "warehouse:\n  uri: ./warehouse\npipelines:\n  - name: crm\n    sources:\n      - name: hs\n        \
         hubspot:\n          token: x\n          oauth: {client_id: a, client_secret: b, refresh_token: c}\n          \
         page_size: 500\n      - name: both\n        files: {path: ./drops}\n        hubspot: {token: y}\n      \
         - name: none\n    dedupe:\n      keys: [phone, email]\n",
    )
    .unwrap();
    let o = leadflow(&["validate", path.to_str().unwrap()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "either `token` or `oauth`",
        "page_size",
        "exactly one source kind",
        "`hubspot:`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let o = leadflow(&["run", path.to_str().unwrap()], &[]);
    exited(&o, 2);
    assert!(!dir.path().join("warehouse").exists());
}

#[test]
fn hubspot_records_carry_their_origin_and_fill_crm_links() {
    let crm = Crm::new(3);
    crm.run();
    assert_eq!(
        crm.count(
            "SELECT count(*) FROM records WHERE origin = 'crm' AND provider = 'hubspot' \
             AND crm_id = source_record_id AND deleted_at IS NULL"
        ),
        3
    );
    // One inbound link per contact, on the master of its record.
    assert_eq!(
        crm.count(
            "SELECT count(*) FROM crm_links l JOIN records r ON r.crm_id = l.crm_id \
             WHERE l.provider = 'hubspot' AND l.crm_object = 'contacts' AND l.direction = 'inbound' \
             AND l.master_id = r.master_id AND l.source = 'hubspot' AND l.pipeline = 'crm' \
             AND l.first_seen_run = l.last_seen_run AND l.deleted_at IS NULL"
        ),
        3
    );
    let first_run = crm.text_of("SELECT first_seen_run FROM crm_links WHERE crm_id = '2'");
    // Seen again: last_seen_run moves, first_seen_run stays.
    crm.edit(2, "p2b@example.com", "2026-02-01T00:00:00.000Z");
    crm.run();
    assert_eq!(crm.count("SELECT count(*) FROM crm_links"), 3);
    assert_eq!(
        crm.text_of("SELECT first_seen_run FROM crm_links WHERE crm_id = '2'"),
        first_run
    );
    assert_ne!(
        crm.text_of("SELECT last_seen_run FROM crm_links WHERE crm_id = '2'"),
        first_run
    );
}

#[test]
fn hubspot_outbound_link_joins_its_master_and_never_makes_a_new_person() {
    let crm = Crm::new(2);
    crm.run();
    assert_eq!(crm.count("SELECT count(*) FROM masters"), 2);
    let master = crm.crm.value_of("master_id", "1");

    // The CLI refuses a master that does not exist, and says which.
    let o = crm.crm_link("900", "m-nobody");
    let all = exited(&o, 3);
    assert!(all.contains("m-nobody"), "{all}");
    // leadflow created contact 900 in HubSpot for master 1 (a push): say so.
    let o = crm.crm_link("900", &master);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("created"),
        "{}",
        text(&o)
    );
    let o = crm.crm_link("900", &master);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unchanged"),
        "{}",
        text(&o)
    );
    // A CRM record belongs to one person: another master is refused.
    let other = crm.crm.value_of("master_id", "2");
    let o = crm.crm_link("900", &other);
    exited(&o, 4);
    assert_eq!(
        crm.count("SELECT count(*) FROM crm_links WHERE direction = 'outbound'"),
        1
    );

    // The CRM user edited it since: nothing matches master 1 by keys or name.
    crm.add(
        900,
        "Someone",
        "someone.else@example.org",
        "+1 212 555 0900",
        "2026-02-01T00:00:00.000Z",
    );
    let run = crm.run();
    assert_eq!(run["outbound_linked"], 1, "{run}");
    assert_eq!(run["masters_new"], 0, "{run}");
    assert_eq!(crm.count("SELECT count(*) FROM masters"), 2, "no new person");
    assert_eq!(crm.crm.value_of("master_id", "900"), master);
    assert_eq!(crm.crm.value_of("match_rule", "900"), "outbound_link");
    assert_eq!(
        crm.count(&format!(
            "SELECT count(*) FROM merges WHERE kind = 'outbound_link' AND master_id = '{master}' \
             AND source_record_id = '900'"
        )),
        1
    );
    assert_eq!(
        crm.count(&format!(
            "SELECT record_count FROM masters WHERE master_id = '{master}'"
        )),
        2
    );
    assert_eq!(
        crm.count(&format!(
            "SELECT count(*) FROM crm_links WHERE crm_id = '900' AND direction = 'outbound' \
             AND master_id = '{master}' AND last_seen_run IS NOT NULL"
        )),
        1
    );

    // Read again (the cursor window): same master, nothing new.
    let before: Vec<i64> = ["masters", "records", "merges", "crm_links"]
        .iter()
        .map(|t| crm.count(&format!("SELECT count(*) FROM {t}")))
        .collect();
    let again = crm.run();
    assert_eq!(again["outbound_linked"], 0, "{again}");
    assert_eq!(again["masters_new"], 0, "{again}");
    let after: Vec<i64> = ["masters", "records", "merges", "crm_links"]
        .iter()
        .map(|t| crm.count(&format!("SELECT count(*) FROM {t}")))
        .collect();
    assert_eq!(before, after);
    assert_eq!(crm.crm.value_of("master_id", "900"), master);
    assert_eq!(
        crm.count(&format!(
            "SELECT record_count FROM masters WHERE master_id = '{master}'"
        )),
        2
    );
}

#[test]
fn hubspot_archived_contact_is_marked_deleted_on_the_next_run() {
    let crm = Crm::new(3);
    crm.run();
    assert_eq!(crm.cursor(), "2026-01-03T10:00:00.000Z");
    // Archived long before the cursor (and never imported): not this run's.
    crm.fake.lock().unwrap().archived.insert(
        77,
        (
            contact(77, "Old", "old@example.com", "2025-01-01T00:00:00.000Z"),
            "2025-06-01T00:00:00.000Z".into(),
        ),
    );
    crm.archive(2, "2026-01-10T08:00:00.000Z");
    let run = crm.run();
    assert_eq!(run["records_deleted"], 1, "{run}");
    assert_eq!(
        crm.count(
            "SELECT count(*) FROM records WHERE source_record_id = '2' \
             AND CAST(deleted_at AS VARCHAR) LIKE '2026-01-10T08:00:00%'"
        ),
        1
    );
    assert_eq!(
        crm.count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(
        crm.count("SELECT count(*) FROM crm_links WHERE crm_id = '2' AND deleted_at IS NOT NULL"),
        1
    );
    // The person and the other records stay.
    assert_eq!(crm.count("SELECT count(*) FROM masters"), 3);
    assert_eq!(crm.count("SELECT count(*) FROM records"), 3);
    // The deletion moved the cursor; the next run reads deletions from there.
    assert_eq!(crm.cursor(), "2026-01-10T08:00:00.000Z");

    let again = crm.run();
    assert_eq!(again["records_deleted"], 0, "already marked: {again}");
    assert_eq!(
        crm.count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(crm.count("SELECT count(*) FROM crm_links"), 3);
}

/// A table as an older release created it: without `columns`.
fn drop_columns(spec: &mut leadflow_sinks::TableSpec, columns: &[&str]) {
    let fields: Vec<_> = spec
        .schema
        .fields()
        .iter()
        .filter(|f| !columns.contains(&f.name().as_str()))
        .cloned()
        .collect();
    spec.schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
}

/// A warehouse an older leadflow wrote: `records` without the origin
/// columns, a `runs` table without `records_deleted` and no `crm_links`.
/// The run adds the columns; old rows read them as null until they are
/// seen again.
#[test]
fn hubspot_run_on_a_warehouse_written_before_origin_columns() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray, new_null_array};
    use arrow::record_batch::RecordBatch;
    use leadflow_sinks::{StagedTable, Warehouse, WarehouseConfig, WriteMode};

    let crm = Crm::new(2);
    let new_cols = ["origin", "provider", "crm_id", "deleted_at"];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let specs: Vec<_> = leadflow::table_specs()
            .into_iter()
            .filter(|s| s.name != "crm_links")
            .map(|mut s| {
                if s.name == "records" {
                    drop_columns(&mut s, &new_cols);
                }
                if s.name == "runs" {
                    drop_columns(&mut s, &["records_deleted"]);
                }
                s
            })
            .collect();
        let old_schema = specs.iter().find(|s| s.name == "records").unwrap().schema.clone();
        let wh = Warehouse::open(&WarehouseConfig::default(), crm.crm.path(), specs)
            .await
            .unwrap();
        // Two old rows: a file record and HubSpot contact 1 (imported before).
        let cols: Vec<ArrayRef> = old_schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "source" => Arc::new(StringArray::from(vec!["drops", "hubspot"])),
                    "source_record_id" => Arc::new(StringArray::from(vec!["row-1", "1"])),
                    "master_id" => Arc::new(StringArray::from(vec!["m-old-file", "m-old-hubspot"])),
                    _ => new_null_array(f.data_type(), 2),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(old_schema.clone(), cols).unwrap();
        let table = StagedTable {
            table: "records".into(),
            mode: WriteMode::Append,
            batches: vec![batch],
        };
        wh.apply(&table, "old-release", 1).await.unwrap();
        // ... and the master of the HubSpot one.
        let masters = leadflow_transforms::schema::MASTERS_SCHEMA.clone();
        let cols: Vec<ArrayRef> = masters
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "master_id" => Arc::new(StringArray::from(vec!["m-old-hubspot"])),
                    "record_count" => Arc::new(arrow::array::Int64Array::from(vec![1])),
                    _ => new_null_array(f.data_type(), 1),
                }
            })
            .collect();
        let table = StagedTable {
            table: "masters".into(),
            mode: WriteMode::Append,
            batches: vec![RecordBatch::try_new(masters, cols).unwrap()],
        };
        wh.apply(&table, "old-release", 1).await.unwrap();
    });
    assert!(!crm.crm.path().join("warehouse/crm_links").exists());

    let run = crm.run();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["records_known"], 1, "contact 1 was imported before: {run}");
    assert_eq!(crm.count("SELECT count(*) FROM records"), 3);
    assert_eq!(
        crm.count("SELECT count(*) FROM records WHERE origin IS NULL AND source = 'drops'"),
        1,
        "an old row not seen again reads the new columns as null"
    );
    assert_eq!(crm.crm.value_of("origin", "1"), "crm");
    assert_eq!(crm.crm.value_of("master_id", "1"), "m-old-hubspot");
    assert_eq!(crm.count("SELECT count(*) FROM crm_links"), 2);
    // `runs` gained `records_deleted` too.
    assert_eq!(
        crm.count("SELECT count(*) FROM runs WHERE records_deleted = 0"),
        1
    );
}

/// Two HubSpot portals number their contacts independently: contact 1 of
/// the EU portal and contact 1 of the US portal are two records, two
/// people, two `crm_links` rows; an outbound link made for one portal's
/// contact 900 does not capture the other portal's contact 900.
#[test]
fn two_accounts_of_one_crm_keep_their_record_ids_apart() {
    let (eu, eu_base) = portal(2);
    let (us, us_base) = portal(0);
    let put = |fake: &Shared, id: u64, first: &str, email: &str, phone: &str, modified: &str| {
        let mut c = contact(id, first, email, modified);
        c.insert("phone".into(), phone.into());
        c.insert("lastname".into(), "Other".into());
        fake.lock().unwrap().contacts.insert(id, c);
    };
    put(
        &us,
        1,
        "Zed",
        "zed@us.example",
        "+1 212 555 0101",
        "2026-01-05T10:00:00.000Z",
    );
    let source = |base: &str| {
        format!(
            "        hubspot:\n          token: ${{HUBSPOT_TOKEN}}\n          base_url: {base}\n          \
             page_size: 2\n          http:\n            backoff: 20ms\n"
        )
    };
    let yaml = format!(
        "        account: \"eu-4431\"\n{}      - name: hs_us\n        account: \"us-9910\"\n{}",
        source(&eu_base),
        source(&us_base)
    );
    let crm = Crm {
        crm: CrmSandbox::new("hs_eu", &yaml),
        fake: eu.clone(),
    };
    let o = leadflow(
        &["validate", &crm.crm.sandbox.config()],
        &[("HUBSPOT_TOKEN", TOKEN)],
    );
    assert!(o.status.success(), "{}", text(&o));

    let run = crm.run();
    assert_eq!(run["masters_new"], 3, "{run}");
    assert_eq!(crm.count("SELECT count(*) FROM crm_links"), 3);
    assert_eq!(
        crm.count(
            "SELECT count(DISTINCT master_id) FROM crm_links WHERE crm_id = '1' \
             AND account IN ('eu-4431', 'us-9910')"
        ),
        2,
        "contact 1 of each portal is its own person"
    );
    let eu_master = crm.text_of("SELECT master_id FROM crm_links WHERE crm_id = '1' AND account = 'eu-4431'");

    // leadflow created contact 900 in the EU portal for the EU person.
    let o = leadflow(
        &[
            "crm-link",
            "add",
            &crm.crm.sandbox.config(),
            "--pipeline",
            "crm",
            "--source",
            "hs_eu",
            "--crm-id",
            "900",
            "--master",
            &eu_master,
        ],
        &[("HUBSPOT_TOKEN", TOKEN)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hubspot (account eu-4431) contacts 900"),
        "{}",
        text(&o)
    );
    // Both portals now hold a contact 900: only the EU one is leadflow's.
    put(
        &eu,
        900,
        "Someone",
        "someone@eu.example",
        "+1 212 555 0900",
        "2026-02-01T00:00:00.000Z",
    );
    put(
        &us,
        900,
        "Yolanda",
        "yolanda@us.example",
        "+1 646 555 0199",
        "2026-02-01T00:00:00.000Z",
    );
    let run = crm.run();
    assert_eq!(run["outbound_linked"], 1, "{run}");
    assert_eq!(run["masters_new"], 1, "the US contact 900 is a new person: {run}");
    assert_eq!(
        crm.text_of("SELECT master_id FROM records WHERE source = 'hs_eu' AND source_record_id = '900'"),
        eu_master
    );
    assert_ne!(
        crm.text_of("SELECT master_id FROM records WHERE source = 'hs_us' AND source_record_id = '900'"),
        eu_master
    );
    assert_eq!(
        crm.count(
            "SELECT count(*) FROM crm_links WHERE crm_id = '900' AND \
             ((account = 'eu-4431' AND direction = 'outbound') OR (account = 'us-9910' AND direction = 'inbound'))"
        ),
        2
    );
    // `show` lists a master's links with their account.
    let o = leadflow(
        &["show", &crm.crm.sandbox.config(), "--id", &eu_master],
        &[("HUBSPOT_TOKEN", TOKEN)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("eu-4431"),
        "{}",
        text(&o)
    );
}

/// Two sources reading the same CRM object of the same account would give
/// one CRM record two sources; `account` on a files source means nothing.
/// Both are config errors, reported together before any work.
#[test]
fn an_account_clash_or_an_account_on_files_is_a_config_error() {
    let source = "        hubspot:\n          token: x\n          base_url: http://127.0.0.1:9\n";
    let yaml = format!(
        "{source}      - name: again\n{source}      - name: drops\n        account: a1\n        files:\n          path: ./drops\n"
    );
    let crm = CrmSandbox::new("hs", &yaml);
    let o = leadflow(&["validate", &crm.sandbox.config()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "sources `hs` and `again` both read hubspot contacts of the same account",
        "pipelines.0.sources.2.account",
        "a `files` source has none",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// `crm_links` written before it had an `account` column: the run adds the
/// column, finds the old rows (null account = the source's unnamed
/// account) and updates them in place instead of adding second rows.
#[test]
fn crm_links_written_before_accounts_keep_their_rows() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray, new_null_array};
    use arrow::record_batch::RecordBatch;
    use leadflow_sinks::{StagedTable, TableSpec, Warehouse, WarehouseConfig, WriteMode};

    let crm = Crm::new(3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let specs: Vec<TableSpec> = leadflow::table_specs()
            .into_iter()
            .map(|mut s| {
                if s.name == "crm_links" {
                    drop_columns(&mut s, &["account"]);
                    s.keys = &["provider", "crm_object", "crm_id"];
                }
                s
            })
            .collect();
        let old = specs
            .iter()
            .find(|s| s.name == "crm_links")
            .unwrap()
            .schema
            .clone();
        let wh = Warehouse::open(&WarehouseConfig::default(), crm.crm.path(), specs)
            .await
            .unwrap();
        let ids = ["1", "2", "3"];
        let cols: Vec<ArrayRef> = old
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "provider" => Arc::new(StringArray::from(vec!["hubspot"; 3])),
                    "crm_object" => Arc::new(StringArray::from(vec!["contacts"; 3])),
                    "crm_id" => Arc::new(StringArray::from(ids.to_vec())),
                    "master_id" => Arc::new(StringArray::from(vec!["m-old"; 3])),
                    "direction" => Arc::new(StringArray::from(vec!["inbound"; 3])),
                    "first_seen_run" => Arc::new(StringArray::from(vec!["old-run"; 3])),
                    _ => new_null_array(f.data_type(), 3),
                }
            })
            .collect();
        let table = StagedTable {
            table: "crm_links".into(),
            mode: WriteMode::Append,
            batches: vec![RecordBatch::try_new(old.clone(), cols).unwrap()],
        };
        wh.apply(&table, "old-release", 1).await.unwrap();
    });

    let run = crm.run();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        crm.count("SELECT count(*) FROM crm_links"),
        3,
        "no second row per contact"
    );
    assert_eq!(
        crm.count(
            "SELECT count(*) FROM crm_links WHERE account IS NULL AND first_seen_run = 'old-run' \
             AND last_seen_run IS NOT NULL AND master_id <> 'm-old'"
        ),
        3,
        "the old rows, found and updated"
    );
    // And again, now that the table has the column in its newer files.
    crm.edit(2, "p2b@example.com", "2026-02-01T00:00:00.000Z");
    crm.run();
    assert_eq!(crm.count("SELECT count(*) FROM crm_links"), 3);
}
