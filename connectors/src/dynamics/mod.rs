//! The `dynamics` source: Dynamics 365 / Dataverse `leads` over the Web
//! API (OData v4). Client-credentials tokens from Azure AD with scope
//! `<org url>/.default`; `$select`, `$orderby=modifiedon asc`, and from the
//! second run `$filter=modifiedon gt` the saved cursor minus a lookback;
//! pages of `Prefer: odata.maxpagesize` followed by `@odata.nextLink`.
//! Option sets (status, source, ...) read as their labels.
//!
//! With `change_tracking: true`: `Prefer: odata.track-changes` (no
//! `$filter`/`$orderby`), the `@odata.deltaLink` of the last page saved as
//! the cursor, later runs follow it and get changed rows plus
//! `$deletedEntity` rows (deletions). A refused link (expired token) falls
//! back to one full read.

mod config;
mod source;

pub use config::{DEFAULT_ALIASES, DynamicsConfig, ID_COLUMN, OBJECT};
pub use source::DynamicsSource;
