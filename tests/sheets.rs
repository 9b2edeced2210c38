//! The Google Sheets source against a fake Google (axum on 127.0.0.1:0)
//! that behaves like the reference: a token endpoint verifying the RS256
//! service-account JWT (iss, aud == token_uri, scope; `sub` sent as null)
//! against the fixture public key; `values.get` with the range in the path
//! (percent-decoded, `alt=json` ignored), trailing empty cells and rows
//! trimmed, ragged rows, `values` left out of an empty range; Google's
//! error envelope: 400 INVALID_ARGUMENT for an unknown tab, 401
//! UNAUTHENTICATED for a revoked token, 429 RESOURCE_EXHAUSTED, 503.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::fake::{CrmSandbox, form, json_response, serve, token_of};
use super::{exited, repo, text};

const SPREADSHEET: &str = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms";
const CLIENT_EMAIL: &str = "leadflow-etl@leadflow-test.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets.readonly";

#[derive(Clone, Copy)]
enum Fault {
    /// 429 RESOURCE_EXHAUSTED, with `Retry-After: 1` or none.
    RateLimited {
        retry_after: bool,
    },
    ServerError,
    /// 200 whose `values` is not a list of rows.
    Malformed,
}

#[derive(Default)]
struct Fake {
    base: String,
    /// Tabs in order (the first is the default one); cells as shown.
    tabs: Vec<(String, Vec<Vec<String>>)>,
    tokens: HashSet<String>,
    issued: u32,
    /// Revoke every token when this many more data requests came in.
    expire_after: Option<u32>,
    faults: VecDeque<Fault>,
    /// Assertions the token endpoint accepted (to check none is printed).
    assertions: Vec<String>,
    /// Answers of the next token requests instead of a token: `503` (Google's
    /// JSON error envelope, which yup-oauth2 takes for an answer without a
    /// token), `503-html` (a front end's error page) or `echo` (a 400 whose
    /// description quotes the request, assertion included); `ok` answers
    /// as usual (to fault a later request).
    token_faults: VecDeque<&'static str>,
    /// One line per request: `token`, `token-rejected`, `get <range>`,
    /// `401`, `429`, `503`, `malformed`.
    log: Vec<String>,
    /// When each data request came in.
    gets: Vec<std::time::Instant>,
}

type Shared = Arc<Mutex<Fake>>;

fn google_error(status: StatusCode, canonical: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"code": status.as_u16(), "message": message, "status": canonical,
                         "errors": [{"message": message, "domain": "global", "reason": "badRequest"}]}}),
    )
}

async fn token(State(s): State<Shared>, body: String) -> Response {
    let f = form(&body);
    let mut fake = s.lock().unwrap();
    let assertion = f.get("assertion").cloned().unwrap_or_default();
    match fake.token_faults.pop_front() {
        Some("503") => {
            fake.log.push("token-503".into());
            return google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
            );
        }
        Some("503-html") => {
            fake.log.push("token-503".into());
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "<html><b>503.</b> That's an error.</html>",
            )
                .into_response();
        }
        Some("ok") | None => {}
        Some(_) => {
            fake.log.push("token-echo".into());
            fake.assertions.push(assertion);
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": format!("echo: {body}")}),
            );
        }
    }
    let grant_ok =
        f.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:jwt-bearer");
    if !grant_ok || !verify_assertion(&assertion, &format!("{}/token", fake.base)) {
        fake.log.push("token-rejected".into());
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
        );
    }
    fake.log.push("token".into());
    fake.assertions.push(assertion);
    fake.issued += 1;
    let access = format!("ya29.a0AfB_fake-access-token-{}", fake.issued);
    fake.tokens.insert(access.clone());
    json_response(
        StatusCode::OK,
        json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}),
    )
}

/// RS256 against the fixture public key; iss = the key's client_email,
/// aud = the token endpoint itself, the read-only Sheets scope, exp in the
/// future (at most an hour); `sub` may be null.
fn verify_assertion(assertion: &str, token_uri: &str) -> bool {
    let public = std::fs::read(repo().join("tests/fixtures/jwt-test-key.pub.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
    // yup-oauth2 pads its base64url segments (Google accepts that, the
    // jsonwebtoken decoder does not), so the signature is checked over the
    // segments as sent and the claims are read from the unpadded token.
    let Some((message, signature)) = assertion.rsplit_once('.') else {
        return false;
    };
    let signed = jsonwebtoken::crypto::verify(
        signature.trim_end_matches('='),
        message.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::RS256,
    );
    if !matches!(signed, Ok(true)) {
        eprintln!("fake token endpoint: bad signature: {signed:?}");
        return false;
    }
    let unpadded = assertion
        .split('.')
        .map(|p| p.trim_end_matches('='))
        .collect::<Vec<_>>()
        .join(".");
    let Ok(header) = jsonwebtoken::decode_header(&unpadded) else {
        return false;
    };
    let Ok(c) = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&unpadded) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    let exp = c["exp"].as_i64().unwrap_or(0);
    let ok = header.alg == jsonwebtoken::Algorithm::RS256
        && c["iss"] == CLIENT_EMAIL
        && c["aud"] == token_uri
        && c["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == SCOPE))
        && (c["sub"].is_null() || c["sub"].is_string())
        && exp > now
        && exp <= now + 3600
        && c["iat"].as_i64().is_some_and(|t| t <= now + 5);
    if !ok {
        eprintln!("fake token endpoint: claims refused: {c}");
    }
    ok
}

/// Column letters -> 0-based index (`A` -> 0, `AA` -> 26).
fn col_index(letters: &str) -> usize {
    letters.bytes().fold(0usize, |n, b| {
        n * 26 + (b.to_ascii_uppercase() - b'A' + 1) as usize
    }) - 1
}

fn col_letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// `A5` / `B` / `12` -> (column, row).
fn cell(r: &str) -> (Option<usize>, Option<usize>) {
    let r = r.replace('$', "");
    let letters: String = r.chars().take_while(char::is_ascii_alphabetic).collect();
    let digits = &r[letters.len()..];
    (
        (!letters.is_empty()).then(|| col_index(&letters)),
        digits.parse::<usize>().ok(),
    )
}

fn is_a1(r: &str) -> bool {
    let re = regex::Regex::new(r"^\$?[A-Za-z]{0,3}\$?[0-9]*(:\$?[A-Za-z]{0,3}\$?[0-9]*)?$").unwrap();
    !r.is_empty() && r.chars().any(|c| c.is_ascii_alphanumeric()) && re.is_match(r)
}

fn unquote(tab: &str) -> String {
    match tab.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(t) => t.replace("''", "'"),
        None => tab.to_string(),
    }
}

async fn values(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((id, range)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let mut fake = s.lock().unwrap();
    fake.log.push(format!("get {range}"));
    fake.gets.push(std::time::Instant::now());
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
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or \
             other valid authentication credential.",
        );
    }
    if let Some(fault) = fake.faults.pop_front() {
        return match fault {
            Fault::RateLimited { retry_after } => {
                fake.log.push("429".into());
                let mut r = google_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per \
                     user' of service 'sheets.googleapis.com' for consumer 'project_number:1234'.",
                );
                if retry_after {
                    r.headers_mut().insert("retry-after", "1".parse().unwrap());
                }
                r
            }
            Fault::ServerError => {
                fake.log.push("503".into());
                google_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "The service is currently unavailable.",
                )
            }
            Fault::Malformed => {
                fake.log.push("malformed".into());
                json_response(
                    StatusCode::OK,
                    json!({"range": "Leads!A1:Z1000", "majorDimension": "ROWS", "values": "not rows"}),
                )
            }
        };
    }
    if id != SPREADSHEET {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
        );
    }
    // Render options the source must ask for; `alt` is ignored.
    let asked = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if asked("valueRenderOption").is_some_and(|v| v != "FORMATTED_VALUE") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "unexpected render option",
        );
    }
    let (tab, cells) = match range.rsplit_once('!') {
        Some((t, c)) => (unquote(t), c.to_string()),
        None if is_a1(&range) => (fake.tabs[0].0.clone(), range.clone()),
        None => (unquote(&range), String::new()),
    };
    let Some((tab, rows)) = fake.tabs.iter().find(|(t, _)| *t == tab).cloned() else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("Unable to parse range: {range}"),
        );
    };
    let (start, end) = cells.split_once(':').unwrap_or((&cells, &cells));
    let ((c0, r0), (c1, r1)) = if cells.is_empty() {
        ((None, None), (None, None))
    } else {
        (cell(start), cell(end))
    };
    let grid_rows = rows.len().max(1000);
    let width = rows.iter().map(Vec::len).max().unwrap_or(0).max(26);
    let (c0, c1) = (c0.unwrap_or(0), c1.unwrap_or(width - 1));
    let (r0, r1) = (r0.unwrap_or(1), r1.unwrap_or(grid_rows));
    let mut out: Vec<Vec<String>> = (r0..=r1)
        .map(|r| {
            let row = rows.get(r - 1).cloned().unwrap_or_default();
            let mut cells: Vec<String> = row.into_iter().skip(c0).take(c1 + 1 - c0).collect();
            while cells.last().is_some_and(|c| c.is_empty()) {
                cells.pop();
            }
            cells
        })
        .collect();
    while out.last().is_some_and(Vec::is_empty) {
        out.pop();
    }
    let shown_tab = if tab.contains(' ') {
        format!("'{tab}'")
    } else {
        tab
    };
    let echoed = format!("{shown_tab}!{}{r0}:{}{r1}", col_letters(c0), col_letters(c1));
    let mut body = json!({"range": echoed, "majorDimension": "ROWS"});
    if !out.is_empty() {
        body["values"] = json!(out);
    }
    json_response(StatusCode::OK, body)
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// The leads tab: a title row, the header on row 2, a blank row, a ragged
/// row (no phone, trailing cells left out as Google does).
fn leads_tab() -> Vec<Vec<String>> {
    vec![
        row(&["Leads from the spring fair"]),
        row(&[
            "Lead ID",
            "First Name",
            "Last Name",
            "Email",
            "Phone",
            "Company Name",
        ]),
        row(&[
            "L-1",
            "Ada",
            "Lovelace",
            "ada@example.com",
            "+1 415 555 0101",
            "Engines",
        ]),
        row(&[
            "L-2",
            "Grace",
            "Hopper",
            "grace@example.com",
            "+1 415 555 0102",
            "Navy",
        ]),
        row(&[]),
        row(&[
            "L-3",
            "Alan",
            "Turing",
            "alan@example.com",
            "+1 415 555 0103",
            "Bletchley",
        ]),
        row(&["L-4", "Edsger", "Dijkstra", "edsger@example.com"]),
    ]
}

fn key_json(token_uri: &str) -> String {
    let pem = std::fs::read_to_string(repo().join("tests/fixtures/jwt-test-key.pem")).unwrap();
    json!({"type": "service_account", "project_id": "leadflow-test", "private_key_id": "abc123",
           "private_key": pem, "client_email": CLIENT_EMAIL, "client_id": "1234567890",
           "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri})
    .to_string()
}

/// A distinctive line of the fixture private key.
fn key_line() -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/jwt-test-key.pem"))
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .to_string()
}

struct Gs {
    crm: CrmSandbox,
    fake: Shared,
    key: String,
}

impl Gs {
    /// A fake with the leads tab and an empty tab, and a pipeline reading
    /// `range` with the given extra source keys and pipeline keys.
    fn new(source_keys: &str, pipeline_yaml: &str) -> Self {
        let fake: Shared = Arc::default();
        let base = serve(
            Router::new()
                .route("/token", post(token))
                .route("/v4/spreadsheets/{id}/values/{range}", get(values))
                .with_state(fake.clone()),
        );
        {
            let mut f = fake.lock().unwrap();
            f.base = base.clone();
            f.tabs = vec![("Leads".into(), leads_tab()), ("Empty tab".into(), Vec::new())];
        }
        // The key names Google's endpoint; the config points it at the fake.
        let key = key_json("https://oauth2.googleapis.com/token");
        let yaml = format!(
            "        google_sheets:\n          spreadsheet_id: {SPREADSHEET}\n          credentials:\n            \
             key_env: SHEETS_KEY\n          base_url: {base}/\n          token_uri: {base}/token\n          \
             http:\n            backoff: 20ms\n{source_keys}"
        );
        Self {
            crm: CrmSandbox::with_pipeline("sheet", &yaml, pipeline_yaml),
            fake,
            key,
        }
    }

    /// The leads tab by name, header on row 2, rows identified by Lead ID.
    fn leads() -> Self {
        Self::new(
            "          range: Leads\n          header_row: 2\n          id_column: Lead ID\n",
            "    mapping:\n      columns:\n        Company Name: company\n",
        )
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("SHEETS_KEY", self.key.as_str())]
    }

    fn run(&self) -> Value {
        self.crm.run(&self.env())
    }

    fn run_output(&self) -> std::process::Output {
        self.crm.run_with(&self.env())
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut self.fake.lock().unwrap().log)
    }

    fn edit(&self, f: impl FnOnce(&mut Vec<Vec<String>>)) {
        f(&mut self.fake.lock().unwrap().tabs[0].1);
    }
}

#[test]
fn google_sheets_imports_rows_then_only_the_edited_one_despite_a_moved_column() {
    let gs = Gs::leads();
    let first = gs.run();
    assert_eq!(first["rows_read"], 4, "{first}");
    assert_eq!(gs.log(), ["token", "get Leads"]);
    assert_eq!(gs.crm.count("SELECT count(*) FROM records"), 4);
    assert_eq!(gs.crm.count("SELECT count(*) FROM masters"), 4);
    // Sheet rows say where they came from, and a sheet is no CRM: no links.
    assert_eq!(
        gs.crm
            .count("SELECT count(*) FROM records WHERE origin = 'sheet' AND crm_id IS NULL"),
        4
    );
    assert_eq!(gs.crm.count("SELECT count(*) FROM crm_links"), 0);
    assert_eq!(gs.crm.value_of("email", "L-2"), "grace@example.com");
    assert_eq!(gs.crm.value_of("company", "L-2"), "Navy");
    assert_eq!(gs.crm.value_of("first_name", "L-3"), "Alan");
    // `_source_row` is the sheet's row number: title, header, two rows, a
    // blank row, then L-3 on row 6.
    assert_eq!(
        gs.crm
            .count("SELECT CAST(source_row AS BIGINT) FROM records WHERE source_record_id = 'L-3'"),
        6
    );
    let cursor: Value = serde_json::from_str(&gs.crm.cursor().expect("state saved")).unwrap();
    assert_eq!(cursor["rows"].as_object().unwrap().len(), 4, "{cursor}");

    // Email moves to the first column; L-2 gets a new phone; the rest stays.
    gs.edit(|rows| {
        for r in rows.iter_mut().skip(1) {
            if r.len() > 3 {
                let email = r.remove(3);
                r.insert(0, email);
            }
        }
        rows[3][4] = "+1 415 555 0199".into();
    });
    let second = gs.run();
    assert_eq!(second["rows_read"], 1, "only the edited row: {second}");
    assert_eq!(gs.log(), ["token", "get Leads"]);
    assert_eq!(
        gs.crm.count("SELECT count(*) FROM records"),
        4,
        "a new version, not a new record"
    );
    assert_eq!(gs.crm.count("SELECT count(*) FROM masters"), 4, "the same person");
    assert_eq!(gs.crm.value_of("phone_raw", "L-2"), "+1 415 555 0199");
    assert_eq!(
        gs.crm.value_of("email", "L-2"),
        "grace@example.com",
        "found by header name"
    );

    let third = gs.run();
    assert_eq!(third["rows_read"], 0, "nothing changed: {third}");
    assert_eq!(gs.crm.count("SELECT count(*) FROM records"), 4);
}

#[test]
fn google_sheets_check_reads_the_header_and_writes_nothing() {
    let gs = Gs::leads();
    let o = gs.crm.check(&gs.env());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Leads!A2:") && out.contains("Company Name") && out.contains("6 column(s)"),
        "{out}"
    );
    assert_eq!(gs.log(), ["token", "get 'Leads'!2:2"], "the header row only");
    assert!(gs.crm.cursor().is_none());
}

#[test]
fn google_sheets_header_the_mapping_needs_or_an_unknown_tab_fail_clearly_and_write_nothing() {
    // The mapping names "Company Name"; the sheet renamed it to "Company".
    let gs = Gs::leads();
    gs.edit(|rows| rows[1][5] = "Company".into());
    let o = gs.run_output();
    let out = exited(&o, 1);
    assert!(
        out.contains("\"Company Name\"") && out.contains("mapping.columns") && out.contains("range Leads"),
        "{out}"
    );
    assert!(gs.crm.cursor().is_none(), "no state saved");
    assert_eq!(gs.crm.count("SELECT count(*) FROM records"), 0);
    let check = gs.crm.check(&gs.env());
    assert!(
        !check.status.success() && text(&check).contains("\"Company Name\""),
        "{}",
        text(&check)
    );

    // A tab that does not exist: Google's 400 INVALID_ARGUMENT, named.
    let gs = Gs::new("          range: Laeds\n", "");
    let o = gs.run_output();
    let out = exited(&o, 1);
    assert!(
        out.contains("range Laeds") && out.contains("Unable to parse range") && out.contains("check `range`"),
        "{out}"
    );
    assert!(gs.crm.cursor().is_none());
    assert_eq!(gs.crm.count("SELECT count(*) FROM records"), 0);
}

#[test]
fn google_sheets_retries_429_and_503_and_renews_a_revoked_token() {
    let gs = Gs::leads();
    {
        let mut f = gs.fake.lock().unwrap();
        f.faults = VecDeque::from([Fault::RateLimited { retry_after: true }, Fault::ServerError]);
    }
    let report = gs.run();
    assert_eq!(report["rows_read"], 4, "{report}");
    assert_eq!(
        gs.log(),
        ["token", "get Leads", "429", "get Leads", "503", "get Leads"]
    );
    let gets = std::mem::take(&mut gs.fake.lock().unwrap().gets);
    let after_429 = gets[1] - gets[0];
    let after_503 = gets[2] - gets[1];
    assert!(
        after_429 >= std::time::Duration::from_secs(1),
        "Retry-After: 1 honoured: {after_429:?}"
    );
    assert!(
        after_503 < std::time::Duration::from_secs(1),
        "503: backoff of 20ms: {after_503:?}"
    );

    // The token is revoked before the next data request: one new token
    // (its endpoint fails once and is asked again), the same request again.
    gs.edit(|rows| rows[2][3] = "ada.lovelace@example.com".into());
    {
        let mut f = gs.fake.lock().unwrap();
        f.expire_after = Some(0);
        f.faults = VecDeque::from([Fault::RateLimited { retry_after: false }]);
        // The run's first token is issued, its renewal fails once.
        f.token_faults = VecDeque::from(["ok", "503-html"]);
    }
    let report = gs.run();
    assert_eq!(report["rows_read"], 1, "{report}");
    assert_eq!(
        gs.log(),
        [
            "token",
            "get Leads",
            "401",
            "token-503",
            "token",
            "get Leads",
            "429",
            "get Leads"
        ]
    );
    assert_eq!(gs.crm.value_of("email", "L-1"), "ada.lovelace@example.com");
}

#[test]
fn google_sheets_malformed_answer_fails_and_keeps_the_state() {
    let gs = Gs::leads();
    gs.run();
    let before = gs.crm.cursor().expect("state after the first run");
    gs.edit(|rows| rows[5][1] = "Alan M.".into());
    gs.fake.lock().unwrap().faults = VecDeque::from([Fault::Malformed]);
    let o = gs.run_output();
    let out = exited(&o, 1);
    assert!(
        out.contains("malformed response") && out.contains("not a ValueRange"),
        "{out}"
    );
    assert!(!out.contains("not rows"), "no response body in the error: {out}");
    assert_eq!(
        gs.crm.cursor().as_deref(),
        Some(before.as_str()),
        "state not advanced"
    );
    let report = gs.run();
    assert_eq!(
        report["rows_read"], 1,
        "the edit comes with the next run: {report}"
    );
    assert_eq!(gs.crm.value_of("first_name", "L-3"), "Alan M.");
}

#[test]
fn google_sheets_empty_tab_and_fingerprinted_rows_from_a_key_file() {
    // An empty tab: a run that reads nothing and saves no state.
    let gs = Gs::new("          range: Empty tab\n", "");
    let report = gs.run();
    assert_eq!(report["rows_read"], 0, "{report}");
    assert_eq!(gs.log(), ["token", "get Empty tab"]);
    assert!(gs.crm.cursor().is_none());

    // The first tab by default, header on row 1, no id column: rows are
    // identified by their values.
    // The key comes from a file next to the config (a relative path).
    let fake: Shared = Arc::default();
    let base = serve(
        Router::new()
            .route("/token", post(token))
            .route("/v4/spreadsheets/{id}/values/{range}", get(values))
            .with_state(fake.clone()),
    );
    {
        let mut f = fake.lock().unwrap();
        f.base = base.clone();
        f.tabs = vec![("Sheet1".into(), leads_tab()[1..].to_vec())];
    }
    let yaml = format!(
        "        google_sheets:\n          spreadsheet_id: {SPREADSHEET}\n          credentials:\n            \
         key_file: sa.json\n          base_url: {base}\n"
    );
    let crm = CrmSandbox::new("sheet", &yaml);
    std::fs::write(crm.path().join("sa.json"), key_json(&format!("{base}/token"))).unwrap();
    let report = crm.run(&[]);
    assert_eq!(report["rows_read"], 4, "{report}");
    let ids = crm.count("SELECT count(*) FROM records WHERE source_record_id LIKE 'row-%'");
    assert_eq!(ids, 4);
    assert_eq!(
        std::mem::take(&mut fake.lock().unwrap().log),
        ["token", "get A:ZZZ"]
    );
    // Without an id column an edited row is a new record; dedupe links it
    // to the same person by e-mail.
    fake.lock().unwrap().tabs[0].1[1][5] = "Analytical Engines".into();
    let report = crm.run(&[]);
    assert_eq!(report["rows_read"], 1, "{report}");
    assert_eq!(crm.count("SELECT count(*) FROM records"), 5);
    assert_eq!(crm.count("SELECT count(*) FROM masters"), 4);
    // The old version's identity is gone from the sheet: its record is
    // marked deleted (the person stays, through the new record).
    assert_eq!(report["records_deleted"], 1, "{report}");
    assert_eq!(
        crm.count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL AND company = 'Engines'"),
        1
    );
}

#[test]
fn google_sheets_deleted_rows_mark_their_records_and_leave_the_state() {
    let gs = Gs::leads();
    gs.run();
    // L-3 (sheet row 6) is deleted from the sheet.
    gs.edit(|rows| {
        rows.remove(5);
    });
    let o = gs.run_output();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let report = &report[0];
    assert_eq!(report["rows_read"], 0, "{report}");
    assert_eq!(report["records_deleted"], 1, "{report}");
    assert_eq!(
        gs.crm
            .count("SELECT count(*) FROM records WHERE source_record_id = 'L-3' AND deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(
        gs.crm
            .count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(
        gs.crm.count("SELECT count(*) FROM crm_links"),
        0,
        "a sheet is no CRM"
    );
    assert_eq!(
        gs.crm
            .count("SELECT CAST(records_deleted AS BIGINT) FROM runs ORDER BY started_at DESC LIMIT 1"),
        1
    );
    let cursor: Value = serde_json::from_str(&gs.crm.cursor().unwrap()).unwrap();
    let rows = cursor["rows"].as_object().unwrap();
    assert_eq!(rows.len(), 3, "{cursor}");
    assert!(!rows.contains_key("L-3"), "{cursor}");

    // Nothing more to mark.
    let again = gs.run();
    assert_eq!(again["records_deleted"], 0, "{again}");

    // The row comes back: read as new, no longer deleted.
    gs.edit(|rows| {
        rows.push(row(&[
            "L-3",
            "Alan",
            "Turing",
            "alan@example.com",
            "+1 415 555 0103",
        ]));
    });
    let back = gs.run();
    assert_eq!(back["rows_read"], 1, "{back}");
    assert_eq!(
        gs.crm
            .count("SELECT count(*) FROM records WHERE deleted_at IS NOT NULL"),
        0
    );
}

#[test]
fn google_sheets_token_endpoint_failures_are_retried_and_never_echo_the_assertion() {
    // Down twice (5xx), then up: the run goes on, and no data request went
    // out without a token.
    let gs = Gs::leads();
    gs.fake.lock().unwrap().token_faults.extend(["503", "503-html"]);
    let first = gs.run();
    assert_eq!(first["rows_read"], 4, "{first}");
    assert_eq!(gs.log(), ["token-503", "token-503", "token", "get Leads"]);

    // An endpoint that quotes our request in its error: the signed
    // assertion (a credential until it expires) is blanked.
    let gs = Gs::leads();
    gs.fake.lock().unwrap().token_faults.push_back("echo");
    let o = gs.run_output();
    let out = exited(&o, 1);
    assert!(
        out.contains("invalid_request") && out.contains("[redacted]"),
        "{out}"
    );
    let assertion = gs.fake.lock().unwrap().assertions[0].clone();
    assert!(assertion.starts_with("eyJ"), "{assertion:.20}");
    // No part of it either: the signature with guessable claims rebuilds it.
    for part in assertion.split('.').map(|p| p.trim_end_matches('=')) {
        assert!(!out.contains(part), "part of the assertion printed:\n{out}");
    }
    assert!(
        !out.contains(&assertion) && !out.contains("eyJ"),
        "assertion printed:\n{out}"
    );
    assert_eq!(gs.log(), ["token-echo"], "a refusal is final; no data request");
}

#[test]
fn google_sheets_never_prints_the_key_or_a_token() {
    // Debug logs of a successful run.
    let gs = Gs::leads();
    let o = gs
        .crm
        .run_with(&[("SHEETS_KEY", gs.key.as_str()), ("LEADFLOW_LOG", "debug")]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let (assertion, token) = {
        let f = gs.fake.lock().unwrap();
        (
            f.assertions[0].clone(),
            format!("ya29.a0AfB_fake-access-token-{}", f.issued),
        )
    };
    for secret in [key_line(), assertion, token] {
        assert!(!out.contains(&secret), "secret {secret:.20}… printed:\n{out}");
    }

    // A key the token endpoint refuses (signed by another key): the error
    // names the endpoint and Google's answer, never the key.
    let other = std::fs::read_to_string(repo().join("tests/fixtures/jwt-other-key.pem")).unwrap();
    let mut bad: Value = serde_json::from_str(&gs.key).unwrap();
    bad["private_key"] = json!(other);
    let bad = bad.to_string();
    let o = gs
        .crm
        .run_with(&[("SHEETS_KEY", bad.as_str()), ("LEADFLOW_LOG", "debug")]);
    let out = exited(&o, 1);
    assert!(out.contains("invalid_grant") && out.contains("/token"), "{out}");
    let other_line = other.lines().nth(3).unwrap();
    assert!(!out.contains(other_line) && !out.contains(&key_line()), "{out}");

    // A key that is not JSON: the error says where, not what.
    let o = gs
        .crm
        .run_with(&[("SHEETS_KEY", "{\"private_key\": \"-----BEGIN SECRET")]);
    let out = exited(&o, 1);
    assert!(
        out.contains("not a service-account key") && !out.contains("BEGIN SECRET"),
        "{out}"
    );
}
