//! The validator: rules compiled once, run per batch over whole columns.

use arrow::array::{Array, AsArray, BooleanArray, StringArray};
use arrow::record_batch::RecordBatch;

use super::config::{OnInvalid, ValidateConfig};
use crate::schema::LEAD_FIELDS;

/// A rule that names something that does not exist.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("validate.{key}: unknown lead field `{field}` (known: {known})")]
    UnknownField {
        key: String,
        field: String,
        known: String,
    },
    #[error("validate.require_any: an empty group can never be satisfied")]
    EmptyGroup,
    #[error("validated batch is missing column `{0}`")]
    MissingColumn(String),
}

/// Why a row failed: a stable code (for metrics and grouping) and a message
/// a person can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

impl Reason {
    fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The outcome for one batch: which rows pass, and the reasons of the others
/// (row index, reasons), in row order.
#[derive(Debug)]
pub struct Validation {
    pub keep: BooleanArray,
    pub failures: Vec<(usize, Vec<Reason>)>,
}

/// Compiled rules.
#[derive(Debug, Clone)]
pub struct Validator {
    config: ValidateConfig,
}

/// For a lead field, the column that holds its usable value after normalise,
/// and the column holding what the source said.
fn columns_of(field: &str) -> (&str, &str) {
    match field {
        "phone" => ("phone", "phone_raw"),
        "email" => ("email_key", "email_raw"),
        "country" => ("country", "country_raw"),
        other => (other, other),
    }
}

impl Validator {
    pub fn new(config: &ValidateConfig) -> Result<Self, Vec<ValidateError>> {
        let mut errors = Vec::new();
        let known = LEAD_FIELDS.join(", ");
        let mut check = |key: String, field: &str| {
            if !LEAD_FIELDS.contains(&field) {
                errors.push(ValidateError::UnknownField {
                    key,
                    field: field.to_string(),
                    known: known.clone(),
                });
            }
        };
        for f in &config.required {
            check("required".into(), f);
        }
        for group in &config.require_any {
            for f in group {
                check("require_any".into(), f);
            }
        }
        for f in config.max_length.keys() {
            check(format!("max_length.{f}"), f);
        }
        if config.require_any.iter().any(Vec::is_empty) {
            errors.push(ValidateError::EmptyGroup);
        }
        if errors.is_empty() {
            Ok(Self {
                config: config.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// Evaluate every rule on a normalised batch.
    pub fn validate(&self, batch: &RecordBatch) -> Result<Validation, ValidateError> {
        let n = batch.num_rows();
        let strings = |name: &str| -> Result<&StringArray, ValidateError> {
            batch
                .column_by_name(name)
                .map(|c| c.as_string::<i32>())
                .ok_or_else(|| ValidateError::MissingColumn(name.to_string()))
        };
        let bools = |name: &str| -> Result<&BooleanArray, ValidateError> {
            batch
                .column_by_name(name)
                .map(|c| c.as_boolean())
                .ok_or_else(|| ValidateError::MissingColumn(name.to_string()))
        };
        let present = |a: &StringArray, i: usize| !a.is_null(i) && !a.value(i).is_empty();
        let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); n];

        for f in &self.config.required {
            let (usable, _) = columns_of(f);
            let a = strings(usable)?;
            for (i, r) in reasons.iter_mut().enumerate() {
                if !present(a, i) {
                    r.push(Reason::new(
                        format!("required:{f}"),
                        format!("{f} is required but empty"),
                    ));
                }
            }
        }

        let (phone, phone_raw, phone_valid) =
            (strings("phone")?, strings("phone_raw")?, bools("phone_valid")?);
        let (email_raw, email, email_valid) =
            (strings("email_raw")?, strings("email")?, bools("email_valid")?);
        for (i, r) in reasons.iter_mut().enumerate() {
            let bad_phone = present(phone_raw, i) && !(phone_valid.is_valid(i) && phone_valid.value(i));
            if bad_phone && self.config.invalid_phone == OnInvalid::Reject {
                r.push(Reason::new(
                    "invalid_phone",
                    format!("phone {:?} is not a valid phone number", phone_raw.value(i)),
                ));
            }
            let bad_email = present(email_raw, i) && !(email_valid.is_valid(i) && email_valid.value(i));
            if bad_email && self.config.invalid_email == OnInvalid::Reject {
                let shown = if email.is_null(i) {
                    email_raw.value(i)
                } else {
                    email.value(i)
                };
                r.push(Reason::new(
                    "invalid_email",
                    format!("e-mail {shown:?} is not a valid address"),
                ));
            }
        }
        let _ = phone;

        for group in &self.config.require_any {
            let cols: Vec<(&StringArray, &StringArray)> = group
                .iter()
                .map(|f| {
                    let (usable, raw) = columns_of(f);
                    Ok((strings(usable)?, strings(raw)?))
                })
                .collect::<Result<_, ValidateError>>()?;
            let code = format!("require_any:{}", group.join("|"));
            for (i, r) in reasons.iter_mut().enumerate() {
                if !cols.iter().any(|(usable, _)| present(usable, i)) {
                    // Say whether the fields were empty or present but unusable.
                    let given: Vec<&str> = group
                        .iter()
                        .zip(&cols)
                        .filter(|(_, (_, raw))| present(raw, i))
                        .map(|(f, _)| f.as_str())
                        .collect();
                    let message = if given.is_empty() {
                        format!("needs at least one of {}; all are empty", group.join(", "))
                    } else {
                        format!(
                            "needs at least one usable {}; {} given but invalid",
                            group.join(" or "),
                            given.join(", ")
                        )
                    };
                    r.push(Reason::new(code.clone(), message));
                }
            }
        }

        for (f, max) in &self.config.max_length {
            let (_, raw) = columns_of(f);
            let a = strings(raw)?;
            for (i, r) in reasons.iter_mut().enumerate() {
                if present(a, i) {
                    let len = a.value(i).chars().count();
                    if len > *max {
                        r.push(Reason::new(
                            format!("too_long:{f}"),
                            format!("{f} has {len} characters, more than {max}"),
                        ));
                    }
                }
            }
        }

        let keep = BooleanArray::from(reasons.iter().map(Vec::is_empty).collect::<Vec<_>>());
        let failures = reasons
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .collect();
        Ok(Validation { keep, failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray};
    use arrow::datatypes::{DataType, Field, Schema};

    type Row<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<bool>,
        Option<&'a str>,
        Option<&'a str>,
        Option<bool>,
        Option<&'a str>,
    );

    fn batch(rows: &[Row<'_>]) -> RecordBatch {
        fn s<'a>(rows: &[Row<'a>], f: impl Fn(&Row<'a>) -> Option<&'a str>) -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        }
        let fields = [
            "phone",
            "phone_raw",
            "phone_valid",
            "email",
            "email_raw",
            "email_valid",
            "email_key",
            "project",
            "first_name",
        ];
        let schema = Schema::new(
            fields
                .iter()
                .map(|f| {
                    Field::new(
                        *f,
                        if f.ends_with("valid") {
                            DataType::Boolean
                        } else {
                            DataType::Utf8
                        },
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let cols: Vec<ArrayRef> = vec![
            s(rows, |r| r.0),
            s(rows, |r| r.1),
            Arc::new(BooleanArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            s(rows, |r| r.3),
            s(rows, |r| r.4),
            Arc::new(BooleanArray::from(rows.iter().map(|r| r.5).collect::<Vec<_>>())),
            s(rows, |r| if r.5 == Some(true) { r.3 } else { None }),
            s(rows, |r| r.6),
            s(rows, |_| Some("Priyadarshini")),
        ];
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    #[test]
    fn reports_every_reason_per_row() {
        let mut cfg = ValidateConfig {
            invalid_phone: OnInvalid::Reject,
            invalid_email: OnInvalid::Reject,
            ..Default::default()
        };
        cfg.required.push("project".into());
        cfg.max_length.insert("first_name".into(), 5);
        let v = Validator::new(&cfg).unwrap();
        let b = batch(&[
            (
                Some("+919820012345"),
                Some("98200 12345"),
                Some(true),
                None,
                None,
                None,
                Some("R"),
            ),
            (
                None,
                Some("12345"),
                Some(false),
                Some("john@"),
                Some("john@"),
                Some(false),
                None,
            ),
            (
                None,
                None,
                None,
                Some("a@b.co"),
                Some("a@b.co"),
                Some(true),
                Some("R"),
            ),
            (None, None, None, None, None, None, Some("R")),
        ]);
        let out = v.validate(&b).unwrap();
        let codes: Vec<Vec<&str>> = out
            .failures
            .iter()
            .map(|(_, r)| r.iter().map(|x| x.code.as_str()).collect())
            .collect();
        assert_eq!(
            out.failures.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(codes[0], vec!["too_long:first_name"]);
        assert_eq!(
            codes[1],
            vec![
                "required:project",
                "invalid_phone",
                "invalid_email",
                "require_any:phone|email",
                "too_long:first_name"
            ]
        );
        assert!(out.failures[1].1[3].message.contains("given but invalid"));
        assert!(
            out.failures[3]
                .1
                .iter()
                .any(|r| r.message.contains("all are empty"))
        );
    }

    #[test]
    fn keep_mode_lets_valid_contact_through() {
        let cfg = ValidateConfig {
            invalid_phone: OnInvalid::Keep,
            ..Default::default()
        };
        let v = Validator::new(&cfg).unwrap();
        let b = batch(&[(
            None,
            Some("12345"),
            Some(false),
            Some("a@b.co"),
            Some("a@b.co"),
            Some(true),
            None,
        )]);
        let out = v.validate(&b).unwrap();
        assert!(out.failures.is_empty());
        assert!(out.keep.value(0));
    }

    #[test]
    fn unknown_fields_listed_together() {
        let cfg = ValidateConfig {
            required: vec!["projekt".into()],
            require_any: vec![vec!["fone".into()], vec![]],
            ..Default::default()
        };
        assert_eq!(Validator::new(&cfg).unwrap_err().len(), 3);
    }
}
