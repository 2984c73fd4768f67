#![allow(missing_docs)]
use std::time::Duration;
use ovasabi_core::{DeadLetter, Event, Ordering, Publisher, SubscribeOptions, Subscriber, Bus};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use tokio::time::{timeout, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_b1() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    bus.publish("p.events", Event::new("t.happened", "/t")).await.unwrap();
    let opts = SubscribeOptions::new("g", ["p.events"]).unwrap().ack_timeout(Duration::from_millis(400)).ordering(Ordering::PerKey);
    let mut a = bus.subscribe(opts.clone()).await.unwrap();
    let d1 = a.next().await.unwrap().unwrap();
    println!("d1 attempt {}", d1.attempt());
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(a);
    let mut b = bus.subscribe(opts.clone()).await.unwrap();
    let d2 = b.next().await.unwrap().unwrap();
    let t2 = Instant::now();
    println!("d2 attempt {}", d2.attempt());
    let r = timeout(Duration::from_millis(390), b.next()).await;
    match r {
        Ok(Some(Ok(d3))) => println!("REDELIVERED attempt {} after {:?} (ack timeout 400ms)", d3.attempt(), t2.elapsed()),
        _ => println!("no early redelivery"),
    }
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_b2() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    bus.publish("p.events", Event::new("t.happened", "/t")).await.unwrap();
    let opts = SubscribeOptions::new("g", ["p.events"]).unwrap().ack_timeout(Duration::from_millis(200)).max_in_flight(1);
    let mut a = bus.subscribe(opts.clone()).await.unwrap();
    let d1 = a.next().await.unwrap().unwrap();
    bus.publish("p.events", Event::new("t.happened", "/t")).await.unwrap();
    let mut b = bus.subscribe(opts.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let x = b.next().await.unwrap().unwrap();
    println!("b holds offset {}", x.info().offset);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // b polls: runs expire (d1 requeued) but cannot claim (max_in_flight 1)
    let _ = timeout(Duration::from_millis(20), b.next()).await;
    let r = d1.dead_letter(DeadLetter { reason: "late".into(), error: None }).await;
    println!("late dead_letter: {r:?}");
    x.ack().await.unwrap();
    let again = timeout(Duration::from_millis(500), b.next()).await;
    match again {
        Ok(Some(Ok(d))) => println!("REDELIVERED offset {} attempt {}", d.info().offset, d.attempt()),
        _ => println!("not redelivered"),
    }
    let t = bus.topics().await.unwrap();
    println!("{t:?}");
    bus.close().await.unwrap();
}
