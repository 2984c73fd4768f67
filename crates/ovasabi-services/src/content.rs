//! `content`: posts, edits, deletions, comments and reactions.

use ovasabi_store::MigrationSet;

use crate::runtime::Service;

/// The `content` service.
#[derive(Clone, Debug, Default)]
pub struct ContentService;

impl Service for ContentService {
    fn name(&self) -> &'static str {
        "content"
    }

    fn about(&self) -> &'static str {
        "posts, edits, deletions, comments and reactions"
    }

    fn migrations(&self) -> MigrationSet {
        MigrationSet::new("content", &[])
    }
}
