//! Machine-readable output.

use super::Summary;

/// The summary as pretty JSON.
pub fn render(summary: &Summary) -> String {
    serde_json::to_string_pretty(summary).expect("summary serialises")
}
