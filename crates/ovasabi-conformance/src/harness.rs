//! What scenarios share: a context with unique names and bounded bus calls, a [`Pump`] that
//! merges subscriptions into one channel, and [`consume`], which settles deliveries until
//! every expected event is done.
//!
//! Events are told apart by id: a scenario's event `i` has id `<token>-<i>`, so any delivery
//! maps back to the index it was published as ([`index_of`]), and a delivery of an event the
//! scenario never published is reported as such.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Display};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ovasabi_core::naming::dead_letter_topic;
use ovasabi_core::{Bus, BusError, Delivery, Event, Published, SubscribeOptions, Subscription};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Backend, Capabilities, Failure};

/// Returns early with a [`Failure`] built like `format!`.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::Failure::new(format!($($arg)*)))
    };
}

/// Fails unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            fail!($($arg)*);
        }
    };
}

/// How long one bus call (publish, subscribe, ack, close…) may take.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a single expected delivery may take to arrive.
pub(crate) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for a whole batch of events to be consumed.
pub(crate) const BULK_TIMEOUT: Duration = Duration::from_secs(60);
/// The ack timeout of a scenario that does not test ack timeouts: far beyond its windows, so
/// a machine that stalls the test for a while (ten stress copies on two cores) cannot have a
/// delivery time out and come back between its arrival and its ack.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long "nothing more arrives" is watched.
pub(crate) const SETTLE: Duration = Duration::from_millis(400);
/// The bound on a whole scenario, for the wait nobody thought of.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// The type every scenario event has.
pub(crate) const EVENT_TYPE: &str = "conformance.tested";

/// A capability a scenario (or a part of one) needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Need {
    Persistent,
    Restart,
    OrderPerKey,
    ConcurrentKeys,
    Replay,
}

impl Need {
    fn held_by(self, caps: &Capabilities) -> bool {
        match self {
            Need::Persistent => caps.persistent,
            Need::Restart => caps.restart,
            Need::OrderPerKey => caps.order_per_key,
            Need::ConcurrentKeys => caps.concurrent_keys,
            Need::Replay => caps.replay,
        }
    }
}

impl Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::Persistent => "persistent",
            Need::Restart => "restart",
            Need::OrderPerKey => "order_per_key",
            Need::ConcurrentKeys => "concurrent_keys",
            Need::Replay => "replay",
        })
    }
}

/// Runs one scenario: skips it if the backend lacks what it needs, opens a bus, runs `body`
/// within the scenario bound, closes the bus, hands the topics it named to
/// [`Backend::teardown`] (passed, failed or panicked), and names the scenario and backend in
/// any failure.
pub(crate) async fn run<'a, F, Fut>(
    backend: &'a dyn Backend,
    scenario: &'static str,
    needs: &[Need],
    body: F,
) -> Result<(), Failure>
where
    F: FnOnce(Ctx, &'a dyn Backend) -> Fut,
    Fut: Future<Output = Result<(), Failure>> + Send + 'a,
{
    let caps = backend.capabilities();
    let name = caps.name;
    let tag = |f: Failure| f.at(scenario, name);
    if let Some(need) = needs.iter().find(|n| !n.held_by(&caps)) {
        println!("skipped: {scenario} needs {need}, which {name} lacks");
        return Ok(());
    }
    let op_timeout = caps.scaled(OP_TIMEOUT);
    let bus = match tokio::time::timeout(op_timeout, backend.open()).await {
        Ok(Ok(bus)) => bus,
        Ok(Err(e)) => return Err(tag(Failure::new(format!("opening the bus failed: {e}")))),
        Err(_) => {
            return Err(tag(Failure::new(format!(
                "opening the bus did not finish within {op_timeout:?}"
            ))))
        }
    };
    let ctx = Ctx::new(scenario, caps, bus);
    let limit = ctx.scaled(SCENARIO_TIMEOUT);
    let running = AssertUnwindSafe(body(ctx.clone(), backend)).catch_unwind();
    let outcome = match tokio::time::timeout(limit, running).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            let _ = tokio::time::timeout(op_timeout, ctx.bus().close()).await;
            teardown(backend, &ctx, op_timeout).await;
            std::panic::resume_unwind(panic);
        }
        Err(_) => Err(Failure::new(format!(
            "did not finish within {limit:?}: a bus call or wait hung"
        ))),
    };
    let closed = tokio::time::timeout(op_timeout, ctx.bus().close()).await;
    teardown(backend, &ctx, op_timeout).await;
    outcome.map_err(tag)?;
    match closed {
        Ok(Ok(())) | Ok(Err(BusError::Closed)) => Ok(()),
        Ok(Err(e)) => Err(tag(Failure::new(format!(
            "closing the bus at the end failed: {e}"
        )))),
        Err(_) => Err(tag(Failure::new(format!(
            "closing the bus at the end did not finish within {op_timeout:?}"
        )))),
    }
}

/// Hands every topic the scenario named, and each one's dead-letter topic, to
/// [`Backend::teardown`], within `limit`.
async fn teardown(backend: &dyn Backend, ctx: &Ctx, limit: Duration) {
    let topics: Vec<String> = ctx
        .inner
        .topics
        .lock()
        .expect("topics lock")
        .iter()
        .flat_map(|t| [t.clone(), dead_letter_topic(t)])
        .collect();
    if topics.is_empty() {
        return;
    }
    if tokio::time::timeout(limit, backend.teardown(&topics))
        .await
        .is_err()
    {
        println!(
            "note: {} on {}: removing its topics did not finish within {limit:?}",
            ctx.inner.scenario,
            ctx.caps().name
        );
    }
}

/// One scenario run: the bus, the backend's capabilities and a unique token for names.
/// Cheap to clone into tasks.
#[derive(Clone)]
pub(crate) struct Ctx {
    inner: Arc<CtxInner>,
}

struct CtxInner {
    scenario: &'static str,
    caps: Capabilities,
    token: String,
    source: String,
    bus: Mutex<Arc<dyn Bus>>,
    /// Every topic [`Ctx::topic`] named, for [`Backend::teardown`].
    topics: Mutex<BTreeSet<String>>,
}

impl Ctx {
    fn new(scenario: &'static str, caps: Capabilities, bus: Arc<dyn Bus>) -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Ctx {
            inner: Arc::new(CtxInner {
                source: format!("/ovasabi/conformance/{scenario}/{token}"),
                scenario,
                caps,
                token,
                bus: Mutex::new(bus),
                topics: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// The bus currently open.
    pub(crate) fn bus(&self) -> Arc<dyn Bus> {
        self.inner.bus.lock().expect("bus lock").clone()
    }

    pub(crate) fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }

    pub(crate) fn scaled(&self, duration: Duration) -> Duration {
        self.inner.caps.scaled(duration)
    }

    /// Prints the skip message for a part of the scenario and returns true when the backend
    /// lacks `need`.
    pub(crate) fn skip_part(&self, part: &str, need: Need) -> bool {
        if need.held_by(&self.inner.caps) {
            return false;
        }
        println!(
            "skipped: {} ({part}) needs {need}, which {} lacks",
            self.inner.scenario, self.inner.caps.name
        );
        true
    }

    /// `conf.<scenario>.<token>`: the prefix of every topic of this run.
    pub(crate) fn topic_prefix(&self) -> String {
        format!("conf.{}.{}", self.inner.scenario, self.inner.token)
    }

    /// A topic unique to this run; removed by [`Backend::teardown`] when the scenario ends.
    pub(crate) fn topic(&self, name: &str) -> String {
        let topic = format!("{}.{name}", self.topic_prefix());
        self.inner
            .topics
            .lock()
            .expect("topics lock")
            .insert(topic.clone());
        topic
    }

    /// A consumer group unique to this run.
    pub(crate) fn group(&self, name: &str) -> String {
        format!("conf-{}-{}-{name}", self.inner.scenario, self.inner.token)
    }

    /// The id of event `i` of this run.
    pub(crate) fn event_id(&self, i: usize) -> String {
        format!("{}-{i}", self.inner.token)
    }

    /// Event `i`: a small JSON payload and nothing else.
    pub(crate) fn event(&self, i: usize) -> Event {
        Event::new(EVENT_TYPE, self.inner.source.clone())
            .with_id(self.event_id(i))
            .with_json(&serde_json::json!({ "n": i }))
    }

    /// The source every event of this run has.
    pub(crate) fn source(&self) -> &str {
        &self.inner.source
    }

    /// Which event of this run `event` is, if it is one.
    pub(crate) fn index_of(&self, event: &Event) -> Option<usize> {
        let (token, i) = event.id.rsplit_once('-')?;
        if token != self.inner.token {
            return None;
        }
        i.parse().ok()
    }

    /// Subscription options for `group` (made unique) on `topics`, with the defaults, except
    /// the ack timeout: [`ACK_TIMEOUT`] (scaled), unless the scenario sets its own.
    pub(crate) fn options<I, S>(&self, group: &str, topics: I) -> Result<SubscribeOptions, Failure>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        SubscribeOptions::new(self.group(group), topics)
            .map(|o| o.ack_timeout(self.scaled(ACK_TIMEOUT)))
            .map_err(|e| Failure::new(format!("building subscribe options failed: {e}")))
    }

    /// Runs one bus call with a timeout; a bus error or a timeout becomes a failure naming
    /// `what`.
    pub(crate) async fn op<T>(
        &self,
        what: impl Display,
        call: impl Future<Output = Result<T, BusError>>,
    ) -> Result<T, Failure> {
        let limit = self.scaled(OP_TIMEOUT);
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => fail!("{what} failed: {e}"),
            Err(_) => fail!("{what} did not finish within {limit:?}"),
        }
    }

    /// Runs one bus call that must be refused; returns the error.
    pub(crate) async fn refused<T>(
        &self,
        what: impl Display,
        call: impl Future<Output = Result<T, BusError>>,
    ) -> Result<BusError, Failure> {
        let limit = self.scaled(OP_TIMEOUT);
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(_)) => fail!("{what} should have been refused, but it returned Ok"),
            Ok(Err(e)) => Ok(e),
            Err(_) => fail!("{what} did not finish within {limit:?}"),
        }
    }

    pub(crate) async fn publish(&self, topic: &str, event: Event) -> Result<Published, Failure> {
        let what = format!("publishing event `{}` to `{topic}`", event.id);
        self.op(what, self.bus().publish(topic, event)).await
    }

    /// Publishes `events` to `topic` from `tasks` concurrent tasks, each publishing its share
    /// one after another. Returns where each event landed, in the order of `events`.
    pub(crate) async fn publish_concurrently(
        &self,
        topic: &str,
        events: Vec<Event>,
        tasks: usize,
    ) -> Result<Vec<Published>, Failure> {
        let tasks = tasks.max(1);
        let count = events.len();
        let mut shares: Vec<Vec<(usize, Event)>> = (0..tasks).map(|_| Vec::new()).collect();
        for (i, event) in events.into_iter().enumerate() {
            shares[i % tasks].push((i, event));
        }
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let ctx = self.clone();
                let topic = topic.to_owned();
                tokio::spawn(async move {
                    let mut landed = Vec::with_capacity(share.len());
                    for (i, event) in share {
                        landed.push((i, ctx.publish(&topic, event).await?));
                    }
                    Ok::<_, Failure>(landed)
                })
            })
            .collect();
        let mut published: Vec<Option<Published>> = vec![None; count];
        for outcome in join_all_tasks(handles, "a publishing task").await? {
            for (i, p) in outcome? {
                published[i] = Some(p);
            }
        }
        Ok(published
            .into_iter()
            .map(|p| p.expect("every event published"))
            .collect())
    }

    pub(crate) async fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> Result<Subscription, Failure> {
        let what = format!("subscribing group `{}`", options.group);
        self.op(what, self.bus().subscribe(options)).await
    }

    /// Opens `members` subscriptions with `options` and pumps them.
    pub(crate) async fn pump(
        &self,
        options: SubscribeOptions,
        members: usize,
    ) -> Result<Pump, Failure> {
        let mut subs = Vec::with_capacity(members);
        for _ in 0..members {
            subs.push(self.subscribe(options.clone()).await?);
        }
        Ok(Pump::start(self.clone(), subs))
    }

    /// Closes the current bus (it must close cleanly) and opens a new one on the same
    /// backend: a process restart.
    /// A bus that is already closed may answer the close with `Closed`.
    pub(crate) async fn restart(&self, backend: &dyn Backend) -> Result<(), Failure> {
        let closing = async {
            match self.bus().close().await {
                Err(BusError::Closed) => Ok(()),
                other => other,
            }
        };
        self.op("closing the bus before the restart", closing)
            .await?;
        let bus = self.op("reopening the bus", backend.open()).await?;
        *self.inner.bus.lock().expect("bus lock") = bus;
        Ok(())
    }
}

/// Awaits spawned tasks, each within the bulk bound; a panic or a hang becomes a failure.
pub(crate) async fn join_all_tasks<T>(
    handles: Vec<JoinHandle<T>>,
    what: &str,
) -> Result<Vec<T>, Failure> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match tokio::time::timeout(BULK_TIMEOUT * 2, handle).await {
            Ok(Ok(value)) => out.push(value),
            Ok(Err(e)) => fail!("{what} panicked or was cancelled: {e}"),
            Err(_) => fail!("{what} did not finish within {:?}", BULK_TIMEOUT * 2),
        }
    }
    Ok(out)
}

/// Adds context in front of a failure's message.
pub(crate) trait Context<T> {
    fn context(self, context: impl Display) -> Result<T, Failure>;
}

impl<T> Context<T> for Result<T, Failure> {
    fn context(self, context: impl Display) -> Result<T, Failure> {
        self.map_err(|mut f| {
            f.message = format!("{context}: {}", f.message);
            f
        })
    }
}

/// Lists indexes briefly: `[1, 2, 3, … and 7 more]`.
pub(crate) fn list(indexes: impl IntoIterator<Item = usize>) -> String {
    const SHOWN: usize = 20;
    let all: Vec<usize> = indexes.into_iter().collect();
    let shown: Vec<String> = all.iter().take(SHOWN).map(usize::to_string).collect();
    if all.len() > SHOWN {
        format!("[{}, … and {} more]", shown.join(", "), all.len() - SHOWN)
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// One delivery taken from a [`Pump`].
pub(crate) struct Seen {
    /// Which subscription of the pump it came from.
    pub(crate) member: usize,
    /// The event's index in this run.
    pub(crate) index: usize,
    /// When the pump took it from the subscription.
    pub(crate) at: Instant,
    pub(crate) delivery: Delivery,
}

impl Seen {
    pub(crate) fn attempt(&self) -> u32 {
        self.delivery.attempt()
    }

    pub(crate) fn describe(&self) -> String {
        let info = self.delivery.info();
        format!(
            "event {} (topic `{}`, offset {}, attempt {})",
            self.index, info.topic, info.offset, info.attempt
        )
    }

    /// Acks, as one bounded bus call.
    pub(crate) async fn ack(&self, ctx: &Ctx) -> Result<(), Failure> {
        ctx.op(format!("acking {}", self.describe()), self.delivery.ack())
            .await
    }
}

/// Subscriptions merged into one channel: a task per subscription takes deliveries and sends
/// them on. Dropping or closing the pump stops the tasks, which close their subscriptions;
/// deliveries still in the channel are dropped unacked, so they go back to the group.
pub(crate) struct Pump {
    ctx: Ctx,
    rx: mpsc::Receiver<Result<Seen, Failure>>,
    tasks: Vec<JoinHandle<Result<(), Failure>>>,
}

impl Pump {
    pub(crate) fn start(ctx: Ctx, subs: Vec<Subscription>) -> Pump {
        let (tx, rx) = mpsc::channel(64);
        let tasks = subs
            .into_iter()
            .enumerate()
            .map(|(member, sub)| tokio::spawn(pump_one(ctx.clone(), member, sub, tx.clone())))
            .collect();
        Pump { ctx, rx, tasks }
    }

    /// The next delivery within `within`, or `None` if nothing arrived.
    pub(crate) async fn next(&mut self, within: Duration) -> Result<Option<Seen>, Failure> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok(seen))) => Ok(Some(seen)),
            Ok(Some(Err(failure))) => Err(failure),
            Ok(None) => fail!("every subscription of the pump has ended"),
        }
    }

    /// The next item, waiting as long as it takes: for loops that race it with other work in
    /// `select!` (it is cancel-safe). `None` once every subscription ended.
    pub(crate) async fn recv(&mut self) -> Option<Result<Seen, Failure>> {
        self.rx.recv().await
    }

    /// The next delivery, which must arrive within the (scaled) delivery timeout.
    pub(crate) async fn expect(&mut self, what: impl Display) -> Result<Seen, Failure> {
        let within = self.ctx.scaled(DELIVERY_TIMEOUT);
        self.expect_within(within, what).await
    }

    pub(crate) async fn expect_within(
        &mut self,
        within: Duration,
        what: impl Display,
    ) -> Result<Seen, Failure> {
        match self.next(within).await? {
            Some(seen) => Ok(seen),
            None => fail!("waited {within:?} for {what}; nothing was delivered"),
        }
    }

    /// Checks nothing is delivered for `window`.
    pub(crate) async fn expect_nothing(
        &mut self,
        window: Duration,
        why: impl Display,
    ) -> Result<(), Failure> {
        match self.next(window).await? {
            None => Ok(()),
            Some(seen) => fail!(
                "expected no delivery for {window:?} ({why}), but got {} to member {}",
                seen.describe(),
                seen.member
            ),
        }
    }

    /// Checks nothing is delivered for the (scaled) settle window.
    pub(crate) async fn settle(&mut self, why: impl Display) -> Result<(), Failure> {
        let window = self.ctx.scaled(SETTLE);
        self.expect_nothing(window, why).await
    }

    /// Stops the tasks and closes the subscriptions; fails if a close hangs or errs.
    pub(crate) async fn close(self) -> Result<(), Failure> {
        let Pump { rx, tasks, .. } = self;
        drop(rx);
        for outcome in join_all_tasks(tasks, "a subscription task").await? {
            outcome?;
        }
        Ok(())
    }
}

async fn pump_one(
    ctx: Ctx,
    member: usize,
    mut sub: Subscription,
    tx: mpsc::Sender<Result<Seen, Failure>>,
) -> Result<(), Failure> {
    loop {
        tokio::select! {
            biased;
            _ = tx.closed() => break,
            item = sub.next() => {
                let item = match item {
                    Some(Ok(delivery)) => match ctx.index_of(delivery.event()) {
                        Some(index) => Ok(Seen { member, index, at: Instant::now(), delivery }),
                        None => Err(Failure::new(format!(
                            "member {member} received event `{}` on topic `{}`, which this scenario never published",
                            delivery.event().id,
                            delivery.info().topic
                        ))),
                    },
                    Some(Err(e)) => Err(Failure::new(format!(
                        "member {member}'s subscription yielded an error: {e}"
                    ))),
                    None => {
                        let _ = tx
                            .send(Err(Failure::new(format!(
                                "member {member}'s subscription ended (next() returned None) before the scenario closed it"
                            ))))
                            .await;
                        return Ok(());
                    }
                };
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        }
    }
    ctx.op(format!("closing member {member}'s subscription"), async {
        sub.close().await;
        Ok(())
    })
    .await
}

/// What [`consume`] does with a delivery.
pub(crate) enum Act {
    /// Ack it.
    Ack,
    /// Nack it with this delay and error.
    Nack(Duration, String),
    /// Keep it, unsettled, in [`Tally::held`].
    Hold,
}

/// What [`consume`] saw.
#[derive(Default)]
pub(crate) struct Tally {
    /// Every delivery in the order the pump handed them over: (index, attempt, member, topic).
    pub(crate) deliveries: Vec<(usize, u32, usize, String)>,
    /// Indexes whose ack returned Ok.
    pub(crate) acked: BTreeSet<usize>,
    /// The event as first delivered, by index.
    pub(crate) events: BTreeMap<usize, Arc<Event>>,
    /// Offsets as first delivered, by index.
    pub(crate) offsets: BTreeMap<usize, u64>,
    /// Deliveries the policy held.
    pub(crate) held: Vec<Seen>,
    /// Deliveries of events that were allowed but not required.
    pub(crate) extra: BTreeSet<usize>,
    /// Nacks sent.
    pub(crate) nacks: usize,
    /// The groups deliveries named.
    pub(crate) groups: BTreeSet<String>,
}

impl Tally {
    /// Redeliveries (attempt above 1) by index.
    pub(crate) fn redelivered(&self) -> BTreeSet<usize> {
        self.deliveries
            .iter()
            .filter(|d| d.1 > 1)
            .map(|d| d.0)
            .collect()
    }

    /// Indexes delivered more than once as attempt 1: duplicates that are no redelivery.
    pub(crate) fn duplicated_first_attempts(&self) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        self.deliveries
            .iter()
            .filter(|d| d.1 == 1)
            .filter(|d| !seen.insert(d.0))
            .map(|d| d.0)
            .collect()
    }

    /// The indexes in the order they were first delivered.
    pub(crate) fn first_delivery_order(&self) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        self.deliveries
            .iter()
            .filter(|d| seen.insert(d.0))
            .map(|d| d.0)
            .collect()
    }

    /// Fails on duplicate first attempts; prints redeliveries.
    pub(crate) fn check_duplicates(&self, ctx: &Ctx) -> Result<(), Failure> {
        let duplicated = self.duplicated_first_attempts();
        ensure!(
            duplicated.is_empty(),
            "{} event(s) were delivered more than once as attempt 1 (a duplicate that is no redelivery): {}",
            duplicated.len(),
            list(duplicated)
        );
        let redelivered = self.redelivered();
        if !redelivered.is_empty() {
            println!(
                "note: {} on {}: {} event(s) redelivered: {}",
                ctx.inner.scenario,
                ctx.caps().name,
                redelivered.len(),
                list(redelivered)
            );
        }
        Ok(())
    }
}

/// Takes deliveries from `pump` and settles each as `policy` says (acks and nacks run
/// concurrently, each in a task of its own) until every index in `must` was acked, or
/// `max_acks` acks in total succeeded. Indexes in `may` are acked too and recorded in
/// [`Tally::extra`]; any other index fails. Waits for every ack and nack it started before
/// returning.
pub(crate) async fn consume(
    ctx: &Ctx,
    pump: &mut Pump,
    must: &BTreeSet<usize>,
    may: &BTreeSet<usize>,
    max_acks: usize,
    within: Duration,
    mut policy: impl FnMut(&Seen) -> Act,
) -> Result<Tally, Failure> {
    let deadline = tokio::time::Instant::now() + within;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, bool, Result<(), Failure>)>();
    let mut tally = Tally::default();
    let mut acks = 0usize;
    let mut outstanding = 0usize;
    let mut failure = None;
    while must.iter().any(|i| !tally.acked.contains(i)) && acks < max_acks {
        tokio::select! {
            item = pump.rx.recv() => {
                let seen = match item {
                    Some(Ok(seen)) => seen,
                    Some(Err(f)) => { failure = Some(f); break; }
                    None => { failure = Some(Failure::new("every subscription of the pump has ended")); break; }
                };
                let index = seen.index;
                if !must.contains(&index) {
                    if may.contains(&index) {
                        tally.extra.insert(index);
                    } else if tally.acked.contains(&index) {
                        failure = Some(Failure::new(format!(
                            "{} was delivered again after its ack had succeeded", seen.describe()
                        )));
                        break;
                    } else {
                        failure = Some(Failure::new(format!(
                            "{} was delivered here, but it was not expected: it was published to another topic, or acked earlier", seen.describe()
                        )));
                        break;
                    }
                }
                let info = seen.delivery.info();
                tally.deliveries.push((index, info.attempt, seen.member, info.topic.clone()));
                tally.offsets.entry(index).or_insert(info.offset);
                if !tally.groups.contains(&info.group) {
                    tally.groups.insert(info.group.clone());
                }
                tally.events.entry(index).or_insert_with(|| seen.delivery.event_arc().clone());
                let act = policy(&seen);
                match act {
                    Act::Hold => tally.held.push(seen),
                    Act::Ack => {
                        outstanding += 1;
                        let ctx = ctx.clone();
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let _ = done.send((index, true, seen.ack(&ctx).await));
                        });
                    }
                    Act::Nack(delay, error) => {
                        outstanding += 1;
                        tally.nacks += 1;
                        let ctx = ctx.clone();
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let what = format!("nacking {}", seen.describe());
                            let outcome = ctx.op(what, seen.delivery.nack(delay, Some(error))).await;
                            let _ = done.send((index, false, outcome));
                        });
                    }
                }
            }
            Some((index, was_ack, outcome)) = done_rx.recv() => {
                outstanding -= 1;
                if let Err(f) = outcome { failure = Some(f); break; }
                if was_ack {
                    tally.acked.insert(index);
                    acks += 1;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let missing: Vec<usize> =
                    must.iter().filter(|i| !tally.acked.contains(i)).copied().collect();
                let (delivered, never): (Vec<usize>, Vec<usize>) = missing
                    .iter()
                    .partition(|i| tally.deliveries.iter().any(|d| d.0 == **i));
                let mut message = format!(
                    "after {within:?}, {} of {} expected events were not acked",
                    missing.len(),
                    must.len()
                );
                if !never.is_empty() {
                    message += &format!("; never delivered: {}", list(never));
                }
                if !delivered.is_empty() {
                    message += &format!(
                        "; delivered but their acks did not complete: {}",
                        list(delivered)
                    );
                }
                message += &format!("; {} deliveries in all", tally.deliveries.len());
                failure = Some(Failure::new(message));
                break;
            }
        }
    }
    // Let every ack and nack started finish, so the caller sees a settled state.
    let drain_limit = ctx.scaled(OP_TIMEOUT);
    while outstanding > 0 {
        match tokio::time::timeout(drain_limit, done_rx.recv()).await {
            Ok(Some((index, was_ack, outcome))) => {
                outstanding -= 1;
                match outcome {
                    Ok(()) if was_ack => {
                        tally.acked.insert(index);
                    }
                    Ok(()) => {}
                    Err(f) => {
                        failure.get_or_insert(f);
                    }
                }
            }
            _ => {
                failure.get_or_insert(Failure::new(format!(
                    "{outstanding} ack(s) or nack(s) did not finish within {drain_limit:?}"
                )));
                break;
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(tally),
    }
}

/// Acks every delivery until every index in `must` was acked; anything else fails.
pub(crate) async fn ack_all(
    ctx: &Ctx,
    pump: &mut Pump,
    must: &BTreeSet<usize>,
    within: Duration,
) -> Result<Tally, Failure> {
    consume(
        ctx,
        pump,
        must,
        &BTreeSet::new(),
        usize::MAX,
        within,
        |_| Act::Ack,
    )
    .await
}

/// `start..end` as a set.
pub(crate) fn range(start: usize, end: usize) -> BTreeSet<usize> {
    (start..end).collect()
}
