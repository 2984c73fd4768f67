//! `wallet`: coin balances and their ledger: rewards credited (coin.mined), transfers.

use ovasabi_store::MigrationSet;

use crate::runtime::Service;

/// The `wallet` service.
#[derive(Clone, Debug, Default)]
pub struct WalletService;

impl Service for WalletService {
    fn name(&self) -> &'static str {
        "wallet"
    }

    fn about(&self) -> &'static str {
        "coin balances and their ledger: rewards credited (coin.mined), transfers"
    }

    fn migrations(&self) -> MigrationSet {
        MigrationSet::new("wallet", &[])
    }
}
