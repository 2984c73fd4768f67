//! The audit trail's hash chain: every recorded event is an entry chained to the one before,
//! and `verify` names the first entry changed, removed or moved — on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start, Db};
use ovasabi_services::audit::{self, Verdict};
use ovasabi_services::{AuditService, Service};
use ovasabi_store::{params, Store};
use reqwest::StatusCode;
use serde_json::json;

async fn verdict(store: &Store) -> Verdict {
    audit::verify(store).await.unwrap()
}

fn broken_at(verdict: Verdict, position: i64, words: &str) {
    match verdict {
        Verdict::Broken {
            position: at,
            reason,
        } => {
            assert_eq!(at, position, "{reason}");
            assert!(reason.contains(words), "{reason}");
        }
        Verdict::Intact { entries } => {
            panic!("expected a break at {position}, the chain of {entries} is intact")
        }
    }
}

async fn the_chain_names_the_first_tampered_entry(db: Db) {
    let Some(platform) = start(
        vec![
            Arc::new(AuditService::default()) as Arc<dyn Service>,
            Arc::new(ovasabi_services::users::UsersService),
        ],
        db,
        "audit_chain",
    )
    .await
    else {
        return;
    };
    for n in 0..5 {
        let (status, body, _) = platform
            .post(
                "/v1/users",
                &json!({"email": format!("ada{n}@example.com"), "display_name": "Ada"}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let store = Store::open(&platform.database, &[AuditService::default().migrations()])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Verdict::Intact { entries: 5 } = verdict(&store).await {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", verdict(&store).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Over HTTP: oldest first, a page at a time, each entry chained to the one before.
    let (status, page) = platform.get("/v1/audit?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let positions: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2]);
    assert_eq!(page["items"][0]["prev_hash"], audit::GENESIS);
    assert_eq!(page["items"][1]["prev_hash"], page["items"][0]["hash"]);
    assert_eq!(page["items"][0]["event"]["type"], "user.registered");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = platform
        .get(&format!("/v1/audit?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(next["items"][0]["position"], 3);
    assert_eq!(next["items"][0]["prev_hash"], page["items"][1]["hash"]);
    let subject = page["items"][1]["event"]["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, one) = platform
        .get(&format!("/v1/audit?type=user.registered&subject={subject}"))
        .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["items"][0]["position"], 2);
    let (_, none) = platform.get("/v1/audit?from=2999-01-01T00:00:00Z").await;
    assert_eq!(none["items"], json!([]));
    let (status, bad) = platform.get("/v1/audit?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["field"], "from");

    let execute = |sql: &'static str| {
        let store = store.clone();
        async move { store.execute(sql, &[]).await.unwrap() }
    };

    // A changed entry, then put back.
    let original: String = store
        .query_one("SELECT event FROM audit_events WHERE position = 3", &[])
        .await
        .unwrap()
        .get("event")
        .unwrap();
    execute("UPDATE audit_events SET event = replace(event, 'example.com', 'example.org') WHERE position = 3").await;
    broken_at(verdict(&store).await, 3, "changed");
    store
        .execute(
            "UPDATE audit_events SET event = $1 WHERE position = 3",
            params![original.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 5 });

    // Two entries swapped, then put back.
    let swap = || async {
        execute("UPDATE audit_events SET position = -1 WHERE position = 4").await;
        execute("UPDATE audit_events SET position = 4 WHERE position = 5").await;
        execute("UPDATE audit_events SET position = 5 WHERE position = -1").await;
    };
    swap().await;
    broken_at(verdict(&store).await, 4, "does not follow entry 3");
    swap().await;
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 5 });

    // The last entry removed: only the head still knows it.
    execute("DELETE FROM audit_events WHERE position = 5").await;
    broken_at(verdict(&store).await, 5, "removed");

    // An entry in the middle removed.
    execute("DELETE FROM audit_events WHERE position = 2").await;
    broken_at(verdict(&store).await, 2, "missing");

    platform.stop().await;
}

on_both!(the_chain_names_the_first_tampered_entry);
