//! Exact dedupe: match keys (E.164 phone, e-mail key) clustered with
//! union-find within the batch and against existing masters, a name check
//! that keeps a shared switchboard or family e-mail from merging people, and
//! golden records by survivorship. Probabilistic mode (`probabilistic.rs`)
//! links with the Fellegi-Sunter engine of `crate::linkage` instead.

pub mod config;
mod golden;
mod link;
pub mod names;
mod probabilistic;
mod union_find;

pub use config::{DedupeConfig, DedupeMode, MatchKey, SurvivorField, SurvivorRule, SurvivorshipConfig};
pub use golden::{Survivorship, golden_from_records, project_links};
pub use link::{DedupeError, LinkOutcome, LinkStats, RunStamp, link, new_master_id};
pub use probabilistic::{MASTER_RENAMES, link_probabilistic, review_id, scorer};
