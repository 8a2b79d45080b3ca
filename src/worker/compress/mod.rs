//! Compression jobs on the worker: one leased task (the `train` task and lease of training
//! jobs, so delivery, ownership, the sweeper and cancellation work the same way) that
//! quantizes the package, measures both models on the job's sample, and writes the int8
//! package only when the gate holds.

mod files;
mod measure;
pub mod plan;
mod report;
mod run;

pub use run::{Compressed, execute};

/// The report written beside the int8 package (and stored in the job record).
pub const REPORT_FILE: &str = "compression-report.json";
