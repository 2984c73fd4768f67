//! Per-key order and flow control: order within a key, concurrency across keys, an unacked
//! event holding its key, and the in-flight bound.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovasabi_core::Ordering;
use tokio::sync::mpsc;

use crate::harness::{
    ack_all, join_all_tasks, list, run, Need, BULK_TIMEOUT, DELIVERY_TIMEOUT, SETTLE,
};
use crate::{Backend, Failure};

/// 1,000 events over 16 keys, 4 competing members: within a key, deliveries follow publish
/// order and never overlap; across keys, events are in flight at once.
pub async fn order_per_key(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 1000;
    const KEYS: usize = 16;
    const MEMBERS: usize = 4;
    // Each delivery is held this long before its ack, so deliveries of different keys
    // overlap on any backend that lets them.
    const HOLD: Duration = Duration::from_millis(2);
    let key_name = |k: usize| format!("key-{k}");
    run(backend, "order_per_key", &[Need::OrderPerKey], |ctx, _| async move {
        let topic = ctx.topic("ordered");
        let mut pump = ctx.pump(ctx.options("ordered", [&topic])?, MEMBERS).await?;

        // One publisher per key, each publishing its key's events one after another: that
        // fixes the publish order within every key. Event i has key i % KEYS.
        let publishers: Vec<_> = (0..KEYS)
            .map(|k| {
                let ctx = ctx.clone();
                let topic = topic.clone();
                let key = key_name(k);
                tokio::spawn(async move {
                    for i in (k..EVENTS).step_by(KEYS) {
                        ctx.publish(&topic, ctx.event(i).with_partition_key(key.clone())).await?;
                    }
                    Ok::<_, Failure>(())
                })
            })
            .collect();
        for outcome in join_all_tasks(publishers, "a key's publisher").await? {
            outcome?;
        }

        #[derive(Default)]
        struct Watch {
            in_flight: HashMap<usize, usize>,
            most_keys_in_flight: usize,
            overlaps: Vec<String>,
        }
        let watch = Arc::new(Mutex::new(Watch::default()));
        let mut order: Vec<Vec<usize>> = vec![Vec::new(); KEYS];
        let mut acked = BTreeSet::new();
        let mut redelivered = BTreeSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let within = ctx.scaled(BULK_TIMEOUT);
        let deadline = tokio::time::Instant::now() + within;
        while acked.len() < EVENTS {
            tokio::select! {
                item = pump.recv() => {
                    let Some(item) = item else { fail!("every subscription of the pump has ended") };
                    let seen = item?;
                    let (index, key) = (seen.index, seen.index % KEYS);
                    let got_key = seen.delivery.event().partition_key().map(str::to_owned);
                    ensure!(
                        got_key.as_deref() == Some(key_name(key).as_str()),
                        "event {index} was published with partition key `{}` but delivered with {got_key:?}",
                        key_name(key)
                    );
                    if seen.attempt() > 1 {
                        redelivered.insert(index);
                    }
                    {
                        let mut w = watch.lock().expect("watch lock");
                        if let Some(previous) = w.in_flight.insert(key, index) {
                            w.overlaps.push(format!(
                                "event {index} of `{}` was delivered (to member {}) while event {previous} of the same key was still unacked",
                                key_name(key), seen.member
                            ));
                        }
                        w.most_keys_in_flight = w.most_keys_in_flight.max(w.in_flight.len());
                    }
                    if !order[key].contains(&index) {
                        order[key].push(index);
                    }
                    let (ctx, watch, done) = (ctx.clone(), watch.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(HOLD).await;
                        {
                            // Leave the key before acking: once the ack is under way the backend
                            // may hand out the key's next event.
                            let mut w = watch.lock().expect("watch lock");
                            if w.in_flight.get(&key) == Some(&index) {
                                w.in_flight.remove(&key);
                            }
                        }
                        let _ = done.send((index, seen.ack(&ctx).await));
                    });
                }
                Some((index, outcome)) = done_rx.recv() => {
                    outcome?;
                    acked.insert(index);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let missing: Vec<usize> = (0..EVENTS).filter(|i| !acked.contains(i)).collect();
                    fail!(
                        "after {within:?}, {} of {EVENTS} events were not acked: {}",
                        missing.len(),
                        list(missing)
                    );
                }
            }
        }
        pump.settle("all 1,000 events were acked").await?;

        let (overlaps, most) = {
            let w = watch.lock().expect("watch lock");
            (w.overlaps.clone(), w.most_keys_in_flight)
        };
        ensure!(
            overlaps.is_empty(),
            "{} time(s) a key's next event was delivered before the previous one was acked; first: {}",
            overlaps.len(),
            overlaps.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
        for (key, got) in order.iter().enumerate() {
            let want: Vec<usize> = (key..EVENTS).step_by(KEYS).collect();
            if let Some(at) = got.iter().zip(&want).position(|(g, w)| g != w) {
                fail!(
                    "`{}` was delivered out of publish order: after event {}, event {} came instead of {}; delivered order {}",
                    key_name(key),
                    if at == 0 { "(none)".to_owned() } else { got[at - 1].to_string() },
                    got[at],
                    want[at],
                    list(got.iter().copied())
                );
            }
        }
        if !redelivered.is_empty() {
            println!(
                "note: order_per_key on {}: {} event(s) redelivered: {}",
                ctx.caps().name,
                redelivered.len(),
                list(redelivered)
            );
        }
        if !ctx.skip_part("concurrency across keys", Need::ConcurrentKeys) {
            ensure!(
                most >= 2,
                "never more than {most} key(s) in flight at once over 1,000 events on 16 keys with 4 members: events of different keys were delivered one at a time"
            );
        }
        pump.close().await
    })
    .await
}

/// While a key's event is unacked (well within the ack timeout), the key's next event reaches
/// no member of the group while another key's event still flows; after the ack the next one
/// arrives.
pub async fn no_ack_holds_next(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "no_ack_holds_next", &[Need::OrderPerKey], |ctx, _| async move {
        let topic = ctx.topic("held");
        let ack_timeout = ctx.scaled(Duration::from_secs(10));
        let window = ctx.scaled(Duration::from_millis(1500));
        let options = ctx.options("held", [&topic])?.ack_timeout(ack_timeout);
        let mut pump = ctx.pump(options, 2).await?;
        ctx.publish(&topic, ctx.event(0).with_partition_key("held")).await?;
        ctx.publish(&topic, ctx.event(1).with_partition_key("held")).await?;
        ctx.publish(&topic, ctx.event(2).with_partition_key("free")).await?;

        // Wait for the head of `held`; `free` may come first.
        let mut free_acked = false;
        let head = loop {
            let seen = pump.expect("event 0, the first of key `held`").await?;
            match seen.index {
                0 => break seen,
                2 => {
                    seen.ack(&ctx).await?;
                    free_acked = true;
                }
                _ => fail!(
                    "{} was delivered before event 0, the earlier event of the same key",
                    seen.describe()
                ),
            }
        };
        ensure!(head.attempt() == 1, "expected attempt 1, got {}", head.describe());

        // Hold it: for `window` (much shorter than the ack timeout) event 1 must not come.
        let window_end = head.at + window;
        loop {
            let left = window_end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(seen) = pump.next(left).await? else { break };
            match seen.index {
                1 => fail!(
                    "{} was delivered to member {} {:?} after event 0 of the same key, which was still unacked (ack timeout {ack_timeout:?})",
                    seen.describe(),
                    seen.member,
                    seen.at - head.at
                ),
                2 => {
                    seen.ack(&ctx).await?;
                    free_acked = true;
                }
                _ => fail!(
                    "{} was delivered again while its first delivery was held, well within the ack timeout of {ack_timeout:?}",
                    seen.describe()
                ),
            }
        }
        if !ctx.skip_part("other keys flow meanwhile", Need::ConcurrentKeys) {
            ensure!(
                free_acked,
                "event 2 (key `free`) was not delivered within {window:?} while key `held` waited for an ack: an unacked event blocked other keys"
            );
        }

        head.ack(&ctx).await?;
        let mut waiting: BTreeSet<usize> = BTreeSet::from([1]);
        if !free_acked {
            waiting.insert(2);
        }
        while !waiting.is_empty() {
            let seen = pump
                .expect(format!("events {waiting:?} after event 0 was acked"))
                .await?;
            let expected = waiting.clone();
            ensure!(
                waiting.remove(&seen.index) && seen.attempt() == 1,
                "after acking event 0, expected the first delivery of one of events {expected:?}, got {}",
                seen.describe()
            );
            seen.ack(&ctx).await?;
        }
        pump.settle("every event was acked").await?;
        pump.close().await
    })
    .await
}

/// A subscription never holds more unacked deliveries than `max_in_flight`; each ack lets
/// one more through.
pub async fn max_in_flight_bound(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 20;
    const BOUND: usize = 5;
    run(backend, "max_in_flight_bound", &[], |ctx, _| async move {
        let topic = ctx.topic("bounded");
        // An ack timeout far beyond the scenario's windows: a held delivery must never come
        // back by timing out while the bound is checked, however slow the machine.
        let options = ctx
            .options("bounded", [&topic])?
            .max_in_flight(BOUND)
            .ack_timeout(ctx.scaled(Duration::from_secs(300)))
            .ordering(Ordering::None);
        let mut pump = ctx.pump(options, 1).await?;
        let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
        ctx.publish_concurrently(&topic, events, 4).await?;

        let mut held = Vec::new();
        for n in 0..BOUND {
            held.push(
                pump.expect(format!("delivery {} of {BOUND} allowed in flight", n + 1))
                    .await?,
            );
        }
        let window = ctx.scaled(SETTLE);
        pump.expect_nothing(
            window,
            format!("{BOUND} deliveries are unacked and max_in_flight is {BOUND}"),
        )
        .await?;
        let mut acked = BTreeSet::new();
        let first = held.remove(0);
        first.ack(&ctx).await?;
        acked.insert(first.index);
        held.push(
            pump.expect_within(
                ctx.scaled(DELIVERY_TIMEOUT),
                "one more delivery after acking one of the held",
            )
            .await?,
        );
        pump.expect_nothing(window, format!("again {BOUND} deliveries are unacked"))
            .await?;
        for seen in held {
            seen.ack(&ctx).await?;
            acked.insert(seen.index);
        }
        let rest: BTreeSet<usize> = (0..EVENTS).filter(|i| !acked.contains(i)).collect();
        ack_all(&ctx, &mut pump, &rest, ctx.scaled(BULK_TIMEOUT)).await?;
        pump.settle("every event was acked").await?;
        pump.close().await
    })
    .await
}
