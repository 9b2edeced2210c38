//! DataFusion scalar UDFs over the normaliser array functions.
//!
//! | name | arguments | returns |
//! |---|---|---|
//! | `phone_parse` | phone [, country_hint [, default_region]] | Struct{e164 Utf8, valid Boolean, type Utf8, region Utf8} |
//! | `phone_e164` | phone [, country_hint [, default_region]] | Utf8 |
//! | `email_parse` | email | Struct{email Utf8, key Utf8, valid Boolean} |
//! | `email_normalise` | email | Utf8 |
//! | `email_key` | email | Utf8 |
//! | `email_valid` | email | Boolean |
//! | `country_code` | text | Utf8 |
//! | `url_normalise` | text | Utf8 |
//! | `blank_to_null` | text | Utf8 |
//!
//! Arguments may be columns or literals. Utf8, LargeUtf8, Utf8View, dictionary
//! strings and NULL are coerced to Utf8; the phone argument also accepts integer,
//! float and decimal columns (phone numbers that went through a spreadsheet). With
//! all-literal arguments the result is a scalar.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray, StringBuilder, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use phonenumber::country::Id;

use super::country::{CountryResolver, normalise_country_array};
use super::email::normalise_email_array;
use super::phone::{normalise_phone_array, parse_region};
use super::url::normalise_url_array;

const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Lead normalisation functions",
    description: Some("leadflow normalisers for phone numbers, e-mail addresses, countries and URLs"),
};

/// Every normaliser UDF, configured with the default phone region and the
/// country resolver (with user overrides).
pub fn all(default_region: Option<Id>, resolver: Arc<CountryResolver>) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(PhoneParse::new(default_region)),
        ScalarUDF::new_from_impl(PhoneE164::new(default_region)),
        ScalarUDF::new_from_impl(EmailParse::new()),
        ScalarUDF::new_from_impl(EmailNormalise::new()),
        ScalarUDF::new_from_impl(EmailKey::new()),
        ScalarUDF::new_from_impl(EmailValid::new()),
        ScalarUDF::new_from_impl(CountryCode::new(resolver)),
        ScalarUDF::new_from_impl(UrlNormalise::new()),
        ScalarUDF::new_from_impl(BlankToNull::new()),
    ]
}

fn signature() -> Signature {
    Signature::user_defined(Volatility::Immutable)
}

fn is_stringish(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => is_stringish(v),
        _ => false,
    }
}

/// Coerce every argument to Utf8; `numeric_first` also lets the first argument
/// be a number.
fn coerce_to_utf8(
    name: &str,
    arg_types: &[DataType],
    (min, max): (usize, usize),
    numeric_first: bool,
) -> Result<Vec<DataType>> {
    if !(min..=max).contains(&arg_types.len()) {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return plan_err!("{name} takes {want} arguments, got {}", arg_types.len());
    }
    arg_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let numeric = numeric_first
                && i == 0
                && (t.is_numeric() || matches!(t, DataType::Dictionary(_, v) if v.is_numeric()));
            if is_stringish(t) || numeric {
                Ok(DataType::Utf8)
            } else {
                plan_err!("{name}: argument {} must be a string, got {t}", i + 1)
            }
        })
        .collect()
}

/// Arguments as Utf8 arrays; with all-scalar arguments one row, and the result is
/// turned back into a scalar.
struct Args {
    arrays: Vec<StringArray>,
    all_scalar: bool,
}

impl Args {
    fn new(args: &ScalarFunctionArgs) -> Result<Self> {
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let arrays = args
            .args
            .iter()
            .map(|a| {
                let arr = a.to_array(rows)?;
                let arr = if arr.data_type() == &DataType::Utf8 {
                    arr
                } else {
                    cast(&arr, &DataType::Utf8)?
                };
                Ok(arr.as_string::<i32>().clone())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { arrays, all_scalar })
    }

    fn finish(&self, out: ArrayRef) -> Result<ColumnarValue> {
        if self.all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn doc(description: &str, syntax: &str, example: &str, arguments: &[(&str, &str)]) -> Documentation {
    let mut b = Documentation::builder(DOC_SECTION, description, syntax).with_sql_example(example);
    for (name, text) in arguments {
        b = b.with_argument(*name, *text);
    }
    b.build()
}

// ---------------------------------------------------------------- phone

fn phone_fields() -> Fields {
    Fields::from(vec![
        Field::new("e164", DataType::Utf8, true),
        Field::new("valid", DataType::Boolean, true),
        Field::new("type", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
    ])
}

/// Run the phone normaliser on UDF arguments (phone, hint?, default_region?).
fn phone_columns(args: &Args, registered_default: Option<Id>) -> Result<super::PhoneColumns> {
    let raw = &args.arrays[0];
    let hints = args.arrays.get(1);
    match args.arrays.get(2) {
        None => Ok(normalise_phone_array(raw, hints, registered_default)),
        // a literal default region (the usual case): parsed once
        Some(d) if args.all_scalar || d.is_empty() || all_same(d) => {
            let region = (!d.is_empty() && d.is_valid(0))
                .then(|| parse_region(d.value(0)))
                .flatten()
                .or(registered_default);
            Ok(normalise_phone_array(raw, hints, region))
        }
        // a per-row default region: merge it into the hints
        Some(d) => {
            let mut merged = StringBuilder::with_capacity(raw.len(), raw.len() * 2);
            for i in 0..raw.len() {
                let hint = hints
                    .filter(|h| h.is_valid(i))
                    .map(|h| h.value(i))
                    .filter(|h| parse_region(h).is_some());
                let row_default = d.is_valid(i).then(|| d.value(i));
                merged.append_option(hint.or(row_default));
            }
            Ok(normalise_phone_array(
                raw,
                Some(&merged.finish()),
                registered_default,
            ))
        }
    }
}

fn all_same(a: &StringArray) -> bool {
    a.null_count() == 0 && a.iter().all(|v| v == Some(a.value(0)))
}

/// `phone_parse(phone [, country_hint [, default_region]])` → Struct{e164, valid,
/// type, region}. The region for numbers without a country code is the row's
/// alpha-2 hint, else `default_region`, else the registered default. Null or
/// blank phone → null struct.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PhoneParse {
    signature: Signature,
    default_region: Option<Id>,
}

impl PhoneParse {
    pub fn new(default_region: Option<Id>) -> Self {
        Self {
            signature: signature(),
            default_region,
        }
    }
}

static PHONE_PARSE_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    doc(
        "Parses a phone number with libphonenumber metadata. Returns a struct: `e164` (only for valid numbers), `valid`, `type` (mobile, fixed_line, fixed_line_or_mobile, toll_free, …) and `region` (alpha-2 of the number's country).",
        "phone_parse(phone[, country_hint[, default_region]])",
        "SELECT phone_parse('098765 43210', 'IN')['e164'] -- +919876543210",
        &[
            ("phone", "The phone number as typed."),
            (
                "country_hint",
                "ISO 3166-1 alpha-2 code of the row's country (unknown codes are ignored).",
            ),
            (
                "default_region",
                "Alpha-2 code used when the row has no hint; defaults to the registered default region.",
            ),
        ],
    )
});

impl ScalarUDFImpl for PhoneParse {
    fn name(&self) -> &str {
        "phone_parse"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_to_utf8(self.name(), arg_types, (1, 3), true)
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(phone_fields()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let cols = phone_columns(&a, self.default_region)?;
        let nulls = cols.valid.nulls().cloned();
        let children: Vec<ArrayRef> = vec![
            Arc::new(cols.e164),
            Arc::new(cols.valid),
            Arc::new(cols.kind),
            Arc::new(cols.region),
        ];
        let out = StructArray::try_new(phone_fields(), children, nulls)?;
        a.finish(Arc::new(out))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&PHONE_PARSE_DOC)
    }
}

/// `phone_e164(phone [, country_hint [, default_region]])` → Utf8: the E.164 form
/// of a valid number, else null. Same region rules as [`PhoneParse`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PhoneE164 {
    signature: Signature,
    default_region: Option<Id>,
}

impl PhoneE164 {
    pub fn new(default_region: Option<Id>) -> Self {
        Self {
            signature: signature(),
            default_region,
        }
    }
}

static PHONE_E164_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    doc(
        "E.164 form of a valid phone number; null when the number is blank, unparsable or not valid.",
        "phone_e164(phone[, country_hint[, default_region]])",
        "SELECT phone_e164('098765 43210', NULL, 'IN') -- +919876543210",
        &[
            ("phone", "The phone number as typed."),
            (
                "country_hint",
                "ISO 3166-1 alpha-2 code of the row's country (unknown codes are ignored).",
            ),
            (
                "default_region",
                "Alpha-2 code used when the row has no hint; defaults to the registered default region.",
            ),
        ],
    )
});

impl ScalarUDFImpl for PhoneE164 {
    fn name(&self) -> &str {
        "phone_e164"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_to_utf8(self.name(), arg_types, (1, 3), true)
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let cols = phone_columns(&a, self.default_region)?;
        a.finish(Arc::new(cols.e164))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&PHONE_E164_DOC)
    }
}

// ---------------------------------------------------------------- e-mail

fn email_fields() -> Fields {
    Fields::from(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("key", DataType::Utf8, true),
        Field::new("valid", DataType::Boolean, true),
    ])
}

/// One-argument string UDFs share this shape.
macro_rules! one_arg_udf {
    (
        $(#[$meta:meta])*
        $ty:ident, $name:literal, $ret:expr, $doc:ident, [$desc:literal, $syntax:literal, $example:literal, $arg:literal, $arg_desc:literal],
        |$self_:ident, $input:ident| $body:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, PartialEq, Eq, Hash)]
        pub struct $ty {
            signature: Signature,
        }

        impl $ty {
            pub fn new() -> Self {
                Self { signature: signature() }
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        static $doc: LazyLock<Documentation> =
            LazyLock::new(|| doc($desc, $syntax, $example, &[($arg, $arg_desc)]));

        impl ScalarUDFImpl for $ty {
            fn name(&self) -> &str {
                $name
            }
            fn signature(&self) -> &Signature {
                &self.signature
            }
            fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
                coerce_to_utf8(self.name(), arg_types, (1, 1), false)
            }
            fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
                Ok($ret)
            }
            fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
                let a = Args::new(&args)?;
                let $self_ = self;
                let $input = &a.arrays[0];
                let out: ArrayRef = $body;
                a.finish(out)
            }
            fn documentation(&self) -> Option<&Documentation> {
                Some(&$doc)
            }
        }
    };
}

one_arg_udf!(
    /// `email_parse(email)` → Struct{email, key, valid}: the cleaned address (also
    /// when invalid), the dedupe key (valid only) and validity. Null or blank
    /// input → null struct.
    EmailParse, "email_parse", DataType::Struct(email_fields()), EMAIL_PARSE_DOC,
    [
        "Cleans and validates an e-mail address. Returns a struct: `email` (cleaned, lower-case, also when invalid), `key` (dedupe key, valid addresses only: +tag dropped; for Gmail also dots, domain gmail.com) and `valid`.",
        "email_parse(email)",
        "SELECT email_parse('Mailto:John.Doe+x@Gmail.com')['key'] -- johndoe@gmail.com",
        "email", "The e-mail address as typed."
    ],
    |_this, input| {
        let cols = normalise_email_array(input);
        let nulls = cols.valid.nulls().cloned();
        let children: Vec<ArrayRef> =
            vec![Arc::new(cols.email), Arc::new(cols.key), Arc::new(cols.valid)];
        Arc::new(StructArray::try_new(email_fields(), children, nulls)?)
    }
);

one_arg_udf!(
    /// `email_normalise(email)` → Utf8: the cleaned, lower-cased address (also when
    /// invalid); null for null/blank input.
    EmailNormalise, "email_normalise", DataType::Utf8, EMAIL_NORMALISE_DOC,
    [
        "Cleaned, lower-cased e-mail address (mailto:, <>, quotes and display names removed); returned also when invalid.",
        "email_normalise(email)",
        "SELECT email_normalise(' <John.Doe@Example.COM> ') -- john.doe@example.com",
        "email", "The e-mail address as typed."
    ],
    |_this, input| Arc::new(normalise_email_array(input).email)
);

one_arg_udf!(
    /// `email_key(email)` → Utf8: dedupe key of a valid address, else null.
    EmailKey, "email_key", DataType::Utf8, EMAIL_KEY_DOC,
    [
        "Dedupe key of a valid e-mail address: lower-case, +tag dropped; for gmail.com/googlemail.com also dots dropped and domain gmail.com. Null when invalid.",
        "email_key(email)",
        "SELECT email_key('John.Doe+x@Gmail.com') -- johndoe@gmail.com",
        "email", "The e-mail address as typed."
    ],
    |_this, input| Arc::new(normalise_email_array(input).key)
);

one_arg_udf!(
    /// `email_valid(email)` → Boolean; null for null/blank input.
    EmailValid, "email_valid", DataType::Boolean, EMAIL_VALID_DOC,
    [
        "Whether an e-mail address is valid (RFC syntax plus practical rules: a dotted domain, a TLD of 2+ letters, no spaces, no '..'). Null for blank input.",
        "email_valid(email)",
        "SELECT email_valid('john..doe@x.com') -- false",
        "email", "The e-mail address as typed."
    ],
    |_this, input| {
        let valid: BooleanArray = normalise_email_array(input).valid;
        Arc::new(valid)
    }
);

one_arg_udf!(
    /// `url_normalise(text)` → Utf8: "www.Acme.io" → "https://www.acme.io"; null
    /// when blank or not a URL.
    UrlNormalise, "url_normalise", DataType::Utf8, URL_NORMALISE_DOC,
    [
        "Normalises a website: adds https:// when no scheme (keeps explicit http://), lower-cases the host, drops a lone trailing '/' and the fragment. Null when blank or not a URL.",
        "url_normalise(text)",
        "SELECT url_normalise('www.Acme.io') -- https://www.acme.io",
        "text", "The website as typed."
    ],
    |_this, input| Arc::new(normalise_url_array(input))
);

one_arg_udf!(
    /// `blank_to_null(text)` → Utf8: null for empty/whitespace text and the
    /// placeholders in [`super::NULL_TOKENS`]; other values unchanged.
    BlankToNull, "blank_to_null", DataType::Utf8, BLANK_TO_NULL_DOC,
    [
        "Null for empty or whitespace-only text and for the placeholders n/a, na, null, none, nil, -, --, #n/a (any case, surrounding spaces ignored); other values unchanged.",
        "blank_to_null(text)",
        "SELECT blank_to_null(' N/A ') -- NULL",
        "text", "Any text."
    ],
    |_this, input| Arc::new(super::blank_to_null(input))
);

/// `country_code(text)` → Utf8: ISO 3166-1 alpha-2 of a country name/code
/// (registered overrides first), else null.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CountryCode {
    signature: Signature,
    resolver: Arc<CountryResolver>,
}

impl CountryCode {
    pub fn new(resolver: Arc<CountryResolver>) -> Self {
        Self {
            signature: signature(),
            resolver,
        }
    }
}

static COUNTRY_CODE_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    doc(
        "ISO 3166-1 alpha-2 code (upper case) of a country given as alpha-2, alpha-3, English or native name, in any case, spacing, punctuation or diacritics; the registered country overrides are checked first. Null when unknown.",
        "country_code(text)",
        "SELECT country_code('hong kong sar') -- HK",
        &[("text", "The country as typed.")],
    )
});

impl ScalarUDFImpl for CountryCode {
    fn name(&self) -> &str {
        "country_code"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_to_utf8(self.name(), arg_types, (1, 1), false)
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let Some(input) = a.arrays.first() else {
            return exec_err!("country_code takes one argument");
        };
        a.finish(Arc::new(normalise_country_array(&self.resolver, input)))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&COUNTRY_CODE_DOC)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    use arrow::array::{AsArray, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::FunctionRegistry;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::super::{NormaliseOptions, register_udfs};

    /// A minimal executor: the crate has no async runtime dependency, and these
    /// plans (single partition) need none.
    fn block_on<F: Future>(fut: F) -> F::Output {
        struct Unpark(Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return v,
                Poll::Pending => thread::park(),
            }
        }
    }

    fn ctx(default_region: Option<&str>) -> SessionContext {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let mut overrides = BTreeMap::new();
        overrides.insert("Blighty".to_owned(), "GB".to_owned());
        let opts = NormaliseOptions {
            default_region: default_region.map(str::to_owned),
            country_overrides: overrides,
        };
        register_udfs(&ctx, &opts).unwrap();
        ctx
    }

    fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        block_on(async { ctx.sql(sql).await?.collect().await }).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn strings(batch: &RecordBatch, col: usize) -> Vec<Option<String>> {
        let arr = arrow::compute::cast(batch.column(col), &DataType::Utf8).unwrap();
        arr.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    }

    #[test]
    fn literals() {
        let ctx = ctx(None);
        let b = query(
            &ctx,
            "SELECT phone_e164('098765 43210', NULL, 'IN'), country_code('hong kong sar'), \
             email_key('John.Doe+x@Gmail.com'), url_normalise('www.acme.io'), \
             blank_to_null(' n/a '), email_valid('john..doe@x.com'), \
             email_normalise('<John@Acme.IO>'), country_code('blighty'), \
             phone_e164('(618) 555-7477', 'US'), phone_e164('9876543210')",
        );
        assert_eq!(b.len(), 1);
        let row: Vec<Option<String>> = (0..10).map(|c| strings(&b[0], c)[0].clone()).collect();
        let want = [
            Some("+919876543210"),
            Some("HK"),
            Some("johndoe@gmail.com"),
            Some("https://www.acme.io"),
            None,
            Some("false"),
            Some("john@acme.io"),
            Some("GB"),
            Some("+16185557477"),
            None, // no hint, no default region registered
        ];
        assert_eq!(row, want.map(|v| v.map(str::to_owned)).to_vec());
    }

    #[test]
    fn registered_default_region() {
        let ctx = ctx(Some("IN"));
        let b = query(
            &ctx,
            "SELECT phone_e164('9876543210'), phone_parse('9876543210')['type']",
        );
        assert_eq!(strings(&b[0], 0)[0].as_deref(), Some("+919876543210"));
        assert_eq!(strings(&b[0], 1)[0].as_deref(), Some("mobile"));
    }

    #[test]
    fn struct_fields_on_a_table() {
        let ctx = ctx(Some("IN"));
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, true),
            Field::new("c", DataType::Utf8, true),
            Field::new("e", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("(020) 7946 0958"),
                    Some("098765 43210"),
                    Some("54"),
                    None,
                    Some("(618) 555-7477"),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("GB"),
                    None,
                    Some("IN"),
                    Some("GB"),
                    Some("US"),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("john@"),
                    Some("A.B+c@googlemail.com"),
                    None,
                    Some(" "),
                    Some("x@acme.io"),
                ])),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("leads", Arc::new(table)).unwrap();
        let b = query(
            &ctx,
            "SELECT phone_parse(p, c)['e164'], phone_parse(p, c)['valid'], \
             phone_parse(p, c)['type'], phone_parse(p, c)['region'], \
             email_parse(e)['key'], email_parse(e)['valid'], phone_e164(p, c, 'US') \
             FROM leads",
        );
        let b = arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
        let s = |c| strings(&b, c);
        let o = |v: &[Option<&str>]| v.iter().map(|x| x.map(str::to_owned)).collect::<Vec<_>>();
        assert_eq!(
            s(0),
            o(&[
                Some("+442079460958"),
                Some("+919876543210"),
                None,
                None,
                Some("+16185557477")
            ])
        );
        assert_eq!(
            s(1),
            o(&[Some("true"), Some("true"), Some("false"), None, Some("true")])
        );
        assert_eq!(
            s(2),
            o(&[
                Some("fixed_line"),
                Some("mobile"),
                None,
                None,
                Some("fixed_line_or_mobile")
            ])
        );
        assert_eq!(s(3), o(&[Some("GB"), Some("IN"), None, None, Some("US")]));
        assert_eq!(
            s(4),
            o(&[None, Some("ab@gmail.com"), None, None, Some("x@acme.io")])
        );
        assert_eq!(s(5), o(&[Some("false"), Some("true"), None, None, Some("true")]));
        // the literal default region US applies to row 1 (no hint): not a US number
        assert_eq!(s(6)[1], None);
        assert_eq!(s(6)[0].as_deref(), Some("+442079460958"));
    }

    #[test]
    fn plan_errors() {
        let ctx = ctx(None);
        for sql in [
            "SELECT country_code('a', 'b')",
            "SELECT email_key(1)",
            "SELECT phone_e164('1', 'IN', 'IN', 'IN')",
        ] {
            let r = block_on(async { ctx.sql(sql).await });
            assert!(r.is_err(), "{sql} should fail to plan");
        }
        // a numeric phone column (spreadsheet damage) is accepted
        let b = query(&ctx, "SELECT phone_e164(919876543210, NULL, 'IN')");
        assert_eq!(strings(&b[0], 0)[0].as_deref(), Some("+919876543210"));
    }

    #[test]
    fn documented() {
        let ctx = ctx(None);
        for name in [
            "phone_parse",
            "phone_e164",
            "email_parse",
            "email_normalise",
            "email_key",
            "email_valid",
            "country_code",
            "url_normalise",
            "blank_to_null",
        ] {
            let f = ctx.udf(name).unwrap();
            assert!(f.documentation().is_some(), "{name}");
        }
    }
}
