//! The `hubspot` source: contacts or leads from HubSpot CRM v3. A first
//! run lists every record; later runs search by `lastmodifieddate` from the
//! saved cursor (minus a lookback), so only changed records are read.

mod config;
mod source;

pub use config::{
    DEFAULT_ALIASES, DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, HubSpotConfig, HubSpotObject, ID_COLUMN,
};
pub use source::HubSpotSource;
