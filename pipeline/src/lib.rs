//! leadflow: YAML pipelines that take lead files through normalise, validate
//! and dedupe into a Delta Lake warehouse. This crate wires the connectors,
//! transforms and sinks crates together; `run::run_pipeline` is the whole run.

pub mod check;
pub mod config;
pub mod crm_links;
pub mod daemon;
pub mod eval;
pub mod generate;
pub mod memory;
pub mod progress;
pub mod reminders;
pub mod retry;
pub mod review;
pub mod run;
pub mod show;
pub mod stages;

use leadflow_sinks::{TableSpec, Warehouse, WarehouseError};

/// The warehouse tables as the sinks crate needs them.
pub fn table_specs() -> Vec<TableSpec> {
    leadflow_transforms::schema::warehouse_tables()
        .into_iter()
        .map(|(name, schema, keys)| TableSpec { name, schema, keys })
        .collect()
}

/// Open (creating if needed) the warehouse of a loaded config.
pub async fn open_warehouse(loaded: &config::LoadedConfig) -> Result<Warehouse, WarehouseError> {
    Warehouse::open(&loaded.config.warehouse, &loaded.base, table_specs()).await
}

/// The tables each entity type (leads, channel partners, ...) has of its
/// own; the rest of the warehouse is shared.
pub const ENTITY_TABLES: &[&str] = &[
    "masters",
    "records",
    "project_links",
    "merges",
    "review",
    "rejects",
    "crm_links",
];

/// Why `entity` cannot name an entity type, if it cannot.
pub fn entity_problem(entity: &str) -> Option<String> {
    let ok = entity.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && entity
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Some(format!(
            "entity {entity:?} may hold only lower-case letters, digits and `_`, starting with a letter"
        ));
    }
    if entity == "lead" || entity == "leads" {
        return Some("leads are the default entity: leave `entity` out".into());
    }
    None
}

/// The warehouse as an entity type sees it: `None` is leads (the
/// warehouse's own tables), any other has its own `ENTITY_TABLES`.
pub async fn warehouse_for(warehouse: &Warehouse, entity: Option<&str>) -> Result<Warehouse, WarehouseError> {
    match entity {
        None => Ok(warehouse.clone()),
        Some(e) => warehouse.for_entity(e, ENTITY_TABLES).await,
    }
}

/// Vacuum every table of the warehouse: the leads' tables and the shared
/// ones, then each entity type's own (`entities/<entity>/`) of the
/// pipelines in `config`. A vacuum that deleted (not a dry run) marks the
/// warehouse vacuumed now (`warehouse.vacuum_every` counts from it).
pub async fn vacuum_warehouse(
    config: &config::Config,
    warehouse: &Warehouse,
    opts: leadflow_sinks::VacuumOptions,
) -> Result<Vec<leadflow_sinks::VacuumOutcome>, WarehouseError> {
    let warehouse = &warehouse.shared();
    let mut names: Vec<&str> = table_specs().iter().map(|t| t.name).collect();
    names.sort_unstable();
    let mut out = warehouse.vacuum(&names, opts).await?;
    let entities: std::collections::BTreeSet<&str> = config
        .pipelines
        .iter()
        .filter_map(|p| p.entity.as_deref())
        .collect();
    for e in entities {
        let view = warehouse_for(warehouse, Some(e)).await?;
        out.extend(view.vacuum(ENTITY_TABLES, opts).await?);
    }
    if !opts.dry_run {
        warehouse.mark_vacuumed()?;
    }
    Ok(out)
}

/// TLS for object stores: one process-wide rustls provider (ring).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The `LEADFLOW_LOG` filter (else `default`), with dependencies' noise
/// (delta-kernel logs an ERROR for every new table, delta-rs a WARN per
/// MERGE) kept quiet unless asked for by name.
pub fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_env("LEADFLOW_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let asked = std::env::var("LEADFLOW_LOG").unwrap_or_default();
    for (target, level) in [
        ("buoyant_kernel", "off"),
        ("deltalake_core", "error"),
        ("deltalake", "error"),
        ("datafusion", "warn"),
    ] {
        if !asked.contains(target)
            && let Ok(d) = format!("{target}={level}").parse()
        {
            filter = filter.add_directive(d);
        }
    }
    // yup-oauth2 logs the token request (with the signed JWT) and the
    // token response at debug level: never let those through, whatever
    // the filter asks for.
    if let Ok(d) = "yup_oauth2=info".parse() {
        filter = filter.add_directive(d);
    }
    filter
}
