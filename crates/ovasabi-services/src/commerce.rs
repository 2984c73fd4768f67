//! `commerce`: orders and payments: place, pay (pluggable provider), refund, ship, cancel.

use ovasabi_store::MigrationSet;

use crate::runtime::Service;

/// The `commerce` service.
#[derive(Clone, Debug, Default)]
pub struct CommerceService;

impl CommerceService {
    /// The service with the default payment provider.
    pub fn default_provider() -> CommerceService {
        CommerceService
    }
}

impl Service for CommerceService {
    fn name(&self) -> &'static str {
        "commerce"
    }

    fn about(&self) -> &'static str {
        "orders and payments: place, pay (pluggable provider), refund, ship, cancel"
    }

    fn migrations(&self) -> MigrationSet {
        MigrationSet::new("commerce", &[])
    }
}
