//! `messaging`: direct messages between users.

use ovasabi_store::MigrationSet;

use crate::runtime::Service;

/// The `messaging` service.
#[derive(Clone, Debug, Default)]
pub struct MessagingService;

impl Service for MessagingService {
    fn name(&self) -> &'static str {
        "messaging"
    }

    fn about(&self) -> &'static str {
        "direct messages between users"
    }

    fn migrations(&self) -> MigrationSet {
        MigrationSet::new("messaging", &[])
    }
}
