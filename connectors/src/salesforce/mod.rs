//! The `salesforce` source: Lead records over the REST API. OAuth refresh
//! token or JWT bearer flow; calls go to the `instance_url` the token
//! endpoint names. A first run reads every lead; later runs query
//! `SystemModstamp >=` the saved cursor (minus a lookback), following
//! `nextRecordsUrl`. A 401 `INVALID_SESSION_ID` gets a new token once; a
//! 403 `REQUEST_LIMIT_EXCEEDED` stops the run, the next run resumes.

mod config;
mod source;

pub use config::{DEFAULT_ALIASES, DEFAULT_LOGIN_URL, ID_COLUMN, OBJECT, SalesforceConfig};
pub use source::SalesforceSource;
