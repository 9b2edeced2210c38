//! The DataFusion stages of a run: normalise (the built-in SELECT over the
//! UDFs) and the pipeline's own `sql:` stages.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use leadflow_transforms::datetime::LeadTimestamp;
use leadflow_transforms::normalise::{NormaliseOptions, register_udfs};

/// The normalise stage, in two queries with a materialised batch between
/// them: DataFusion's projection merging would otherwise inline `_p` into
/// each field access and parse every phone three times.
/// First the expensive parses, once per row:
const PARSE_SQL: &str = r#"
SELECT *, phone_parse(_phone_raw, _cc) AS _p, email_parse(_email_raw) AS _e FROM (
  SELECT *, blank_to_null(phone) AS _phone_raw, blank_to_null(email) AS _email_raw,
    blank_to_null(country) AS _country_raw, country_code(blank_to_null(country)) AS _cc
  FROM mapped
)
"#;

/// Then the records shape, spreading the parsed structs into columns.
const SHAPE_SQL: &str = r#"
SELECT
  _source AS source, _record_id AS source_record_id, _source_file AS source_file,
  CAST(_source_row AS BIGINT) AS source_row, _raw_pos,
  first_name, last_name, full_name,
  _p['e164'] AS phone, _phone_raw AS phone_raw, _p['valid'] AS phone_valid, _p['type'] AS phone_type,
  _e['email'] AS email, _email_raw AS email_raw, _e['key'] AS email_key, _e['valid'] AS email_valid,
  blank_to_null(company) AS company, blank_to_null(job_title) AS job_title,
  _cc AS country, _country_raw AS country_raw, blank_to_null(city) AS city,
  url_normalise(website) AS website, blank_to_null(project) AS project, blank_to_null(status) AS status,
  blank_to_null(owner) AS owner, lead_timestamp(source_created_at) AS source_created_at, _extras AS extras
FROM parsed
"#;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("normalise: {0}")]
    Normalise(String),
    #[error("sql stage {index}: {source}")]
    Sql {
        index: usize,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("sql stage {index} dropped column(s) {missing}; a stage must keep every column of `leads`")]
    DroppedColumns { index: usize, missing: String },
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

/// A session with the normaliser UDFs registered, one partition per core.
pub fn session(opts: &NormaliseOptions) -> Result<SessionContext, StageError> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let config = SessionConfig::new()
        .with_target_partitions(cores)
        .with_batch_size(16 * 1024);
    let ctx = SessionContext::new_with_config(config);
    register_udfs(&ctx, opts).map_err(|e| StageError::Normalise(e.to_string()))?;
    ctx.register_udf(ScalarUDF::from(LeadTimestamp::default()));
    Ok(ctx)
}

/// Spread batches over `parts` partitions so the plan uses every core.
fn partitioned(batches: Vec<RecordBatch>, parts: usize) -> Vec<Vec<RecordBatch>> {
    let mut out = vec![Vec::new(); parts.max(1)];
    for (i, b) in batches.into_iter().enumerate() {
        out[i % parts.max(1)].push(b);
    }
    out
}

/// (Re)register in-memory partitions as table `name`.
pub fn register_mem(
    ctx: &SessionContext,
    name: &str,
    schema: arrow::datatypes::SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
) -> Result<(), datafusion::error::DataFusionError> {
    let mem = MemTable::try_new(schema, partitions)?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(mem))?;
    Ok(())
}

async fn run_over(
    ctx: &SessionContext,
    table: &str,
    batches: Vec<RecordBatch>,
    sql: &str,
) -> Result<Vec<RecordBatch>, datafusion::error::DataFusionError> {
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Ok(Vec::new());
    };
    let parts = ctx.state().config().target_partitions();
    register_mem(ctx, table, schema, partitioned(batches, parts))?;
    let out = ctx.sql(sql).await?.collect().await;
    ctx.deregister_table(table)?;
    out
}

/// Normalise mapped batches (MAPPED_SCHEMA) into records-shaped batches.
pub async fn normalise(
    ctx: &SessionContext,
    mapped: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, StageError> {
    let parsed = run_over(ctx, "mapped", mapped, PARSE_SQL).await?;
    Ok(run_over(ctx, "parsed", parsed, SHAPE_SQL).await?)
}

/// Run the pipeline's own SQL stages, each over `leads`.
pub async fn user_stages(
    ctx: &SessionContext,
    mut batches: Vec<RecordBatch>,
    stages: &[String],
) -> Result<Vec<RecordBatch>, StageError> {
    for (index, sql) in stages.iter().enumerate() {
        let Some(before) = batches.first().map(|b| b.schema()) else {
            return Ok(batches);
        };
        batches = run_over(ctx, "leads", batches, sql)
            .await
            .map_err(|source| StageError::Sql { index, source })?;
        if let Some(after) = batches.first().map(|b| b.schema()) {
            let missing: Vec<&str> = before
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .filter(|n| after.field_with_name(n).is_err())
                .collect();
            if !missing.is_empty() {
                return Err(StageError::DroppedColumns {
                    index,
                    missing: missing.join(", "),
                });
            }
            // Put columns back in the order later stages expect.
            let idx: Vec<usize> = before
                .fields()
                .iter()
                .map(|f| after.index_of(f.name()).expect("checked"))
                .collect();
            batches = batches
                .iter()
                .map(|b| b.project(&idx))
                .collect::<Result<_, _>>()?;
            let want = before.clone();
            batches = batches
                .into_iter()
                .map(|b| {
                    let cols = b
                        .columns()
                        .iter()
                        .zip(want.fields())
                        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                        .collect::<Result<Vec<_>, _>>()?;
                    RecordBatch::try_new(want.clone(), cols)
                })
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(batches)
}

/// The schema of `leads` after normalising, from the plans alone (the
/// `mapped` and `parsed` tables are left registered, empty).
async fn normalised_schema(
    ctx: &SessionContext,
) -> Result<arrow::datatypes::SchemaRef, datafusion::error::DataFusionError> {
    register_mem(
        ctx,
        "mapped",
        leadflow_transforms::schema::MAPPED_SCHEMA.clone(),
        vec![vec![]],
    )?;
    let parsed = Arc::new(ctx.sql(PARSE_SQL).await?.schema().as_arrow().clone());
    register_mem(ctx, "parsed", parsed, vec![vec![]])?;
    Ok(Arc::new(ctx.sql(SHAPE_SQL).await?.schema().as_arrow().clone()))
}

/// Plan the pipeline's `sql:` stages against the real `leads` schema
/// without running them: unknown columns or functions are config errors,
/// found before any work. Returns (stage index, problem) pairs.
pub async fn check_stages(opts: &NormaliseOptions, stages: &[String]) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    if stages.is_empty() {
        return problems;
    }
    let ctx = match session(opts) {
        Ok(c) => c,
        Err(e) => return vec![(0, e.to_string())],
    };
    let schema = match normalised_schema(&ctx).await {
        Ok(s) => s,
        Err(e) => return vec![(0, format!("normalise stage: {e}"))],
    };
    for (index, sql) in stages.iter().enumerate() {
        if let Err(e) = register_mem(&ctx, "leads", schema.clone(), vec![vec![]]) {
            problems.push((index, e.to_string()));
            continue;
        }
        match ctx.sql(sql).await {
            Ok(df) => {
                let out = df.schema().as_arrow();
                let missing: Vec<&str> = schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .filter(|n| out.field_with_name(n).is_err())
                    .collect();
                if !missing.is_empty() {
                    problems.push((
                        index,
                        format!(
                            "drops column(s) {}; a stage must keep every column of `leads`",
                            missing.join(", ")
                        ),
                    ));
                }
            }
            Err(e) => problems.push((index, e.to_string())),
        }
    }
    problems
}

/// Is this one SELECT statement? (config check; columns are checked at run time)
pub fn check_sql(sql: &str) -> Result<(), String> {
    let stmts = DFParser::parse_sql(sql).map_err(|e| format!("not valid SQL: {e}"))?;
    if stmts.len() != 1 {
        return Err(format!("must be exactly one statement, found {}", stmts.len()));
    }
    match stmts.front() {
        Some(Statement::Statement(s))
            if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)) =>
        {
            Ok(())
        }
        _ => Err("must be a SELECT over `leads`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;

    /// The expensive parsers must run once per row, not once per field read
    /// from their struct (an optimizer that inlines `_p` would triple them).
    #[tokio::test]
    async fn normalise_plan_parses_each_phone_once() {
        let ctx = session(&NormaliseOptions::default()).unwrap();
        // Registers `mapped` and `parsed` for the plans below.
        normalised_schema(&ctx).await.unwrap();
        let explain = |sql: String| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx
                    .sql(&format!("EXPLAIN {sql}"))
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                let text = pretty_format_batches(&plan).unwrap().to_string();
                text.split("physical_plan").nth(1).unwrap_or(&text).to_string()
            }
        };
        let parse = explain(PARSE_SQL.to_string()).await;
        assert_eq!(parse.matches("phone_parse(").count(), 1, "{parse}");
        assert_eq!(parse.matches("email_parse(").count(), 1, "{parse}");
        let shape = explain(SHAPE_SQL.to_string()).await;
        assert!(
            !shape.contains("phone_parse(") && !shape.contains("email_parse("),
            "{shape}"
        );
    }
}
