//! Mapping: source columns onto canonical lead fields, value maps, defaults,
//! name splitting, unmapped columns kept as JSON extras.

pub mod config;
mod mapper;
pub mod names;

pub use config::{Defaults, MappingConfig};
pub use mapper::{FileMapping, Mapper, MappingError, fold_key};
