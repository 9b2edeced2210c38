//! Sources: everything that talks to the outside to read leads.

pub mod files;
pub mod http;
pub mod hubspot;
