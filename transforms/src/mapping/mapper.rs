//! The mapper: compiled once per pipeline, bound to each file's headers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder, UInt64Array, UInt64Builder};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use super::config::{Defaults, MappingConfig};
use super::names::NameBuffers;
use crate::schema::{self, LEAD_FIELDS, MAPPED_SCHEMA};

/// Mapping configuration problems, all reported together.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("mapping.{key}: unknown lead field `{field}` (known: {known})")]
    UnknownField {
        key: String,
        field: String,
        known: String,
    },
    #[error("file has no column for any of phone, email, name (headers: {headers})")]
    NothingMapped { headers: String },
    #[error("batch is missing meta column `{0}`")]
    MissingMeta(&'static str),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Built-in header aliases (folded) per field.
const BUILTIN_ALIASES: &[(&str, &[&str])] = &[
    (
        "first_name",
        &["firstname", "fname", "givenname", "forename", "first"],
    ),
    (
        "last_name",
        &["lastname", "surname", "lname", "familyname", "last"],
    ),
    (
        "full_name",
        &[
            "name",
            "fullname",
            "leadname",
            "contactname",
            "customername",
            "studentname",
            "clientname",
            "personname",
        ],
    ),
    (
        "phone",
        &[
            "phone",
            "phonenumber",
            "phoneno",
            "mobile",
            "mobilenumber",
            "mobileno",
            "mobilephone",
            "cell",
            "cellphone",
            "cellnumber",
            "contactnumber",
            "contactno",
            "telephone",
            "tel",
            "telephone1",
            "whatsapp",
            "whatsappnumber",
            "phone1",
            "primaryphone",
        ],
    ),
    (
        "email",
        &[
            "email",
            "emailaddress",
            "mail",
            "emailid",
            "email1",
            "emailaddress1",
            "primaryemail",
        ],
    ),
    (
        "company",
        &[
            "company",
            "companyname",
            "organisation",
            "organization",
            "businessname",
            "employer",
            "account",
            "firm",
        ],
    ),
    (
        "job_title",
        &[
            "jobtitle",
            "title",
            "designation",
            "position",
            "role",
            "occupation",
        ],
    ),
    (
        "country",
        &[
            "country",
            "countryname",
            "nation",
            "countryregion",
            "addresscountry",
        ],
    ),
    ("city", &["city", "town", "location", "addresscity"]),
    (
        "website",
        &[
            "website",
            "web",
            "url",
            "companywebsite",
            "homepage",
            "site",
            "websiteurl",
        ],
    ),
    (
        "project",
        &[
            "project",
            "projectname",
            "campaign",
            "course",
            "program",
            "programme",
            "property",
            "interestedin",
        ],
    ),
    (
        "status",
        &["status", "leadstatus", "stage", "leadstage", "hsleadstatus"],
    ),
    (
        "owner",
        &[
            "owner",
            "assignedto",
            "assignee",
            "salesperson",
            "leadowner",
            "salesrep",
            "counsellor",
            "agent",
        ],
    ),
    (
        "source_created_at",
        &[
            "createdat",
            "created",
            "createddate",
            "createdon",
            "date",
            "timestamp",
            "submittedat",
            "enquirydate",
            "leaddate",
            "dateadded",
            "dateofvisit",
            "visitdate",
        ],
    ),
];

/// Built-in status value map (folded key -> value).
const BUILTIN_STATUS: &[(&str, &str)] = &[
    ("hotlead", "hot"),
    ("hot", "hot"),
    ("warmlead", "warm"),
    ("warm", "warm"),
    ("coldlead", "cold"),
    ("cold", "cold"),
    ("new", "new"),
    ("newlead", "new"),
    ("open", "new"),
    ("contacted", "contacted"),
    ("attemptedtocontact", "contacted"),
    ("qualified", "qualified"),
    ("unqualified", "unqualified"),
    ("lost", "lost"),
    ("closedlost", "lost"),
    ("won", "won"),
    ("closedwon", "won"),
    ("converted", "won"),
];

/// Fold a header or value key: lower-case, letters and digits only.
pub fn fold_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// [`fold_key`] into a reused buffer.
fn fold_into(s: &str, out: &mut String) {
    out.clear();
    out.extend(
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase),
    );
}

/// Alias tiers, strongest first: the pipeline's own aliases, then the
/// source's defaults (a CRM's field names), then the built-ins.
const TIER_USER: u8 = 0;
const TIER_SOURCE: u8 = 1;
const TIER_BUILTIN: u8 = 2;

/// The mapping of one pipeline, compiled.
#[derive(Debug, Clone)]
pub struct Mapper {
    /// folded header -> field index in LEAD_FIELDS; explicit columns first.
    explicit: HashMap<String, usize>,
    /// folded header -> (tier, field index); a header belongs to its
    /// strongest tier only.
    aliases: HashMap<String, (u8, usize)>,
    ignore: Vec<String>,
    values: Vec<HashMap<String, String>>,
    keep_extras: bool,
    defaults: Vec<Option<String>>,
}

fn field_index(name: &str) -> Option<usize> {
    LEAD_FIELDS.iter().position(|f| *f == name)
}

impl Mapper {
    /// Compile a mapping, listing every unknown field name at once.
    pub fn new(config: &MappingConfig, defaults: &Defaults) -> Result<Self, Vec<MappingError>> {
        let mut errors = Vec::new();
        let known = LEAD_FIELDS.join(", ");
        let unknown = |key: String, field: &str| MappingError::UnknownField {
            key,
            field: field.to_string(),
            known: known.clone(),
        };
        let mut explicit = HashMap::new();
        for (header, field) in &config.columns {
            match field_index(field) {
                Some(i) => {
                    explicit.insert(fold_key(header), i);
                }
                None => errors.push(unknown(format!("columns.{header}"), field)),
            }
        }
        let mut aliases = HashMap::new();
        // User aliases first so they win over built-ins.
        for (field, list) in &config.aliases {
            match field_index(field) {
                Some(i) => {
                    for a in list {
                        aliases.entry(fold_key(a)).or_insert((TIER_USER, i));
                    }
                }
                None => errors.push(unknown(format!("aliases.{field}"), field)),
            }
        }
        for (field, list) in BUILTIN_ALIASES {
            let i = field_index(field).expect("built-in alias names a lead field");
            for a in *list {
                aliases.entry(a.to_string()).or_insert((TIER_BUILTIN, i));
            }
        }
        let mut values = vec![HashMap::new(); LEAD_FIELDS.len()];
        let status = field_index("status").expect("status is a lead field");
        for (k, v) in BUILTIN_STATUS {
            values[status].insert(k.to_string(), v.to_string());
        }
        for (field, map) in &config.values {
            match field_index(field) {
                Some(i) => {
                    for (k, v) in map {
                        values[i].insert(fold_key(k), v.clone());
                    }
                }
                None => errors.push(unknown(format!("values.{field}"), field)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut dflt = vec![None; LEAD_FIELDS.len()];
        dflt[field_index("project").expect("field")] = defaults.project.clone();
        // No default status here: a row that does not say must not reset a
        // project link's status; new links get `defaults.status` in dedupe.
        dflt[field_index("owner").expect("field")] = defaults.owner.clone();
        Ok(Self {
            explicit,
            aliases,
            ignore: config.ignore.iter().map(|s| fold_key(s)).collect(),
            values,
            keep_extras: config.keep_extras,
            defaults: dflt,
        })
    }

    /// This mapping with a source's own `(source field, lead field)`
    /// defaults (a CRM's field names). The pipeline's `columns` and
    /// `aliases` still win; the defaults win over built-in aliases, also
    /// when both name different columns for one field.
    pub fn with_source_aliases(&self, defaults: &[(&str, &str)]) -> Result<Self, MappingError> {
        let mut m = self.clone();
        for (header, field) in defaults {
            let i = field_index(field).ok_or_else(|| MappingError::UnknownField {
                key: format!("source default {header}"),
                field: field.to_string(),
                known: LEAD_FIELDS.join(", "),
            })?;
            let key = fold_key(header);
            if m.aliases.get(&key).is_none_or(|(tier, _)| *tier > TIER_SOURCE) {
                m.aliases.insert(key, (TIER_SOURCE, i));
            }
        }
        Ok(m)
    }

    /// Bind the mapping to one file's headers (data columns, without the
    /// `_source*` meta columns).
    pub fn for_headers(&self, headers: &[String]) -> Result<FileMapping, MappingError> {
        let mut sources: Vec<Option<usize>> = vec![None; LEAD_FIELDS.len()];
        let mut extras = Vec::new();
        // Explicit mappings claim their columns first, then aliases in order.
        let mut claimed = vec![false; headers.len()];
        for (ci, h) in headers.iter().enumerate() {
            if let Some(&fi) = self.explicit.get(&fold_key(h))
                && sources[fi].is_none()
            {
                sources[fi] = Some(ci);
                claimed[ci] = true;
            }
        }
        for (ci, h) in headers.iter().enumerate() {
            if !claimed[ci] && self.ignore.contains(&fold_key(h)) {
                claimed[ci] = true;
            }
        }
        // Then aliases tier by tier (user, source, built-in), each tier in
        // header order, so a stronger tier's column wins a field.
        let tiers: Vec<Option<(u8, usize)>> = headers
            .iter()
            .map(|h| self.aliases.get(&fold_key(h)).copied())
            .collect();
        for tier in [TIER_USER, TIER_SOURCE, TIER_BUILTIN] {
            for ci in 0..headers.len() {
                if claimed[ci] {
                    continue;
                }
                if let Some((t, fi)) = tiers[ci]
                    && t == tier
                    && sources[fi].is_none()
                {
                    sources[fi] = Some(ci);
                    claimed[ci] = true;
                }
            }
        }
        // A source's other fields for an already mapped lead field (a CRM's
        // MobilePhone beside Phone) fill it where the first one is empty.
        let mut fallbacks: Vec<Vec<usize>> = vec![Vec::new(); LEAD_FIELDS.len()];
        for ci in 0..headers.len() {
            if let Some((TIER_SOURCE, fi)) = tiers[ci]
                && !claimed[ci]
                && sources[fi].is_some()
            {
                fallbacks[fi].push(ci);
                claimed[ci] = true;
            }
        }
        if self.keep_extras {
            for (ci, h) in headers.iter().enumerate() {
                if !claimed[ci] {
                    extras.push((ci, serde_json::to_string(h).expect("string serialises")));
                }
            }
        }
        let has = |f: &str| sources[field_index(f).expect("field")].is_some();
        if !["phone", "email", "full_name", "first_name", "last_name"]
            .iter()
            .any(|f| has(f))
        {
            return Err(MappingError::NothingMapped {
                headers: headers.join(", "),
            });
        }
        let mapped = LEAD_FIELDS
            .iter()
            .zip(&sources)
            .filter_map(|(f, s)| s.map(|ci| (f.to_string(), headers[ci].clone())))
            .collect();
        Ok(FileMapping {
            mapper: self.clone(),
            headers: headers.to_vec(),
            sources,
            fallbacks,
            extras,
            mapped,
            seen: (0..SEEN_SHARDS).map(|_| HashMap::default()).collect(),
            id_column: None,
        })
    }
}

/// A mapping bound to one file. Keeps the record-id occurrence counts, so it
/// must see the file's batches in order.
pub struct FileMapping {
    mapper: Mapper,
    headers: Vec<String>,
    sources: Vec<Option<usize>>,
    /// Per field, further columns read where `sources` gives no value.
    fallbacks: Vec<Vec<usize>>,
    /// Unclaimed columns kept in `_extras`: (column, its header as a JSON
    /// string, quoted once here rather than on every row).
    extras: Vec<(usize, String)>,
    /// (lead field, source header) pairs, for logs and `leadflow validate`.
    pub mapped: BTreeMap<String, String>,
    /// Occurrences of each row digest so far, in file order; in
    /// `SEEN_SHARDS` maps by the digest's top bits (`seen_shard`).
    seen: Vec<HashMap<u128, u32, DigestHash>>,
    /// Column whose value is the record id (a CRM's own id), so an edited
    /// record keeps its id instead of getting a new content hash.
    id_column: Option<usize>,
}

/// The record-id numbering's shards (a power of two).
const SEEN_SHARDS: usize = 16;

/// The shard of a digest: its top bits (uniform, as xxh3 output is).
fn seen_shard(d: u128) -> usize {
    (d >> (128 - SEEN_SHARDS.trailing_zeros())) as usize
}

/// Hashes a row digest (an xxh3-128 value, uniform already) by folding its
/// halves. The numbering of a file's digests is the one serial step of the
/// mapping: a streaming xxh3 over each key was most of it (1M rows: 1.2 %
/// of a bench run's CPU samples).
#[derive(Default)]
struct DigestHash;

impl std::hash::BuildHasher for DigestHash {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u128(&mut self, d: u128) {
        self.0 = self.0.rotate_left(5) ^ (d as u64) ^ ((d >> 64) as u64).rotate_left(32);
    }
    // Only u128 keys use this hasher; anything else still hashes well.
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.rotate_left(5) ^ xxhash_rust::xxh3::xxh3_64(bytes);
    }
}

fn trimmed(a: &StringArray, i: usize) -> Option<&str> {
    if a.is_null(i) {
        return None;
    }
    let v = a.value(i).trim();
    if v.is_empty() { None } else { Some(v) }
}

/// "Hot Lead!" -> "hot_lead", into a reused buffer.
fn snake_into(s: &str, out: &mut String) {
    out.clear();
    for c in s.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
}

impl FileMapping {
    /// Use the values of data column `header` as record ids (for sources
    /// with stable ids, like CRMs). The column is then no extra.
    pub fn with_id_column(mut self, header: &str) -> Result<Self, MappingError> {
        let ci =
            self.headers
                .iter()
                .position(|h| h == header)
                .ok_or_else(|| MappingError::NothingMapped {
                    headers: format!("no id column {header:?} in {}", self.headers.join(", ")),
                })?;
        self.extras.retain(|(c, _)| *c != ci);
        self.id_column = Some(ci);
        Ok(self)
    }

    /// Map one raw batch (data columns in header order, then `_source`,
    /// `_source_file`, `_source_row`). `raw_index` is the batch's position in
    /// the run, kept in `_raw_pos` so rejects can show the original row.
    pub fn apply(
        &mut self,
        raw: &RecordBatch,
        raw_index: u32,
        file_key: &str,
    ) -> Result<RecordBatch, MappingError> {
        let mut out = self.apply_all(std::slice::from_ref(raw), raw_index, file_key)?;
        Ok(out.pop().expect("one batch in, one out"))
    }

    /// Map a file's batches in order; batch `k` gets raw index
    /// `first_index + k`. Rows are mapped in parallel on the rayon pool;
    /// only the record-id occurrence numbering runs in file order.
    pub fn apply_all(
        &mut self,
        raws: &[RecordBatch],
        first_index: u32,
        file_key: &str,
    ) -> Result<Vec<RecordBatch>, MappingError> {
        let mapped: Vec<(Vec<ArrayRef>, Vec<u128>)> = raws
            .par_iter()
            .enumerate()
            .map(|(k, raw)| self.map_rows(raw, first_index + k as u32, file_key))
            .collect::<Result<_, _>>()?;
        // Occurrence numbers in file order: each shard of digests counts its
        // own in order, in parallel (one map of a million digests, filled
        // on one core, was a tenth of a second alone); then the id text in
        // parallel.
        let all: Vec<&[u128]> = mapped.iter().map(|(_, d)| d.as_slice()).collect();
        let total: usize = all.iter().map(|d| d.len()).sum();
        let repeats: Vec<Vec<(usize, u32)>> = self
            .seen
            .par_iter_mut()
            .enumerate()
            .map(|(shard, seen)| {
                seen.reserve(total / SEEN_SHARDS);
                let mut repeats = Vec::new();
                for (at, d) in all.iter().flat_map(|d| d.iter()).enumerate() {
                    if seen_shard(*d) == shard {
                        let c = seen.entry(*d).or_insert(0);
                        *c += 1;
                        if *c > 1 {
                            repeats.push((at, *c));
                        }
                    }
                }
                repeats
            })
            .collect();
        let mut flat = vec![1u32; total];
        for (at, c) in repeats.into_iter().flatten() {
            flat[at] = c;
        }
        // Each batch's own run of the file-order counts.
        let mut rest = flat.as_slice();
        let counts: Vec<&[u32]> = all
            .iter()
            .map(|d| {
                let (mine, after) = rest.split_at(d.len());
                rest = after;
                mine
            })
            .collect();
        let id_column = self.id_column;
        mapped
            .into_par_iter()
            .zip(counts)
            .zip(raws.par_iter())
            .map(|(((mut columns, digests), counts), raw)| {
                if let Some(ci) = id_column {
                    columns.insert(3, raw.column(ci).clone());
                    return Ok(RecordBatch::try_new(MAPPED_SCHEMA.clone(), columns)?);
                }
                let mut ids = StringBuilder::with_capacity(digests.len(), digests.len() * 34);
                let mut buf = String::with_capacity(40);
                for (d, &c) in digests.iter().zip(counts) {
                    buf.clear();
                    crate::hex::push_hex(&mut buf, *d, 32);
                    if c > 1 {
                        write!(buf, "-{c}").expect("write to String");
                    }
                    ids.append_value(&buf);
                }
                columns.insert(3, Arc::new(ids.finish()));
                Ok(RecordBatch::try_new(MAPPED_SCHEMA.clone(), columns)?)
            })
            .collect()
    }

    /// Row `i`'s value of lead field `fi`: its column, else the first
    /// fallback column that has one.
    fn value<'a>(&self, data: &[&'a StringArray], fi: usize, i: usize) -> Option<&'a str> {
        self.sources[fi]
            .and_then(|c| trimmed(data[c], i))
            .or_else(|| self.fallbacks[fi].iter().find_map(|&c| trimmed(data[c], i)))
    }

    /// Field `fi` as its source column stands, when mapping would only turn
    /// blanks into nulls: one source column, no value map or status folding,
    /// no value with surrounding whitespace, and no default or fallback to
    /// fill a blank. The raw buffers are shared and only a validity bitmap
    /// is built: most columns of a clean export need no copy (8 of the 12
    /// fields of the 1M bench, ~130 MB of fresh pages).
    fn direct(&self, data: &[&StringArray], fi: usize) -> Option<StringArray> {
        let a = data[self.sources[fi]?];
        if !self.mapper.values[fi].is_empty() {
            return None;
        }
        let mut blanks = false;
        for i in 0..a.len() {
            if a.is_null(i) {
                blanks = true;
                continue;
            }
            let v = a.value(i);
            match (v.chars().next(), v.chars().next_back()) {
                (Some(first), Some(last)) if first.is_whitespace() || last.is_whitespace() => return None,
                (None, _) => blanks = true,
                _ => {}
            }
        }
        if blanks && (self.mapper.defaults[fi].is_some() || !self.fallbacks[fi].is_empty()) {
            return None;
        }
        let nulls = if blanks {
            let offsets = a.value_offsets();
            NullBuffer::from(BooleanBuffer::collect_bool(a.len(), |i| {
                a.is_valid(i) && offsets[i + 1] > offsets[i]
            }))
            .into()
        } else {
            a.nulls().cloned()
        };
        let (offsets, values, _) = a.clone().into_parts();
        Some(StringArray::new(offsets, values, nulls))
    }

    /// The order-free part of mapping one batch: every column but the record
    /// id, plus each row's content digest (the id before numbering).
    fn map_rows(
        &self,
        raw: &RecordBatch,
        raw_index: u32,
        file_key: &str,
    ) -> Result<(Vec<ArrayRef>, Vec<u128>), MappingError> {
        let n = raw.num_rows();
        let col = |name: &'static str| raw.column_by_name(name).ok_or(MappingError::MissingMeta(name));
        let source = col(schema::SOURCE)?.clone();
        let source_file = col(schema::SOURCE_FILE)?.clone();
        let source_row = col(schema::SOURCE_ROW)?.clone();
        let data: Vec<&StringArray> = (0..self.headers.len())
            .map(|i| {
                raw.column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("raw columns are Utf8")
            })
            .collect();

        // Record ids: content hash of the row within its file, plus an
        // occurrence number for exact repeats (added in `apply_all`), so
        // re-reading a changed file gives unchanged rows their old ids.
        // The row's bytes are gathered and hashed in one call: the same
        // digest as feeding them to a streaming hasher (ids must never
        // change), without its per-row state and per-value calls.
        let mut row = Vec::with_capacity(256);
        let digests: Vec<u128> = (0..n)
            .map(|i| {
                row.clear();
                row.extend_from_slice(file_key.as_bytes());
                for a in &data {
                    row.push(0x1f);
                    if !a.is_null(i) {
                        row.extend_from_slice(a.value(i).trim().as_bytes());
                    }
                }
                xxh3_128(&row)
            })
            .collect();

        let idx = |f: &str| field_index(f).expect("field");
        let (fi_first, fi_last, fi_full) = (idx("first_name"), idx("last_name"), idx("full_name"));
        let fi_status = idx("status");
        let mut key = String::new();
        let direct: Vec<Option<StringArray>> = (0..LEAD_FIELDS.len())
            .map(|fi| {
                let copied = [fi_first, fi_last, fi_full, fi_status].contains(&fi);
                if copied { None } else { self.direct(&data, fi) }
            })
            .collect();
        let mut builders: Vec<StringBuilder> = direct
            .iter()
            .map(|d| match d {
                Some(_) => StringBuilder::new(),
                None => StringBuilder::with_capacity(n, n * 12),
            })
            .collect();
        let mut names = NameBuffers::default();
        for i in 0..n {
            // Names: split a single Name column; build full from parts.
            let name = names.lead_name(
                self.value(&data, fi_first, i),
                self.value(&data, fi_last, i),
                self.value(&data, fi_full, i),
            );
            builders[fi_first].append_option(name.first);
            builders[fi_last].append_option(name.last);
            builders[fi_full].append_option(name.full);
            for (fi, b) in builders.iter_mut().enumerate() {
                if fi == fi_first || fi == fi_last || fi == fi_full || direct[fi].is_some() {
                    continue;
                }
                // Values go straight from the raw array into the builder:
                // one copy, no String per value (1M rows x 12 fields).
                let Some(v) = self.value(&data, fi, i) else {
                    b.append_option(self.mapper.defaults[fi].as_deref());
                    continue;
                };
                let map = &self.mapper.values[fi];
                if !map.is_empty() {
                    fold_into(v, &mut key);
                    if let Some(m) = map.get(key.as_str()) {
                        b.append_value(m);
                        continue;
                    }
                }
                if fi == fi_status {
                    snake_into(v, &mut key);
                    b.append_value(&key);
                } else {
                    b.append_value(v);
                }
            }
        }

        let mut extras = StringBuilder::with_capacity(n, n * 16);
        let mut buf: Vec<u8> = Vec::new();
        for i in 0..n {
            buf.clear();
            for (ci, name) in &self.extras {
                if let Some(v) = trimmed(data[*ci], i) {
                    buf.push(if buf.is_empty() { b'{' } else { b',' });
                    buf.extend_from_slice(name.as_bytes());
                    buf.push(b':');
                    serde_json::to_writer(&mut buf, v).expect("string serialises");
                }
            }
            if buf.is_empty() {
                extras.append_null();
            } else {
                buf.push(b'}');
                extras.append_value(std::str::from_utf8(&buf).expect("JSON text is UTF-8"));
            }
        }

        let base = u64::from(raw_index) << 32;
        let raw_pos: UInt64Array = {
            let mut b = UInt64Builder::with_capacity(n);
            for i in 0..n {
                b.append_value(base | i as u64);
            }
            b.finish()
        };
        // The record id column (index 3) is inserted by `apply_all`.
        let mut columns: Vec<ArrayRef> = vec![source, source_file, source_row, Arc::new(raw_pos)];
        columns.extend(builders.iter_mut().zip(direct).map(|(b, d)| match d {
            Some(shared) => Arc::new(shared) as ArrayRef,
            None => Arc::new(b.finish()) as ArrayRef,
        }));
        columns.push(Arc::new(extras.finish()));
        Ok((columns, digests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Schema};

    fn raw_batch(headers: &[&str], rows: &[&[&str]]) -> RecordBatch {
        let mut fields: Vec<Field> = headers
            .iter()
            .map(|h| Field::new(*h, DataType::Utf8, true))
            .collect();
        fields.push(Field::new(schema::SOURCE, DataType::Utf8, false));
        fields.push(Field::new(schema::SOURCE_FILE, DataType::Utf8, false));
        fields.push(Field::new(schema::SOURCE_ROW, DataType::UInt64, false));
        let mut cols: Vec<ArrayRef> = (0..headers.len())
            .map(|c| Arc::new(StringArray::from(rows.iter().map(|r| r[c]).collect::<Vec<_>>())) as ArrayRef)
            .collect();
        cols.push(Arc::new(StringArray::from(vec!["drops"; rows.len()])));
        cols.push(Arc::new(StringArray::from(vec!["a.csv"; rows.len()])));
        cols.push(Arc::new(UInt64Array::from(
            (2..2 + rows.len() as u64).collect::<Vec<_>>(),
        )));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    fn get<'a>(b: &'a RecordBatch, f: &str, i: usize) -> Option<&'a str> {
        let a = b.column_by_name(f).unwrap().as_string::<i32>();
        (!a.is_null(i)).then(|| a.value(i))
    }

    #[test]
    fn maps_aliases_values_defaults_and_extras() {
        let mut cfg = MappingConfig {
            keep_extras: true,
            ..Default::default()
        };
        cfg.values.insert(
            "status".into(),
            [("Interested!!".to_string(), "warm".to_string())].into(),
        );
        let defaults = Defaults {
            project: Some("Riverside".into()),
            ..Default::default()
        };
        let mapper = Mapper::new(&cfg, &defaults).unwrap();
        let headers: Vec<String> = ["Name", "Mobile No.", "E-Mail", "Lead Status", "Notes"]
            .map(String::from)
            .to_vec();
        let mut fm = mapper.for_headers(&headers).unwrap();
        assert_eq!(fm.mapped.get("phone").map(String::as_str), Some("Mobile No."));
        let raw = raw_batch(
            &["Name", "Mobile No.", "E-Mail", "Lead Status", "Notes"],
            &[
                &[
                    "SHARMA, Priya",
                    " 98200 12345 ",
                    "p@x.com",
                    "Hot Lead",
                    "call \"after\" 6",
                ],
                &["Mr. anil  kumar", "", "", "interested", ""],
                &["Zoë", "1", "", "Some Odd Status", ""],
            ],
        );
        let out = fm.apply(&raw, 3, "a.csv").unwrap();
        assert_eq!(get(&out, "first_name", 0), Some("Priya"));
        assert_eq!(get(&out, "last_name", 0), Some("Sharma"));
        assert_eq!(get(&out, "full_name", 0), Some("Priya Sharma"));
        assert_eq!(get(&out, "phone", 0), Some("98200 12345"));
        assert_eq!(get(&out, "status", 0), Some("hot"));
        assert_eq!(get(&out, "status", 1), Some("warm"));
        assert_eq!(get(&out, "status", 2), Some("some_odd_status"));
        assert_eq!(get(&out, "phone", 1), None, "blank becomes null");
        assert_eq!(get(&out, "project", 1), Some("Riverside"));
        assert_eq!(get(&out, "first_name", 1), Some("Anil"));
        assert_eq!(get(&out, "_extras", 0), Some(r#"{"Notes":"call \"after\" 6"}"#));
        assert_eq!(get(&out, "_extras", 1), None);
        let pos = out
            .column_by_name(schema::RAW_POS)
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>();
        assert_eq!(pos.value(2), (3u64 << 32) | 2);
    }

    #[test]
    fn clean_columns_are_shared_and_the_rest_copied() {
        let defaults = Defaults {
            project: Some("Riverside".into()),
            ..Default::default()
        };
        let mapper = Mapper::new(&MappingConfig::default(), &defaults).unwrap();
        let headers = ["Name", "Mobile", "Email", "Company", "Project"];
        let mut fm = mapper.for_headers(headers.map(String::from).as_ref()).unwrap();
        let raw = raw_batch(
            &headers,
            &[
                &["Priya Sharma", "98200 12345", " p@x.com", "Acme", ""],
                &["Anil Kumar", "", "a@x.com", "", "Lakeside"],
            ],
        );
        let out = fm.apply(&raw, 0, "a.csv").unwrap();
        let buffer =
            |b: &RecordBatch, c: &str| b.column_by_name(c).unwrap().as_string::<i32>().values().as_ptr();
        // Clean columns: the raw bytes themselves, blanks as nulls.
        assert_eq!(buffer(&out, "phone"), buffer(&raw, "Mobile"));
        assert_eq!(buffer(&out, "company"), buffer(&raw, "Company"));
        assert_eq!(get(&out, "phone", 0), Some("98200 12345"));
        assert_eq!(get(&out, "phone", 1), None);
        assert_eq!(get(&out, "company", 1), None);
        // A value with a space around it: copied, trimmed.
        assert_ne!(buffer(&out, "email"), buffer(&raw, "Email"));
        assert_eq!(get(&out, "email", 0), Some("p@x.com"));
        // A blank with a default to fill it: copied, filled.
        assert_eq!(get(&out, "project", 0), Some("Riverside"));
        assert_eq!(get(&out, "project", 1), Some("Lakeside"));
        // No source column: all null.
        assert_eq!(get(&out, "city", 0), None);
    }

    #[test]
    fn record_ids_are_stable_and_repeats_are_numbered() {
        let mapper = Mapper::new(&MappingConfig::default(), &Defaults::default()).unwrap();
        let headers: Vec<String> = ["Phone"].map(String::from).to_vec();
        let raw = raw_batch(&["Phone"], &[&["1"], &["2"], &["1"]]);
        let a = mapper
            .for_headers(&headers)
            .unwrap()
            .apply(&raw, 0, "a.csv")
            .unwrap();
        let b = mapper
            .for_headers(&headers)
            .unwrap()
            .apply(&raw, 0, "a.csv")
            .unwrap();
        let c = mapper
            .for_headers(&headers)
            .unwrap()
            .apply(&raw, 0, "b.csv")
            .unwrap();
        let ids = |x: &RecordBatch| {
            (0..3)
                .map(|i| get(x, schema::RECORD_ID, i).unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a)[0], ids(&c)[0], "the file is part of the identity");
        assert_eq!(ids(&a)[2], format!("{}-2", ids(&a)[0]));
        // The id of a row is pinned: file key, then 0x1f + trimmed value per
        // column, XXH3-128 (warehouses hold ids made by earlier versions).
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"a.csv");
        h.update(&[0x1f]);
        h.update(b"1");
        assert_eq!(ids(&a)[0], format!("{:032x}", h.digest128()));
        // The same value from Python's `xxhash.xxh3_128_intdigest`.
        assert_eq!(ids(&a)[0], "33bba5dd8115f8fd30aad5c2f9046966");

        // Repeats are numbered in file order across batches, and on across
        // later batches of the same file.
        let mut fm = mapper.for_headers(&headers).unwrap();
        let batches = [
            raw_batch(&["Phone"], &[&["1"], &["2"]]),
            raw_batch(&["Phone"], &[&["1"], &["3"]]),
            raw_batch(&["Phone"], &[&["2"], &["1"]]),
        ];
        let out = fm.apply_all(&batches, 0, "a.csv").unwrap();
        let later = fm.apply(&batches[1], 3, "a.csv").unwrap();
        let all: Vec<String> = out
            .iter()
            .chain([&later])
            .flat_map(|b| (0..2).map(|i| get(b, schema::RECORD_ID, i).unwrap().to_string()))
            .collect();
        let (one, two) = (&ids(&a)[0], &ids(&a)[1]);
        let want = [
            one.clone(),
            two.clone(),
            format!("{one}-2"),
            all[3].clone(),
            format!("{two}-2"),
            format!("{one}-3"),
            format!("{one}-4"),
            format!("{}-2", all[3]),
        ];
        assert_eq!(all, want);
        assert!(!all[3].contains('-'));
    }

    #[test]
    fn an_id_column_gives_crm_ids_and_hubspot_names_map() {
        // keep_extras is on by default: the id column must still not be one.
        let mapper = Mapper::new(&MappingConfig::default(), &Defaults::default()).unwrap();
        let headers: Vec<String> = ["hubspot_id", "firstname", "email", "hs_lead_status"]
            .map(String::from)
            .to_vec();
        let raw = raw_batch(
            &["hubspot_id", "firstname", "email", "hs_lead_status"],
            &[&["151", "Ada", "a@x.io", "NEW"], &["152", "Bo", "b@x.io", "OPEN"]],
        );
        let out = mapper
            .for_headers(&headers)
            .unwrap()
            .with_id_column("hubspot_id")
            .unwrap()
            .apply(&raw, 0, "hubspot:contacts")
            .unwrap();
        assert_eq!(get(&out, schema::RECORD_ID, 0), Some("151"));
        assert_eq!(get(&out, schema::RECORD_ID, 1), Some("152"));
        assert_eq!(get(&out, "first_name", 0), Some("Ada"));
        assert_eq!(get(&out, "status", 1), Some("new"));
        // The id is the key, not an extra.
        assert!(!get(&out, schema::EXTRAS, 0).unwrap_or("").contains("hubspot_id"));
        assert!(
            mapper
                .for_headers(&headers)
                .unwrap()
                .with_id_column("missing")
                .is_err()
        );
    }

    #[test]
    fn source_defaults_sit_between_pipeline_aliases_and_built_ins() {
        let headers: Vec<String> = ["salesforce_id", "Phone", "MobilePhone", "Title", "Status"]
            .map(String::from)
            .to_vec();
        let sf = [
            ("MobilePhone", "phone"),
            ("Title", "job_title"),
            ("Status", "status"),
        ];
        // Source default beats the built-in `phone` alias of an earlier column.
        let m = Mapper::new(&MappingConfig::default(), &Defaults::default())
            .unwrap()
            .with_source_aliases(&sf)
            .unwrap();
        let fm = m.for_headers(&headers).unwrap();
        assert_eq!(fm.mapped.get("phone").map(String::as_str), Some("MobilePhone"));
        assert_eq!(fm.mapped.get("job_title").map(String::as_str), Some("Title"));
        // The pipeline's alias beats the source default.
        let mut cfg = MappingConfig::default();
        cfg.aliases.insert("phone".into(), vec!["Phone".into()]);
        cfg.aliases.insert("company".into(), vec!["Title".into()]);
        let fm = Mapper::new(&cfg, &Defaults::default())
            .unwrap()
            .with_source_aliases(&sf)
            .unwrap()
            .for_headers(&headers)
            .unwrap();
        assert_eq!(fm.mapped.get("phone").map(String::as_str), Some("Phone"));
        assert_eq!(fm.mapped.get("company").map(String::as_str), Some("Title"));
        assert_eq!(fm.mapped.get("job_title"), None);
        // Explicit columns beat everything.
        let mut cfg = MappingConfig::default();
        cfg.columns.insert("Status".into(), "project".into());
        let fm = Mapper::new(&cfg, &Defaults::default())
            .unwrap()
            .with_source_aliases(&sf)
            .unwrap()
            .for_headers(&headers)
            .unwrap();
        assert_eq!(fm.mapped.get("project").map(String::as_str), Some("Status"));
        assert_eq!(fm.mapped.get("status"), None);
        let bad = Mapper::new(&MappingConfig::default(), &Defaults::default())
            .unwrap()
            .with_source_aliases(&[("X", "colour")]);
        assert!(bad.is_err());
    }

    #[test]
    fn a_second_source_field_fills_an_empty_first_one() {
        let m = Mapper::new(&MappingConfig::default(), &Defaults::default())
            .unwrap()
            .with_source_aliases(&[("Phone", "phone"), ("MobilePhone", "phone")]);
        let headers = ["Phone", "MobilePhone", "Notes"];
        let raw = raw_batch(
            &headers,
            &[
                &["+1 415 555 0100", "+1 415 555 0199", ""],
                &["", "+44 20 7946 0000", "x"],
            ],
        );
        let out = m
            .unwrap()
            .for_headers(&headers.map(String::from))
            .unwrap()
            .apply(&raw, 0, "crm")
            .unwrap();
        assert_eq!(get(&out, "phone", 0), Some("+1 415 555 0100"));
        assert_eq!(get(&out, "phone", 1), Some("+44 20 7946 0000"));
        // The fallback is mapped, not an extra; files (no source defaults)
        // keep a second phone column as an extra.
        assert_eq!(get(&out, schema::EXTRAS, 1), Some(r#"{"Notes":"x"}"#));
        let files = Mapper::new(&MappingConfig::default(), &Defaults::default()).unwrap();
        let out = files
            .for_headers(&headers.map(String::from))
            .unwrap()
            .apply(&raw, 0, "a.csv")
            .unwrap();
        assert_eq!(get(&out, "phone", 1), None);
        assert!(get(&out, schema::EXTRAS, 0).unwrap().contains("MobilePhone"));
    }

    #[test]
    fn explicit_columns_and_errors() {
        let mut cfg = MappingConfig::default();
        cfg.columns.insert("Contact".into(), "phone".into());
        cfg.aliases.insert("phne".into(), vec!["x".into()]);
        cfg.values.insert("colour".into(), BTreeMap::new());
        let errs = Mapper::new(&cfg, &Defaults::default()).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        cfg.aliases.clear();
        cfg.values.clear();
        let m = Mapper::new(&cfg, &Defaults::default()).unwrap();
        let fm = m
            .for_headers(&["Contact".to_string(), "Mobile".to_string()])
            .unwrap();
        assert_eq!(fm.mapped.get("phone").map(String::as_str), Some("Contact"));
        let err = m
            .for_headers(&["Foo".to_string(), "Bar".to_string()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("Foo, Bar"));
    }

    #[test]
    fn digest_hash_counts_occurrences_of_digests_that_differ_in_either_half() {
        use std::hash::BuildHasher as _;
        let (lo, hi) = (7u128, 7u128 << 64);
        assert_ne!(DigestHash.hash_one(lo), DigestHash.hash_one(hi));
        assert_ne!(DigestHash.hash_one(lo), DigestHash.hash_one(lo | hi));
        let mut seen: HashMap<u128, u32, DigestHash> = HashMap::default();
        for d in (0..10_000u128)
            .chain(0..5_000)
            .map(|k| xxh3_128(&k.to_le_bytes()))
        {
            *seen.entry(d).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 10_000);
        assert_eq!(seen.values().filter(|&&c| c == 2).count(), 5_000);
    }
}
