//! Pure data work on Arrow and DataFusion: the lead schema, mapping of source
//! columns onto it, normalisers (as DataFusion UDFs), validation rules and
//! exact dedupe. No I/O: everything here takes and returns Arrow arrays.

pub mod datetime;
pub mod dedupe;
pub mod hex;
pub mod linkage;
pub mod mapping;
pub mod normalise;
pub mod schema;
pub mod similarity;
pub mod validate;
