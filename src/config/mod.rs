//! Pipeline configuration: layered loading, typed sections and validation.

mod problems;

pub use problems::{Problem, Problems};
