//! A second entity type (channel partners) through the real binary: its
//! pipeline writes its own masters, records and project links under
//! `entities/channel_partner/`, deduplicated by the same engine, never
//! mixed with the leads of the same warehouse; `--entity` reads them.

use datafusion::prelude::SessionContext;

use super::linkage::{HEADER, strings, text_rows};
use super::{Sandbox, exited, leadflow, text};

fn sandbox() -> Sandbox {
    let sb = Sandbox {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    for d in ["drops", "partners"] {
        std::fs::create_dir_all(sb.path().join(d)).unwrap();
    }
    // Sunil is a channel partner (two projects, two phone spellings) and
    // also enquired as a buyer: one lead, one partner, never one person.
    std::fs::write(
        sb.path().join("drops/leads.csv"),
        format!(
            "{HEADER}Sunil Agarwal,+91 98111 00001,sunil.agarwal@gmail.com,,Pune,IN,Riverside\n\
             Meera Iyer,+91 98222 00002,meera@gmail.com,,Pune,IN,Riverside\n"
        ),
    )
    .unwrap();
    std::fs::write(
        sb.path().join("partners/cps.csv"),
        format!(
            "{HEADER}Sunil Agarwal,+91 98111 00001,sunil@sunilhomes.in,Sunil Homes,Pune,IN,Riverside\n\
             Sunil Agarwal,098111 00001,,Sunil Homes Realty,Pune,IN,Hilltop\n\
             Kavita Shah,+91 98333 00003,kavita@shahrealty.in,Shah Realty,Pune,IN,Hilltop\n"
        ),
    )
    .unwrap();
    let yaml = "warehouse:\n  uri: ./warehouse\npipelines:\n\
        \x20 - name: leads\n    defaults:\n      phone_region: IN\n    sources:\n      - name: drops\n        files:\n          path: ./drops\n\
        \x20 - name: partners\n    entity: channel_partner\n    defaults:\n      phone_region: IN\n    dedupe:\n      mode: probabilistic\n    sources:\n      - name: cp_uploads\n        files:\n          path: ./partners\n";
    std::fs::write(sb.path().join("pipeline.yaml"), yaml).unwrap();
    sb
}

/// Rows of `sql` over the channel partners' own tables.
fn partner_rows(sb: &Sandbox, sql: &str) -> Vec<Vec<Option<String>>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let batches = rt.block_on(async {
        let loaded = leadflow::config::load(&sb.path().join("pipeline.yaml")).expect("config");
        let wh = leadflow::open_warehouse(&loaded).await.unwrap();
        let wh = leadflow::warehouse_for(&wh, Some("channel_partner"))
            .await
            .unwrap();
        let ctx = SessionContext::new();
        wh.register(&ctx, leadflow::ENTITY_TABLES).await.unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    });
    text_rows(batches)
}

#[test]
fn channel_partners_get_their_own_masters_and_never_mix_with_leads() {
    let sb = sandbox();
    let cfg = sb.config();
    let o = leadflow(&["run", &cfg, "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reports[1]["pipeline"], "partners");
    assert_eq!(reports[1]["masters_new"], 2, "{}", reports[1]);
    assert!(
        sb.path()
            .join("warehouse/entities/channel_partner/masters/_delta_log")
            .exists()
    );

    // Leads: two people, no partner rows.
    let leads = strings(&sb, "SELECT full_name FROM masters ORDER BY full_name");
    assert_eq!(leads.len(), 2, "{leads:?}");
    assert_eq!(
        strings(&sb, "SELECT count(*) FROM records WHERE source = 'cp_uploads'")[0][0].as_deref(),
        Some("0")
    );
    // Partners: Sunil once, in both projects, both spellings of his number linked.
    let cps = partner_rows(
        &sb,
        "SELECT m.full_name, m.record_count, count(l.project) FROM masters m \
         JOIN project_links l ON l.master_id = m.master_id GROUP BY m.full_name, m.record_count ORDER BY m.full_name",
    );
    assert_eq!(
        cps,
        vec![
            vec![Some("Kavita Shah".into()), Some("1".into()), Some("1".into())],
            vec![Some("Sunil Agarwal".into()), Some("2".into()), Some("2".into())],
        ]
    );
    // The partner's golden record keeps the newest company.
    let company = partner_rows(
        &sb,
        "SELECT company FROM masters WHERE full_name = 'Sunil Agarwal'",
    );
    assert_eq!(company[0][0].as_deref(), Some("Sunil Homes Realty"));

    // `show` reads leads by default, partners with --entity.
    let o = leadflow(&["show", &cfg, "--phone", "+919811100001"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        shown.contains("sunil.agarwal@gmail.com") && !shown.contains("Hilltop"),
        "{shown}"
    );
    let o = leadflow(
        &[
            "show",
            &cfg,
            "--phone",
            "+919811100001",
            "--entity",
            "channel_partner",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        shown.contains("Hilltop") && shown.contains("Sunil Homes"),
        "{shown}"
    );
    assert!(!shown.contains("sunil.agarwal@gmail.com"), "{shown}");

    // A second run changes nothing in either entity.
    let o = leadflow(&["run", &cfg, "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        partner_rows(&sb, "SELECT count(*) FROM records")[0][0].as_deref(),
        Some("3")
    );

    // An entity no pipeline has is refused.
    let o = leadflow(
        &["show", &cfg, "--phone", "+919811100001", "--entity", "vendor"],
        &[],
    );
    exited(&o, 2);
}

#[test]
fn a_bad_entity_name_is_a_config_error() {
    let sb = sandbox();
    sb.edit_config("entity: channel_partner", "entity: Channel Partners");
    let o = leadflow(&["validate", &sb.config()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pipelines.1.entity") && err.contains("lower-case"),
        "{err}"
    );
}

#[test]
fn the_daemon_reviews_and_merges_an_entity_by_query_parameter() {
    use super::daemon::{Daemon, TOKEN, http_body, with_daemon_section};
    let sb = sandbox();
    let o = leadflow(&["run", &sb.config(), "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let port = with_daemon_section(&sb);
    let d = Daemon::start(&sb, port);
    assert_eq!(d.get("/api/v1/reviews?entity=channel_partner").status, 200);
    assert_eq!(d.get("/api/v1/reviews?entity=vendor").status, 404);

    let ids = partner_rows(&sb, "SELECT master_id FROM masters ORDER BY full_name");
    let (kavita, sunil) = (ids[0][0].clone().unwrap(), ids[1][0].clone().unwrap());
    let body = format!(r#"{{"masters": ["{sunil}", "{kavita}"], "keep": "{sunil}"}}"#);
    let m = http_body(
        port,
        "POST",
        "/api/v1/masters/merge?entity=channel_partner",
        Some(TOKEN),
        &body,
    )
    .expect("request");
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(
        partner_rows(&sb, "SELECT count(*) FROM masters")[0][0].as_deref(),
        Some("1")
    );
    // The leads are untouched.
    assert_eq!(
        strings(&sb, "SELECT count(*) FROM masters")[0][0].as_deref(),
        Some("2")
    );
    // Without ?entity the partner ids are unknown to the leads' tables.
    let m = http_body(port, "POST", "/api/v1/masters/merge", Some(TOKEN), &body).expect("request");
    assert_eq!(m.status, 404, "{}", m.body);
}

/// `entities.<name>.survivorship` governs that entity's golden records;
/// the leads keep the top-level rules.
#[test]
fn an_entity_keeps_its_golden_records_by_its_own_rules() {
    let sb = sandbox();
    let cfg = sb.config();
    sb.edit_config(
        "pipelines:\n",
        "survivorship:\n  fields:\n    company: newest\n\
         entities:\n  channel_partner:\n    survivorship:\n      fields:\n        company: longest\n\
         pipelines:\n",
    );
    let o = leadflow(&["run", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o));
    // Later, Sunil uploads himself again under the shorter name: the newest
    // value, but partners keep the longest.
    std::fs::write(
        sb.path().join("partners/later.csv"),
        format!("{HEADER}Sunil Agarwal,+91 98111 00001,,Sunil Homes,Pune,IN,Riverside\n"),
    )
    .unwrap();
    let o = leadflow(&["run", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let company = partner_rows(
        &sb,
        "SELECT company, record_count FROM masters WHERE full_name = 'Sunil Agarwal'",
    );
    assert_eq!(
        company,
        vec![vec![Some("Sunil Homes Realty".into()), Some("3".into())]]
    );
    // A manual split and merge of partners (--entity) use the same rules.
    let ids = partner_rows(
        &sb,
        "SELECT m.master_id, r.source, r.source_record_id FROM masters m JOIN records r \
         ON r.master_id = m.master_id WHERE r.company = 'Sunil Homes Realty'",
    );
    let (master, record) = (
        ids[0][0].clone().unwrap(),
        format!(
            "{}:{}",
            ids[0][1].as_deref().unwrap(),
            ids[0][2].as_deref().unwrap()
        ),
    );
    let o = leadflow(
        &[
            "master",
            "split",
            &cfg,
            &master,
            "--record",
            &record,
            "--entity",
            "channel_partner",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let split: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = leadflow(
        &[
            "master",
            "merge",
            &cfg,
            &master,
            split["new_master_id"].as_str().unwrap(),
            "--keep",
            &master,
            "--entity",
            "channel_partner",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let company = partner_rows(
        &sb,
        &format!("SELECT company FROM masters WHERE master_id = '{master}'"),
    );
    assert_eq!(company[0][0].as_deref(), Some("Sunil Homes Realty"));
}

#[test]
fn entity_settings_name_a_real_entity_and_its_own_sources() {
    let sb = sandbox();
    let cfg = sb.config();
    sb.edit_config(
        "pipelines:\n",
        "entities:\n  vendor:\n    survivorship:\n      fields:\n        company: longest\n  \
         channel_partner:\n    survivorship:\n      fields:\n        company: source_priority\n      \
         source_priority: [drops]\npipelines:\n",
    );
    let o = leadflow(&["validate", &cfg], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "entities.vendor: no pipeline has `entity: vendor`",
        "entities.channel_partner.survivorship.source_priority: `drops` is not a source of a pipeline of entity `channel_partner`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
