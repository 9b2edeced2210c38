//! Exact dedupe: match keys (E.164 phone, e-mail key) clustered with
//! union-find within the batch and against existing masters, a name check
//! that keeps a shared switchboard or family e-mail from merging people, and
//! golden records by survivorship.

pub mod config;
mod golden;
mod link;
pub mod names;
mod union_find;

pub use config::{DedupeConfig, MatchKey};
pub use golden::project_links;
pub use link::{DedupeError, LinkOutcome, LinkStats, RunStamp, link};
