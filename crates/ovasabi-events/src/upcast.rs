//! The platform's upcasters: how an old version's payload becomes the next version's, for
//! consumers that read the newer one (`ovasabi_schema::ContractLayer::reads`).
//!
//! Each step goes through the typed structs: the old payload is read as the old struct,
//! converted with its `From`, and written as the new struct, so a step cannot produce a
//! payload its Rust type would not.

use ovasabi_schema::Upcasters;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::commerce::{OrderPlaced, OrderPlacedV1};
use crate::users::{UserRegistered, UserRegisteredV1, UserRegisteredV2};
use crate::DomainEvent;

/// One step through the structs: `Old` → `New`.
fn step<Old, New>(data: Value) -> Result<Value, String>
where
    Old: DomainEvent + DeserializeOwned,
    New: DomainEvent + Serialize + From<Old>,
{
    let old: Old = serde_json::from_value(data)
        .map_err(|e| format!("not a {} v{} payload: {e}", Old::TYPE, Old::VERSION))?;
    serde_json::to_value(New::from(old)).map_err(|e| e.to_string())
}

/// Every declared upcaster: `user.registered` v1 → v2 → v3, `order.placed` v1 → v2.
pub fn upcasters() -> Upcasters {
    Upcasters::new()
        .register(
            UserRegisteredV1::TYPE,
            1,
            step::<UserRegisteredV1, UserRegisteredV2>,
        )
        .register(
            UserRegisteredV2::TYPE,
            2,
            step::<UserRegisteredV2, UserRegistered>,
        )
        .register(OrderPlacedV1::TYPE, 1, step::<OrderPlacedV1, OrderPlaced>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_becomes_v3_through_v2() {
        let v1 = UserRegisteredV1::examples().remove(0);
        let data = serde_json::to_value(&v1).unwrap();
        let v3 = upcasters()
            .upcast(UserRegisteredV1::TYPE, 1, 3, data)
            .unwrap();
        let expected = serde_json::to_value(UserRegistered::from(v1)).unwrap();
        assert_eq!(v3, expected);
    }

    #[test]
    fn a_payload_that_is_not_the_old_version_is_an_error_naming_it() {
        let err = upcasters()
            .upcast("user.registered", 1, 2, serde_json::json!({"user_id": 5}))
            .unwrap_err();
        assert!(err.contains("not a user.registered v1 payload"), "{err}");
        let err = upcasters()
            .upcast("order.placed", 2, 3, serde_json::json!({}))
            .unwrap_err();
        assert!(
            err.contains("no upcaster declared for order.placed v2 → v3"),
            "{err}"
        );
    }
}
