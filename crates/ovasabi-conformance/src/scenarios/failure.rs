//! Nacks, ack timeouts and dead letters.

use std::time::{Duration, Instant};

use ovasabi_core::dead_letter;
use ovasabi_core::naming::dead_letter_topic;
use ovasabi_core::{DeadLetter, Event};

use crate::harness::{
    ack_all, consume, range, run, Act, Context, BULK_TIMEOUT, DELIVERY_TIMEOUT, SETTLE,
};
use crate::{Backend, Failure};

/// A nack with a delay is redelivered no sooner than the delay, as attempt 2; after its ack,
/// nothing more.
pub async fn resend_on_nack(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "resend_on_nack", &[], |ctx, _| async move {
        let topic = ctx.topic("retried");
        let mut pump = ctx.pump(ctx.options("retrying", [&topic])?, 1).await?;
        ctx.publish(&topic, ctx.event(0)).await?;

        let first = pump.expect("the first delivery").await?;
        ensure!(
            first.index == 0 && first.attempt() == 1,
            "expected event 0 attempt 1, got {}",
            first.describe()
        );
        let delay = ctx.scaled(Duration::from_millis(300));
        let nacked_at = Instant::now();
        ctx.op(
            "nacking the first delivery",
            first.delivery.nack(delay, Some("simulated failure".to_owned())),
        )
        .await?;
        let second = pump
            .expect_within(delay + ctx.scaled(DELIVERY_TIMEOUT), "the redelivery after the nack")
            .await?;
        ensure!(
            second.index == 0 && second.attempt() == 2,
            "after a nack, expected event 0 attempt 2, got {}",
            second.describe()
        );
        // Timers round; allow a little slack under the delay, never a redelivery at once.
        let waited = second.at.saturating_duration_since(nacked_at);
        ensure!(
            waited + Duration::from_millis(25) >= delay,
            "the event was redelivered {waited:?} after the nack, before the nack's delay of {delay:?}"
        );
        second.ack(&ctx).await?;
        pump.expect_nothing(ctx.scaled(SETTLE).max(delay * 2), "the redelivery was acked")
            .await?;
        pump.close().await
    })
    .await
}

/// A handler that nacks its first 50 deliveries keeps its subscription; all 100 events are
/// acked in the end.
pub async fn continue_after_errors(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 100;
    const ERRORS: usize = 50;
    run(backend, "continue_after_errors", &[], |ctx, _| async move {
        let topic = ctx.topic("flaky");
        // Enough deliveries that no event is dead-lettered by the errors.
        let options = ctx.options("flaky", [&topic])?.max_deliveries(100);
        let mut pump = ctx.pump(options, 1).await?;
        let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
        ctx.publish_concurrently(&topic, events, 4).await?;

        let mut errors = 0;
        let within = ctx.scaled(BULK_TIMEOUT);
        let tally = consume(
            &ctx,
            &mut pump,
            &range(0, EVENTS),
            &range(0, 0),
            usize::MAX,
            within,
            |_| {
                if errors < ERRORS {
                    errors += 1;
                    Act::Nack(
                        Duration::from_millis(10),
                        format!("simulated failure {errors}"),
                    )
                } else {
                    Act::Ack
                }
            },
        )
        .await?;
        ensure!(
            tally.nacks == ERRORS,
            "expected {ERRORS} nacks, sent {}",
            tally.nacks
        );
        tally.check_duplicates(&ctx)?;
        pump.settle("every event was acked").await?;
        pump.close().await
    })
    .await
}

/// With `max_deliveries = 3`, an always-failing event goes to `<topic>.dlq` exactly once
/// after 3 deliveries, with the reason, last error, attempts, group and topic;
/// `Delivery::dead_letter` does the same at once; the group gets neither again.
pub async fn dead_letter_after_max_deliveries(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "dead_letter_after_max_deliveries", &[], |ctx, _| async move {
        let topic = ctx.topic("poisoned");
        let dlq = dead_letter_topic(&topic);
        let mut dead = ctx.pump(ctx.options("dlq-reader", [&dlq])?, 1).await?;
        let options = ctx.options("failing", [&topic])?.max_deliveries(3);
        let group = options.group.clone();
        let mut pump = ctx.pump(options, 1).await?;
        let sent = [
            ctx.event(0).with_subject("always-fails").with_extension("conformancecustom", "kept"),
            ctx.event(1).with_subject("poison").with_extension("conformancecustom", "kept"),
        ];
        for event in &sent {
            ctx.publish(&topic, event.clone()).await?;
        }

        // Event 0: nack every delivery. Event 1: dead-letter it by hand at once.
        let mut attempts = Vec::new();
        let mut explicit_done = false;
        while attempts.len() < 3 || !explicit_done {
            let seen = pump
                .expect(format!(
                    "deliveries of event 0 (seen attempts {attempts:?}, 3 expected) and event 1"
                ))
                .await?;
            match seen.index {
                0 => {
                    attempts.push(seen.attempt());
                    let error = format!("handler failed on attempt {}", seen.attempt());
                    let what = format!("nacking {}", seen.describe());
                    ctx.op(what, seen.delivery.nack(Duration::from_millis(10), Some(error)))
                        .await?;
                }
                _ => {
                    ensure!(
                        !explicit_done,
                        "{} was delivered again after Delivery::dead_letter succeeded",
                        seen.describe()
                    );
                    let why = DeadLetter {
                        reason: "invalid payload".to_owned(),
                        error: Some("field `n` is missing".to_owned()),
                    };
                    ctx.op(format!("dead-lettering {}", seen.describe()), seen.delivery.dead_letter(why))
                        .await?;
                    explicit_done = true;
                }
            }
            ensure!(
                attempts.len() <= 3,
                "event 0 was delivered {} times; max_deliveries is 3",
                attempts.len()
            );
        }
        ensure!(
            attempts == [1, 2, 3],
            "event 0's deliveries had attempts {attempts:?}, expected [1, 2, 3]"
        );
        pump.settle("event 0 reached max_deliveries and event 1 was dead-lettered: both are done for the group")
            .await?;

        let tally = ack_all(&ctx, &mut dead, &range(0, 2), ctx.scaled(BULK_TIMEOUT))
            .await
            .context(format!("reading dead-letter topic `{dlq}`"))?;
        dead.settle("each dead-lettered event appears exactly once in the dead-letter topic")
            .await?;
        tally.check_duplicates(&ctx)?;
        for (i, _, _, delivered_topic) in &tally.deliveries {
            ensure!(
                delivered_topic == &dlq,
                "dead-lettered event {i} was delivered with topic `{delivered_topic}`, expected `{dlq}`"
            );
        }
        let expectations = [
            (0, None, "handler failed on attempt 3", "3"),
            (1, Some("invalid payload"), "field `n` is missing", "1"),
        ];
        for (i, reason, error, attempts) in expectations {
            let got = &tally.events[&i];
            check_dead_letter(&sent[i], got, reason, error, attempts, &group, &topic)
                .context(format!("dead-lettered event {i}"))?;
        }

        let topics = ctx.op("listing topics", ctx.bus().topics()).await?;
        let lag = topics
            .iter()
            .find(|t| t.topic == topic)
            .and_then(|t| t.groups.iter().find(|g| g.group == group))
            .map(|g| g.lag);
        ensure!(
            lag == Some(0),
            "dead-lettered events count as done for their group: expected group `{group}` on `{topic}` to have lag 0, Bus::topics says {lag:?}"
        );
        pump.close().await?;
        dead.close().await
    })
    .await
}

fn check_dead_letter(
    sent: &Event,
    got: &Event,
    reason: Option<&str>,
    error: &str,
    attempts: &str,
    group: &str,
    topic: &str,
) -> Result<(), Failure> {
    let ext = |name: &str| got.extension_str(name).map(str::to_owned);
    let got_reason = ext(dead_letter::REASON);
    match reason {
        Some(r) => ensure!(
            got_reason.as_deref() == Some(r),
            "expected string extension deadletterreason = {r:?}, got {got_reason:?}"
        ),
        None => ensure!(
            got_reason.as_deref().is_some_and(|r| !r.is_empty()),
            "expected a non-empty string extension deadletterreason, got {got_reason:?}"
        ),
    }
    for (name, want) in [
        (dead_letter::ERROR, error),
        (dead_letter::ATTEMPTS, attempts),
        (dead_letter::GROUP, group),
        (dead_letter::TOPIC, topic),
    ] {
        let value = ext(name);
        ensure!(
            value.as_deref() == Some(want),
            "expected string extension {name} = {want:?}, got {value:?} (all extensions: {:?})",
            got.extensions
        );
    }
    ensure!(
        got.id == sent.id
            && got.source == sent.source
            && got.ty == sent.ty
            && got.subject == sent.subject
            && got.data == sent.data
            && got.extension_str("conformancecustom") == Some("kept"),
        "the dead-lettered event lost its own attributes: sent {sent:?}, got {got:?}"
    );
    Ok(())
}

/// A delivery held past a short ack timeout is redelivered as attempt 2; the late ack of the
/// first delivery still succeeds, and afterwards the event is never delivered again.
pub async fn ack_after_timeout(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "ack_after_timeout", &[], |ctx, _| async move {
        let topic = ctx.topic("slow");
        let ack_timeout = ctx.scaled(Duration::from_millis(300));
        let options = ctx.options("slow", [&topic])?.ack_timeout(ack_timeout);
        let mut pump = ctx.pump(options, 1).await?;
        ctx.publish(&topic, ctx.event(0)).await?;

        let first = pump.expect("the first delivery").await?;
        ensure!(first.attempt() == 1, "expected attempt 1, got {}", first.describe());
        let second = pump
            .expect_within(
                ack_timeout + ctx.scaled(DELIVERY_TIMEOUT),
                format!("the redelivery after the ack timeout of {ack_timeout:?}"),
            )
            .await?;
        ensure!(
            second.index == 0 && second.attempt() == 2,
            "expected event 0 attempt 2 after the ack timeout, got {}",
            second.describe()
        );
        let gap = second.at.saturating_duration_since(first.at);
        ensure!(
            gap >= ack_timeout / 2,
            "the event was redelivered {gap:?} after its first delivery, well before the ack timeout of {ack_timeout:?}"
        );

        ctx.op(
            "acking the first delivery after its ack timeout (a late ack is still taken when no other delivery of the event was acked)",
            first.delivery.ack(),
        )
        .await?;
        let acked_at = Instant::now();
        // A redelivery already under way when the ack landed may still arrive; anything taken
        // later than this grace is a delivery of a finished event.
        let grace = ack_timeout / 2;
        let watch_until = acked_at + ack_timeout * 4;
        loop {
            let left = watch_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(seen) = pump.next(left).await? else { break };
            ensure!(
                seen.at <= acked_at + grace,
                "{} was delivered {:?} after the late ack of the first delivery succeeded; an acked event is done",
                seen.describe(),
                seen.at.saturating_duration_since(acked_at)
            );
        }
        // Acking the redelivery too must not panic; Ok or an error are both fine.
        let late = tokio::time::timeout(ctx.scaled(crate::harness::OP_TIMEOUT), second.delivery.ack()).await;
        ensure!(late.is_ok(), "acking the redelivery of an already acked event hung");
        pump.settle("the event was acked").await?;
        pump.close().await
    })
    .await
}
