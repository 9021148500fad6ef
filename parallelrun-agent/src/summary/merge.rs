//! Several summaries into one: exactly the totals one agent seeing all
//! their traffic would have written.

use std::path::PathBuf;

use super::Summary;

/// Why summaries cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "{path} was grouped by other rules than {first}: {what}; merge only summaries of runs with the same --endpoint patterns and bounds"
    )]
    Rules {
        path: PathBuf,
        first: PathBuf,
        what: String,
    },
    #[error("no summary to merge")]
    Empty,
}

/// Merges `summaries` (each with the path it was read from, for errors).
pub fn merge(summaries: Vec<(PathBuf, Summary)>) -> Result<Summary, MergeError> {
    let _ = summaries;
    todo!()
}
