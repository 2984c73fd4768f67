//! Closing, cancelling, restarting and replaying.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovasabi_core::{BusError, StartFrom};

use crate::harness::{
    ack_all, consume, join_all_tasks, list, range, run, Act, Context, Need, BULK_TIMEOUT,
    DELIVERY_TIMEOUT, OP_TIMEOUT,
};
use crate::{Backend, Failure};

/// 5,000 events read by rounds of 5 members that ack some and close; fresh members continue;
/// every event is acked, none lost, none delivered again after its ack.
pub async fn continue_after_subscribe_close(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 5000;
    const MEMBERS: usize = 5;
    const ACKS_PER_ROUND: usize = 500;
    run(
        backend,
        "continue_after_subscribe_close",
        &[],
        |ctx, _| async move {
            let topic = ctx.topic("rounds");
            // Deliveries a closed member held go back to the group; should a backend only take
            // them back at the ack timeout, keep that short enough to finish.
            let options = ctx
                .options("rounds", [&topic])?
                .ack_timeout(ctx.scaled(Duration::from_secs(5)));
            // The first round subscribes before anything is published.
            let mut next_pump = Some(ctx.pump(options.clone(), MEMBERS).await?);
            let publishing = {
                let (ctx, topic) = (ctx.clone(), topic.clone());
                tokio::spawn(async move {
                    let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
                    ctx.publish_concurrently(&topic, events, 50).await
                })
            };

            let within = ctx.scaled(BULK_TIMEOUT);
            let deadline = Instant::now() + within;
            let mut acked = BTreeSet::new();
            let mut rounds = 0;
            while acked.len() < EVENTS {
                let left = deadline.saturating_duration_since(Instant::now());
                ensure!(
                !left.is_zero(),
                "after {within:?} and {rounds} rounds, {} of {EVENTS} events were not acked: {}",
                EVENTS - acked.len(),
                list((0..EVENTS).filter(|i| !acked.contains(i)))
            );
                let mut pump = match next_pump.take() {
                    Some(pump) => pump,
                    None => ctx.pump(options.clone(), MEMBERS).await?,
                };
                let remaining: BTreeSet<usize> =
                    (0..EVENTS).filter(|i| !acked.contains(i)).collect();
                let tally = consume(
                    &ctx,
                    &mut pump,
                    &remaining,
                    &range(0, 0),
                    ACKS_PER_ROUND,
                    left,
                    |_| Act::Ack,
                )
                .await
                .context(format!(
                    "round {rounds} ({} events acked before it)",
                    acked.len()
                ))?;
                pump.close().await?;
                tally.check_duplicates(&ctx)?;
                acked.extend(tally.acked);
                rounds += 1;
            }
            join_all_tasks(vec![publishing], "the publishing task")
                .await?
                .remove(0)?;

            let mut last = ctx.pump(options, 1).await?;
            last.settle("every event was acked by an earlier member")
                .await?;
            println!(
                "note: continue_after_subscribe_close on {}: {rounds} rounds of {MEMBERS} members",
                ctx.caps().name
            );
            last.close().await
        },
    )
    .await
}

/// 50 subscriptions opened and closed (or dropped, or closed while holding a delivery) at
/// once while 500 events are published: no hang, no error; a new member then gets all 500.
pub async fn concurrent_close(backend: &dyn Backend) -> Result<(), Failure> {
    const SUBSCRIPTIONS: usize = 50;
    const EVENTS: usize = 500;
    run(backend, "concurrent_close", &[], |ctx, _| async move {
        let topic = ctx.topic("churn");
        // Deliveries of dropped subscriptions come back at the latest at the ack timeout.
        let options = ctx
            .options("churn", [&topic])?
            .ack_timeout(ctx.scaled(Duration::from_secs(2)));
        // The group exists before anything is published.
        let anchor = ctx.subscribe(options.clone()).await?;
        let publishing = {
            let (ctx, topic) = (ctx.clone(), topic.clone());
            tokio::spawn(async move {
                let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
                ctx.publish_concurrently(&topic, events, 5).await
            })
        };
        let churn: Vec<_> = (0..SUBSCRIPTIONS)
            .map(|n| {
                let (ctx, options) = (ctx.clone(), options.clone());
                tokio::spawn(async move {
                    let mut sub = ctx
                        .subscribe(options)
                        .await
                        .context(format!("subscription {n}"))?;
                    let close = |sub: ovasabi_core::Subscription| {
                        ctx.op(format!("closing subscription {n}"), async move {
                            sub.close().await;
                            Ok(())
                        })
                    };
                    match n % 3 {
                        0 => close(sub).await,
                        1 => {
                            // Close while holding a delivery, then drop it unacked.
                            let held = tokio::time::timeout(
                                ctx.scaled(Duration::from_millis(200)),
                                sub.next(),
                            )
                            .await;
                            if let Ok(Some(Err(e))) = &held {
                                fail!("subscription {n} yielded an error: {e}");
                            }
                            close(sub).await?;
                            drop(held);
                            Ok(())
                        }
                        _ => {
                            // Drop the subscription (and whatever next() was doing) without closing.
                            let _ = tokio::time::timeout(
                                ctx.scaled(Duration::from_millis(50)),
                                sub.next(),
                            )
                            .await;
                            drop(sub);
                            Ok(())
                        }
                    }
                })
            })
            .collect();
        for outcome in join_all_tasks(churn, "a subscription opening and closing").await? {
            outcome?;
        }
        ctx.op("closing the first subscription", async move {
            anchor.close().await;
            Ok(())
        })
        .await?;
        join_all_tasks(vec![publishing], "the publishing task")
            .await?
            .remove(0)?;

        let mut pump = ctx.pump(options, 2).await?;
        let tally = ack_all(&ctx, &mut pump, &range(0, EVENTS), ctx.scaled(BULK_TIMEOUT))
            .await
            .context("a new member after the churn")?;
        tally.check_duplicates(&ctx)?;
        pump.settle("every event was acked").await?;
        pump.close().await
    })
    .await
}

/// Dropping `next()` futures mid-wait, dropping a delivery unacked and dropping the
/// subscription lose nothing: another member gets every event not acked.
pub async fn subscribe_cancellation(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 50;
    run(backend, "subscribe_cancellation", &[], |ctx, _| async move {
        let topic = ctx.topic("cancelled");
        let options = ctx
            .options("cancelled", [&topic])?
            .ack_timeout(ctx.scaled(Duration::from_secs(2)));
        let mut sub = ctx.subscribe(options.clone()).await?;

        // Cancel next() while nothing is there.
        let mut cancelled = 0;
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_millis(1), sub.next()).await {
                Err(_) => cancelled += 1,
                Ok(item) => fail!(
                    "next() returned {} before anything was published",
                    describe_item(&item)
                ),
            }
        }

        // Publish slowly while next() is cancelled at ever-changing moments.
        let publishing = {
            let (ctx, topic) = (ctx.clone(), topic.clone());
            tokio::spawn(async move {
                for i in 0..EVENTS {
                    ctx.publish(&topic, ctx.event(i)).await?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok::<_, Failure>(())
            })
        };
        let within = ctx.scaled(BULK_TIMEOUT);
        let deadline = Instant::now() + within;
        let mut acked = BTreeSet::new();
        let mut round: u64 = 0;
        while acked.len() < EVENTS / 2 {
            ensure!(
                Instant::now() < deadline,
                "after {within:?} only {} events were received while cancelling next(): {}",
                acked.len(),
                list(acked.iter().copied())
            );
            round += 1;
            let wait = Duration::from_micros(100 + round * 7919 % 3000);
            tokio::select! {
                item = sub.next() => match item {
                    Some(Ok(delivery)) => {
                        let Some(i) = ctx.index_of(delivery.event()) else {
                            fail!("received event `{}`, which this scenario never published", delivery.event().id);
                        };
                        ensure!(!acked.contains(&i), "event {i} was delivered again after its ack succeeded");
                        ctx.op(format!("acking event {i}"), delivery.ack()).await?;
                        acked.insert(i);
                    }
                    other => fail!("next() returned {}", describe_item(&other)),
                },
                _ = tokio::time::sleep(wait) => cancelled += 1,
            }
        }
        // Drop one delivery unacked, then the subscription without closing it.
        let dropped = match tokio::time::timeout(ctx.scaled(DELIVERY_TIMEOUT), sub.next()).await {
            Ok(Some(Ok(delivery))) => ctx.index_of(delivery.event()),
            Ok(other) => fail!("next() returned {}", describe_item(&other)),
            Err(_) => fail!("no delivery within {:?} after {} of {EVENTS} events", DELIVERY_TIMEOUT, acked.len()),
        };
        drop(sub);
        join_all_tasks(vec![publishing], "the publishing task").await?.remove(0)?;

        let rest: BTreeSet<usize> = (0..EVENTS).filter(|i| !acked.contains(i)).collect();
        let mut pump = ctx.pump(options, 1).await?;
        ack_all(&ctx, &mut pump, &rest, ctx.scaled(BULK_TIMEOUT))
            .await
            .context(format!(
                "another member after cancelled next() calls, a dropped delivery (event {dropped:?}) and a dropped subscription"
            ))?;
        pump.settle("every event was acked").await?;
        println!(
            "note: subscribe_cancellation on {}: {cancelled} next() futures dropped",
            ctx.caps().name
        );
        pump.close().await
    })
    .await
}

fn describe_item(item: &Option<Result<ovasabi_core::Delivery, BusError>>) -> String {
    match item {
        None => "None (subscription ended)".to_owned(),
        Some(Err(e)) => format!("an error: {e}"),
        Some(Ok(d)) => format!("event `{}`", d.event().id),
    }
}

/// 10,000 events published by 100 tasks while `Bus::close` runs: publishes return Ok or
/// `Closed`; after close, publish and subscribe return `Closed`; after a restart every event
/// whose publish returned Ok is there.
pub async fn publisher_close(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 10_000;
    const TASKS: usize = 100;
    run(backend, "publisher_close", &[], |ctx, backend| async move {
        let topic = ctx.topic("closing");
        let bus = ctx.bus();
        #[derive(Default)]
        struct Outcomes {
            ok: BTreeSet<usize>,
            closed: BTreeSet<usize>,
        }
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let op_timeout = ctx.scaled(OP_TIMEOUT);
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (ctx, bus, topic, outcomes) = (ctx.clone(), bus.clone(), topic.clone(), outcomes.clone());
                tokio::spawn(async move {
                    for i in (t..EVENTS).step_by(TASKS) {
                        match tokio::time::timeout(op_timeout, bus.publish(&topic, ctx.event(i))).await {
                            Ok(Ok(_)) => outcomes.lock().expect("lock").ok.insert(i),
                            Ok(Err(BusError::Closed)) => outcomes.lock().expect("lock").closed.insert(i),
                            Ok(Err(e)) => fail!("publishing event {i} while the bus closed returned `{e}`; expected Ok or Closed"),
                            Err(_) => fail!("publishing event {i} while the bus closed did not finish within {op_timeout:?}"),
                        };
                    }
                    Ok(())
                })
            })
            .collect();

        // Close once half the events are in, with the other half in flight.
        let wait_limit = ctx.scaled(BULK_TIMEOUT);
        let waited = Instant::now();
        while outcomes.lock().expect("lock").ok.len() < EVENTS / 2 {
            ensure!(
                waited.elapsed() < wait_limit,
                "only {} of {EVENTS} publishes returned within {wait_limit:?}",
                outcomes.lock().expect("lock").ok.len()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ctx.op("closing the bus while publishes are in flight", bus.close()).await?;
        for outcome in join_all_tasks(tasks, "a publishing task").await? {
            outcome?;
        }
        let (ok, closed) = {
            let o = outcomes.lock().expect("lock");
            (o.ok.clone(), o.closed.clone())
        };
        ensure!(
            ok.len() + closed.len() == EVENTS,
            "{} publishes returned Ok and {} returned Closed, of {EVENTS}",
            ok.len(),
            closed.len()
        );

        let error = ctx
            .refused("publishing after Bus::close", bus.publish(&topic, ctx.event(EVENTS)))
            .await?;
        ensure!(
            matches!(error, BusError::Closed),
            "publishing after Bus::close returned `{error}`, expected Closed"
        );
        let error = ctx
            .refused("subscribing after Bus::close", bus.subscribe(ctx.options("after-close", [&topic])?))
            .await?;
        ensure!(
            matches!(error, BusError::Closed),
            "subscribing after Bus::close returned `{error}`, expected Closed"
        );

        let part = "every acknowledged publish survives the close";
        if ctx.skip_part(part, Need::Restart) || ctx.skip_part(part, Need::Persistent) {
            return Ok(());
        }
        ctx.restart(backend).await?;
        let mut pump = ctx.pump(ctx.options("after-restart", [&topic])?, 2).await?;
        let tally = consume(&ctx, &mut pump, &ok, &closed, usize::MAX, ctx.scaled(BULK_TIMEOUT), |_| Act::Ack)
            .await
            .context(format!(
                "after the restart, reading the {} events whose publish returned Ok",
                ok.len()
            ))?;
        pump.settle("every published event was acked").await?;
        println!(
            "note: publisher_close on {}: {} publishes returned Ok, {} returned Closed, {} of those were written anyway",
            ctx.caps().name,
            ok.len(),
            closed.len(),
            tally.extra.len()
        );
        pump.close().await
    })
    .await
}

/// Publish 100, ack the even half and hold the odd half, close the bus with deliveries
/// outstanding, reopen: exactly the odd half comes again, no acked event returns, and a new
/// group still sees all 100.
pub async fn restart(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 100;
    run(
        backend,
        "restart",
        &[Need::Restart, Need::Persistent],
        |ctx, backend| async move {
            let topic = ctx.topic("survivor");
            // Unacked deliveries of the old bus may only come back at the ack timeout on a broker.
            let options = ctx
                .options("survivor", [&topic])?
                .ack_timeout(ctx.scaled(Duration::from_secs(2)));
            let mut pump = ctx.pump(options.clone(), 1).await?;
            let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
            ctx.publish_concurrently(&topic, events, 10).await?;

            let evens: BTreeSet<usize> = (0..EVENTS).step_by(2).collect();
            let odds: BTreeSet<usize> = (1..EVENTS).step_by(2).collect();
            let within = ctx.scaled(BULK_TIMEOUT);
            let tally = consume(&ctx, &mut pump, &evens, &odds, usize::MAX, within, |seen| {
                if seen.index & 1 == 0 {
                    Act::Ack
                } else {
                    Act::Hold
                }
            })
            .await
            .context("before the restart")?;
            let mut held = tally.held;
            let mut held_indexes: BTreeSet<usize> = held.iter().map(|s| s.index).collect();
            while held_indexes.len() < odds.len() {
                let seen = pump
                    .expect(format!(
                        "the odd events before the restart ({} of {} delivered)",
                        held_indexes.len(),
                        odds.len()
                    ))
                    .await?;
                ensure!(
                    seen.index % 2 == 1,
                    "{} was delivered again after its ack succeeded",
                    seen.describe()
                );
                held_indexes.insert(seen.index);
                held.push(seen);
            }

            // Stop the "process" with a subscription open and 50 deliveries outstanding.
            ctx.restart(backend).await?;
            drop(held);
            pump.close()
                .await
                .context("closing the old bus's subscription")?;

            let mut pump = ctx.pump(options, 1).await?;
            let tally = ack_all(&ctx, &mut pump, &odds, within).await.context(
                "after the restart, the group must get exactly the unacked (odd) events",
            )?;
            pump.settle("after the restart every event was acked")
                .await?;
            tally.check_duplicates(&ctx)?;
            pump.close().await?;

            let mut fresh = ctx.pump(ctx.options("fresh", [&topic])?, 1).await?;
            ack_all(&ctx, &mut fresh, &range(0, EVENTS), within)
                .await
                .context("a new group after the restart must see every event")?;
            fresh.settle("every event was acked").await?;
            fresh.close().await
        },
    )
    .await
}

/// A new group with `Beginning` gets history; `Latest` only later events; an existing group
/// resubscribing with `Beginning` keeps its position.
pub async fn new_subscriber_replays_history(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "new_subscriber_replays_history", &[Need::Persistent], |ctx, _| async move {
        let topic = ctx.topic("history");
        let within = ctx.scaled(BULK_TIMEOUT);
        for i in 0..10 {
            ctx.publish(&topic, ctx.event(i)).await?;
        }

        let mut beginning = ctx.pump(ctx.options("beginning", [&topic])?, 1).await?;
        ack_all(&ctx, &mut beginning, &range(0, 10), within)
            .await
            .context("a new group with StartFrom::Beginning must get the 10 events published before it")?;
        beginning.settle("the group acked the whole history").await?;

        let latest_options = ctx.options("latest", [&topic])?.start(StartFrom::Latest);
        let mut latest = ctx.pump(latest_options, 1).await?;
        latest.settle("a new group with StartFrom::Latest must not get history").await?;
        for i in 10..12 {
            ctx.publish(&topic, ctx.event(i)).await?;
        }
        ack_all(&ctx, &mut latest, &range(10, 12), within)
            .await
            .context("a new group with StartFrom::Latest must get events published after it subscribed")?;
        latest.settle("the group acked the events after its subscription").await?;
        ack_all(&ctx, &mut beginning, &range(10, 12), within)
            .await
            .context("group `beginning` must get the new events too")?;
        latest.close().await?;
        beginning.close().await?;

        let again = ctx.options("latest", [&topic])?.start(StartFrom::Beginning);
        let mut again = ctx.pump(again, 1).await?;
        again
            .settle("group `latest` acked everything; resubscribing with StartFrom::Beginning keeps its position (only Offset and Time move an existing group)")
            .await?;
        again.close().await?;

        let mut late = ctx.pump(ctx.options("late", [&topic])?, 1).await?;
        ack_all(&ctx, &mut late, &range(0, 12), within)
            .await
            .context("a group created last must get the whole history")?;
        late.settle("the whole history was acked").await?;
        late.close().await
    })
    .await
}

/// `Offset(n)` and `Time(t)` start a new group at the right event and move an existing group
/// back (replay).
pub async fn replay_from_offset_and_time(backend: &dyn Backend) -> Result<(), Failure> {
    run(
        backend,
        "replay_from_offset_and_time",
        &[Need::Persistent, Need::Replay],
        |ctx, _| async move {
            let topic = ctx.topic("replayed");
            let within = ctx.scaled(BULK_TIMEOUT);
            let mut offsets = Vec::new();
            for i in 0..5 {
                offsets.push(ctx.publish(&topic, ctx.event(i)).await?.offset);
            }
            // A time between events 4 and 5, with a margin on both sides for clock granularity.
            let gap = ctx.scaled(Duration::from_millis(300));
            tokio::time::sleep(gap).await;
            let middle = chrono::Utc::now();
            tokio::time::sleep(gap).await;
            for i in 5..10 {
                offsets.push(ctx.publish(&topic, ctx.event(i)).await?.offset);
            }

            let cases = [
                (
                    "from-offset",
                    StartFrom::Offset(offsets[3]),
                    range(3, 10),
                    "a new group",
                ),
                (
                    "from-time",
                    StartFrom::Time(middle),
                    range(5, 10),
                    "a new group",
                ),
                (
                    "from-offset",
                    StartFrom::Offset(offsets[7]),
                    range(7, 10),
                    "an existing group moved back",
                ),
                (
                    "from-time",
                    StartFrom::Time(middle),
                    range(5, 10),
                    "an existing group moved back",
                ),
            ];
            for (group, start, want, who) in cases {
                let what = format!(
                    "{who} (`{group}`) subscribing with {start:?} must get events {}",
                    list(want.iter().copied())
                );
                let mut pump = ctx
                    .pump(ctx.options(group, [&topic])?.start(start), 1)
                    .await?;
                ack_all(&ctx, &mut pump, &want, within)
                    .await
                    .context(&what)?;
                pump.settle(&what).await?;
                pump.close().await?;
            }
            Ok(())
        },
    )
    .await
}
