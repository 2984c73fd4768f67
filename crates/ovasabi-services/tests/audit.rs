//! The audit trail's hash chain: every recorded event becomes an entry chained to the one
//! before by the chainer (after it is recorded, not while), and `verify` names the first
//! entry changed, removed or moved — on SQLite and PostgreSQL. And `trace`: an order's
//! causal tree, requests sharing a correlation id and the reactions they caused.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{start, Db};
use ovasabi_services::audit::{self, Verdict};
use ovasabi_services::{AuditService, Service};
use ovasabi_store::{params, Store, StoreConfig};
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
        Verdict::Intact { entries, pending } => {
            panic!("expected a break at {position}, the chain of {entries} is intact ({pending} pending)")
        }
    }
}

/// Waits until the chain holds `entries` entries and nothing is pending.
async fn chained(store: &Store, entries: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = verdict(store).await;
        if now
            == (Verdict::Intact {
                entries,
                pending: 0,
            })
        {
            return;
        }
        assert!(
            matches!(now, Verdict::Intact { .. }),
            "the chain broke while chaining: {now:?}"
        );
        assert!(
            Instant::now() < deadline,
            "not chained within 20 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records a row the way the recorder does: unchained.
async fn record_unchained(store: &Store, id: &str) {
    store
        .execute(
            "INSERT INTO audit_events (event_id, event_type, source, subject, topic,
                 bus_offset, event_time, attempt, recorded_by, recorded_at, event)
             VALUES ($1, 'test.happened', '/test', 's1', 'test.events', 0, $2, 1, 'test', $2, $3)",
            params![
                id,
                Utc::now(),
                json!({"specversion": "1.0", "id": id}).to_string(),
            ],
        )
        .await
        .unwrap();
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
    // Recorded, then chained by the running service's chainer.
    chained(&store, 5).await;

    // Over HTTP: chain order, a page at a time, each entry chained to the one before.
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
    let cursor = next["next_cursor"].as_str().unwrap().to_owned();
    let (_, last) = platform
        .get(&format!("/v1/audit?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["items"][0]["position"], 5);
    assert_eq!(last["next_cursor"], json!(null));
    let subject = page["items"][1]["event"]["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, one) = platform
        .get(&format!("/v1/audit?type=user.registered&subject={subject}"))
        .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["items"][0]["position"], 2);
    let (_, other) = platform.get("/v1/audit?type=user.deleted").await;
    assert_eq!(other["items"], json!([]));
    let (_, all) = platform.get("/v1/audit?from=2000-01-01T00:00:00Z").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 5, "{all}");
    let (_, none) = platform.get("/v1/audit?from=2999-01-01T00:00:00Z").await;
    assert_eq!(none["items"], json!([]));
    for (query, field) in [
        ("from=yesterday", "from"),
        ("limit=0", "limit"),
        ("cursor=zz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, bad) = platform.get(&format!("/v1/audit?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {bad}");
        assert_eq!(bad["error"]["field"], field, "{query}: {bad}");
    }
    let (_, openapi) = platform.get("/openapi.json").await;
    assert!(
        openapi["paths"]["/v1/audit"]["get"].is_object(),
        "{openapi}"
    );

    // Rows recorded unchained while the service runs are chained by a later pass,
    // continuing the chain.
    record_unchained(&store, "late-1").await;
    record_unchained(&store, "late-2").await;
    chained(&store, 7).await;

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
    broken_at(verdict(&store).await, 3, "entry 3 was changed");
    store
        .execute(
            "UPDATE audit_events SET event = $1 WHERE position = 3",
            params![original.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 7,
            pending: 0
        }
    );

    // Two entries swapped, then put back.
    let swap = || async {
        execute("UPDATE audit_events SET position = -1 WHERE position = 4").await;
        execute("UPDATE audit_events SET position = 4 WHERE position = 5").await;
        execute("UPDATE audit_events SET position = 5 WHERE position = -1").await;
    };
    swap().await;
    broken_at(verdict(&store).await, 4, "does not follow entry 3");
    swap().await;
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 7,
            pending: 0
        }
    );

    // The last entry removed: only the head still knows it.
    execute("DELETE FROM audit_events WHERE position = 7").await;
    broken_at(verdict(&store).await, 7, "removed");

    // An entry in the middle removed.
    execute("DELETE FROM audit_events WHERE position = 2").await;
    broken_at(verdict(&store).await, 2, "missing");

    platform.stop().await;
}

/// A store with the audit tables and no service running: passes run by hand.
async fn bare_store(
    db: Db,
    test: &str,
) -> Option<(
    Store,
    Option<ovasabi_store::testing::TestSchema>,
    Option<tempfile::TempDir>,
)> {
    let migrations = [AuditService::default().migrations()];
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let config = StoreConfig::sqlite(dir.path().join("audit.db"));
            let store = Store::open(&config, &migrations).await.unwrap();
            Some((store, None, Some(dir)))
        }
        Db::Postgres | Db::NatsPostgres => {
            let schema = ovasabi_store::testing::postgres_or_skip(test).await?;
            let store = Store::open(&schema.config(), &migrations).await.unwrap();
            Some((store, Some(schema), None))
        }
    }
}

async fn rows_wait_unchained_and_a_later_pass_continues_the_chain(db: Db) {
    let Some((store, _schema, _dir)) = bare_store(db, "audit_chain_passes").await else {
        return;
    };
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 0,
            pending: 0
        }
    );
    assert_eq!(audit::chain_pass(&store).await.unwrap(), 0);

    // Recorded rows are pending, which is not a fault, until a pass chains them.
    for id in ["a", "b", "c"] {
        record_unchained(&store, id).await;
    }
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 0,
            pending: 3
        }
    );
    assert_eq!(audit::chain_pass(&store).await.unwrap(), 3);
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 3,
            pending: 0
        }
    );

    // A later pass goes on from the head.
    record_unchained(&store, "d").await;
    assert_eq!(audit::chain_pass(&store).await.unwrap(), 1);
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 4,
            pending: 0
        }
    );

    // A row whose transaction commits after a later-recorded row was chained gets the
    // next position: chain order is chaining order, not `seq` order. (SQLite's transactions
    // never overlap, so only PostgreSQL has late rows.)
    if let Db::Postgres = db {
        let mut late = store.begin().await.unwrap();
        late.execute(
            "INSERT INTO audit_events (event_id, event_type, source, subject, topic,
                 bus_offset, event_time, attempt, recorded_by, recorded_at, event)
             VALUES ('late', 'test.happened', '/test', 's1', 'test.events', 0, $1, 1, 'test', $1, '{}')",
            params![Utc::now()],
        )
        .await
        .unwrap();
        record_unchained(&store, "early").await;
        assert_eq!(audit::chain_pass(&store).await.unwrap(), 1);
        late.commit().await.unwrap();
        assert_eq!(audit::chain_pass(&store).await.unwrap(), 1);
        let order: Vec<(String, i64)> = store
            .query(
                "SELECT event_id, seq FROM audit_events WHERE position > 4 ORDER BY position",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("event_id").unwrap(), r.get("seq").unwrap()))
            .collect();
        assert_eq!(order[0].0, "early");
        assert_eq!(order[1].0, "late");
        assert!(order[1].1 < order[0].1, "{order:?}");
        assert_eq!(
            verdict(&store).await,
            Verdict::Intact {
                entries: 6,
                pending: 0
            }
        );
    }

    // More than one pass's worth goes in several passes, one chain.
    let before = match verdict(&store).await {
        Verdict::Intact { entries, .. } => entries,
        broken => panic!("{broken:?}"),
    };
    let many = audit::CHAIN_BATCH + 3;
    for n in 0..many {
        record_unchained(&store, &format!("bulk-{n}")).await;
    }
    assert_eq!(
        audit::chain_pass(&store).await.unwrap(),
        usize::try_from(audit::CHAIN_BATCH).unwrap()
    );
    assert_eq!(audit::chain_pass(&store).await.unwrap(), 3);
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: before + many,
            pending: 0
        }
    );

    // A row put after the head by hand is not part of the chain.
    store
        .execute(
            "UPDATE audit_events SET position = 9999 WHERE event_id = 'bulk-0'",
            &[],
        )
        .await
        .unwrap();
    broken_at(verdict(&store).await, before + 1, "missing");
}

async fn an_orders_trace_links_every_reaction_to_its_cause(db: Db) {
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(ovasabi_services::users::UsersService),
        Arc::new(ovasabi_services::commerce::CommerceService::default_provider()),
        Arc::new(ovasabi_services::wallet::WalletService),
        Arc::new(AuditService::default()),
    ];
    let Some(p) = start(services, db, "audit_trace").await else {
        return;
    };
    let checkout = [("X-Correlation-Id", "checkout-7")];
    let (_, ada, _) = p
        .post_with("/v1/users", &json!({"email": "ada@example.com"}), &[])
        .await;
    let ada = ada["id"].as_str().unwrap().to_owned();
    let (status, order, _) = p
        .post_with("/v1/orders", &common::order_of(&ada, 2500), &checkout)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order = order["id"].as_str().unwrap().to_owned();
    for (step, body) in [
        ("pay", json!({"method": "card"})),
        ("ship", json!({"carrier": "dhl"})),
    ] {
        let (status, answer, _) = p
            .post_with(&format!("/v1/orders/{order}/{step}"), &body, &checkout)
            .await;
        assert!(status.is_success(), "{step}: {answer}");
    }
    let store = Store::open(&p.database, &[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        let trace = audit::trace(&store, "checkout-7").await.unwrap();
        if let Some(trace) = trace.filter(|t| t.events.iter().any(|e| e.ty == "coin.mined")) {
            break trace;
        }
        assert!(
            Instant::now() < deadline,
            "the reward never reached the trail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of = |ty: &str| trace.events.iter().find(|e| e.ty == ty).unwrap();
    let types: Vec<&str> = trace.events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.placed",
            "payment.completed",
            "order.shipped",
            "coin.mined"
        ],
        "by time; the signup bonus is of another correlation"
    );
    // The three requests are roots; the reward hangs under the shipment that caused it.
    assert_eq!(
        trace.roots,
        [
            &of("order.placed").id,
            &of("payment.completed").id,
            &of("order.shipped").id
        ]
        .map(|s| s.clone())
    );
    assert_eq!(of("order.shipped").caused, [of("coin.mined").id.clone()]);
    assert_eq!(of("coin.mined").source, "/ovasabi/wallet");
    assert_eq!(trace.correlation_id.as_deref(), Some("checkout-7"));

    // Asked by event id: the same tree (its correlation's).
    let by_event = audit::trace(&store, &of("coin.mined").id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_event.events.len(), 4);
    assert_eq!(by_event.correlation_id.as_deref(), Some("checkout-7"));
    // The registration's own tree: the registration and its bonus.
    let registered = audit::recent(
        &store,
        &audit::AuditFilter {
            event_type: Some("user.registered".to_owned()),
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let registered: serde_json::Value = serde_json::from_str(&registered[0].event_json).unwrap();
    let bonus = audit::trace(&store, registered["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let types: Vec<&str> = bonus.events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(types, ["user.registered", "coin.mined"]);
    assert!(audit::trace(&store, "no-such-thing")
        .await
        .unwrap()
        .is_none());
    p.stop().await;
}

on_both!(
    an_orders_trace_links_every_reaction_to_its_cause,
    the_chain_names_the_first_tampered_entry,
    rows_wait_unchained_and_a_later_pass_continues_the_chain
);
