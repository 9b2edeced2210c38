//! The `zoho` source: Zoho CRM records (Leads by default) over the REST
//! API. Tokens come from the accounts server of the account's data centre,
//! API calls go to the `api_domain` the token response names, with
//! `Authorization: Zoho-oauthtoken`. A first run lists every record sorted
//! by `Modified_Time`; later runs send `If-Modified-Since` (the saved
//! cursor minus a lookback). Paging uses `page` up to Zoho's discrete
//! limit, then `page_token`. 204 and 304 mean "nothing".

mod config;
mod source;

pub use config::{DEFAULT_ALIASES, ID_COLUMN, ZohoConfig, ZohoDataCentre};
pub use source::ZohoSource;
