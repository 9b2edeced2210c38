//! Sources: everything that talks to the outside to read leads.

pub mod crm;
pub mod dynamics;
pub mod files;
pub mod http;
pub mod hubspot;
pub mod salesforce;
pub mod sheets;
pub mod zoho;
