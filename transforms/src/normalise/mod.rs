//! Normalisers for lead fields: phone numbers (E.164), e-mail addresses, country
//! names (ISO 3166-1 alpha-2), website URLs and blank-ish text.
//!
//! Each comes in three forms:
//! - a plain function on `&str` (single values, tests): [`normalise_phone`],
//!   [`normalise_email`], [`CountryResolver::resolve`], [`normalise_url`];
//! - an array function on a whole Arrow `StringArray` (the fast path):
//!   [`normalise_phone_array`], [`normalise_email_array`],
//!   [`normalise_country_array`], [`normalise_url_array`], [`blank_to_null`];
//! - DataFusion scalar UDFs wrapping the array functions, registered with
//!   [`register_udfs`] so that users' own `sql:` stages can call them (see [`udf`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod country;
pub mod email;
pub mod phone;
pub mod udf;
pub mod url;

pub use self::url::{normalise_url, normalise_url_array};
pub use country::{CountryResolver, normalise_country_array};
pub use email::{EmailColumns, EmailResult, normalise_email, normalise_email_array};
pub use phone::{PhoneColumns, PhoneResult, normalise_phone, normalise_phone_array, parse_region};

/// Errors from building normalisers.
#[derive(Debug, thiserror::Error)]
pub enum NormaliseError {
    /// `default_region` is not an alpha-2 code known to the phone metadata.
    #[error(
        "unknown default phone region {0:?}: expected an ISO 3166-1 alpha-2 code such as \"IN\" or \"GB\""
    )]
    UnknownRegion(String),
    /// Country overrides whose target is not an ISO 3166-1 alpha-2 code (all listed).
    #[error("invalid country overrides (targets must be ISO 3166-1 alpha-2 codes): {}", .0.join("; "))]
    CountryOverrides(Vec<String>),
}

/// Settings for the registered UDFs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NormaliseOptions {
    /// Region (ISO 3166-1 alpha-2) for phone numbers typed without a country code
    /// when the row has no country hint, e.g. "IN".
    pub default_region: Option<String>,
    /// Extra country names → alpha-2 code, checked before the built-in table, e.g.
    /// `{"Blighty": "GB"}`.
    pub country_overrides: BTreeMap<String, String>,
}

/// Placeholder texts treated as missing (compared case-insensitively, after trim).
pub const NULL_TOKENS: [&str; 8] = ["n/a", "na", "null", "none", "nil", "-", "--", "#n/a"];

/// Is `s` (already trimmed) one of [`NULL_TOKENS`]?
pub(crate) fn is_null_token(s: &str) -> bool {
    s.len() <= 4 && NULL_TOKENS.iter().any(|t| t.eq_ignore_ascii_case(s))
}

/// Null out values that are empty, whitespace only, or (case-insensitively, after
/// trimming) one of [`NULL_TOKENS`]: "n/a", "na", "null", "none", "nil", "-",
/// "--", "#n/a". Other values are kept exactly as they are (not trimmed). The
/// value buffers are reused; only the validity bitmap is rebuilt.
pub fn blank_to_null(raw: &StringArray) -> StringArray {
    let keep = BooleanBuffer::collect_bool(raw.len(), |i| {
        raw.is_valid(i) && {
            let t = raw.value(i).trim();
            !t.is_empty() && !is_null_token(t)
        }
    });
    let nulls = NullBuffer::new(keep);
    if nulls.null_count() == raw.null_count() {
        return raw.clone();
    }
    let (offsets, values, _) = raw.clone().into_parts();
    StringArray::new(offsets, values, Some(nulls))
}

/// The normaliser UDFs built from `opts`, ready to register.
pub fn udfs(opts: &NormaliseOptions) -> Result<Vec<ScalarUDF>, NormaliseError> {
    let default_region = match opts.default_region.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(code) => Some(parse_region(code).ok_or_else(|| NormaliseError::UnknownRegion(code.to_owned()))?),
    };
    let resolver = Arc::new(CountryResolver::new(&opts.country_overrides)?);
    Ok(udf::all(default_region, resolver))
}

/// Register every normaliser UDF (`phone_parse`, `phone_e164`, `email_parse`,
/// `email_normalise`, `email_key`, `email_valid`, `country_code`,
/// `url_normalise`, `blank_to_null`) into `ctx`.
pub fn register_udfs(ctx: &SessionContext, opts: &NormaliseOptions) -> Result<(), NormaliseError> {
    for f in udfs(opts)? {
        ctx.register_udf(f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_to_null_rules() {
        let arr = StringArray::from(vec![
            Some("x"),
            None,
            Some(""),
            Some("   "),
            Some("N/A"),
            Some(" null "),
            Some("None"),
            Some("#N/A"),
            Some("--"),
            Some("-"),
            Some("nil"),
            Some("na"),
            Some(" keep me "),
            Some("nan"),
            Some("n.a."),
        ]);
        let out = blank_to_null(&arr);
        let got: Vec<Option<&str>> = out.iter().collect();
        let mut want = vec![Some("x")];
        want.extend([None; 11]);
        want.extend([Some(" keep me "), Some("nan"), Some("n.a.")]);
        assert_eq!(got, want);
        // nothing to null: same array back
        let clean = StringArray::from(vec![Some("a"), None]);
        assert_eq!(blank_to_null(&clean), clean);
        // sliced input
        let sliced = arr.slice(2, 2);
        assert_eq!(blank_to_null(&sliced).null_count(), 2);
    }

    #[test]
    fn options_errors() {
        let opts = NormaliseOptions {
            default_region: Some("XX".into()),
            ..Default::default()
        };
        assert!(matches!(udfs(&opts), Err(NormaliseError::UnknownRegion(_))));
        let mut overrides = BTreeMap::new();
        overrides.insert("a".to_owned(), "ZZ".to_owned());
        overrides.insert("b".to_owned(), "QQ".to_owned());
        let opts = NormaliseOptions {
            default_region: Some("in".into()),
            country_overrides: overrides,
        };
        let err = udfs(&opts).unwrap_err().to_string();
        assert!(err.contains("ZZ") && err.contains("QQ"), "{err}");
    }
}
