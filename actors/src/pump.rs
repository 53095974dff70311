//! What every consuming actor's pump shares: subscribing with backoff, and handing a batch
//! to its actor.
//!
//! A pump is a task beside an actor. It does the bus's long polls so the actor's mailbox
//! never waits on them, and it hands each batch over and waits until the actor has settled
//! it before pulling more.

use std::time::Duration;

use ractor::{ActorRef, ActorStatus, MessagingErr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::ports::{ConsumerSpec, Delivery, EventBus, PortError, Subscription};

/// A running pump task; dropping it (with the actor's state) stops the task, so an actor
/// needs no `post_stop` for it.
#[derive(Debug)]
pub struct Pump(JoinHandle<()>);

impl Pump {
    /// Runs `task` as a pump.
    pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Pump {
        Pump(tokio::spawn(task))
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delay before the next attempt after `failures` consecutive failures: 250 ms doubling up
/// to 30 s.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64 << failures.min(7)).min(Duration::from_secs(30))
}

/// Subscribes, retrying with backoff until it works. A bus outage is not a crash: the
/// supervisor is not involved, and `/readyz` reports the bus meanwhile.
pub async fn subscribe(
    bus: &dyn EventBus,
    spec: &ConsumerSpec,
    actor: &'static str,
) -> Box<dyn Subscription> {
    let mut failures = 0u32;
    loop {
        match bus.subscribe(spec).await {
            Ok(sub) => return sub,
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = retry_delay(failures);
                tracing::warn!(actor, error = %e, delay_ms = delay.as_millis() as u64, "cannot subscribe; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether the pump's actor still runs. A killed actor skips `post_stop`, so the pump
/// checks this itself.
pub fn actor_alive<M>(actor: &ActorRef<M>) -> bool {
    matches!(actor.get_status(), ActorStatus::Running)
}

/// Hands `batch` to `actor` as the message `wrap` builds and waits until the actor has
/// settled it. Returns false when the actor is gone; a batch it never received is given
/// back to the bus at once (`unwrap` recovers it from the undelivered message) instead of
/// waiting out the ack deadline.
pub async fn hand_over<M: ractor::Message>(
    actor: &ActorRef<M>,
    batch: Vec<Box<dyn Delivery>>,
    wrap: impl FnOnce(Vec<Box<dyn Delivery>>, oneshot::Sender<()>) -> M,
    unwrap: impl FnOnce(M) -> Option<Vec<Box<dyn Delivery>>>,
) -> bool {
    match cast_batch(actor, batch, wrap, unwrap).await {
        Some(settled) => settled.await.is_ok(),
        None => false,
    }
}

/// Hands `batch` to `actor` without waiting for it to be settled; the receiver answers
/// once it is. `None` when the actor is gone (the batch is given back to the bus, as in
/// [`hand_over`]).
async fn cast_batch<M: ractor::Message>(
    actor: &ActorRef<M>,
    batch: Vec<Box<dyn Delivery>>,
    wrap: impl FnOnce(Vec<Box<dyn Delivery>>, oneshot::Sender<()>) -> M,
    unwrap: impl FnOnce(M) -> Option<Vec<Box<dyn Delivery>>>,
) -> Option<oneshot::Receiver<()>> {
    let (tx, rx) = oneshot::channel();
    match actor.cast(wrap(batch, tx)) {
        Ok(()) => Some(rx),
        Err(MessagingErr::SendErr(msg)) => {
            for d in unwrap(msg).into_iter().flatten() {
                let _ = d.nak(Duration::ZERO).await;
            }
            None
        }
        Err(_) => None,
    }
}

/// A delivery holding one of a windowed pump's slots; the slot frees when the actor drops
/// the delivery, settled or not (an unsettled one comes back from the bus).
struct Held {
    delivery: Box<dyn Delivery>,
    _slot: OwnedSemaphorePermit,
}

#[async_trait::async_trait]
impl Delivery for Held {
    fn subject(&self) -> &str {
        self.delivery.subject()
    }
    fn payload(&self) -> &[u8] {
        self.delivery.payload()
    }
    fn delivered(&self) -> u64 {
        self.delivery.delivered()
    }
    fn pending(&self) -> Option<u64> {
        self.delivery.pending()
    }
    fn binding_error(&self) -> Option<&events::DecodeError> {
        self.delivery.binding_error()
    }
    async fn ack(&self) -> Result<(), PortError> {
        self.delivery.ack().await
    }
    async fn nak(&self, delay: Duration) -> Result<(), PortError> {
        self.delivery.nak(delay).await
    }
    async fn term(&self) -> Result<(), PortError> {
        self.delivery.term().await
    }
}

/// The pump of an actor that works each delivery on its own, for work whose items take
/// very different times (calls to a remote log): it holds at most `window` deliveries
/// (pulled and not yet dropped by the actor) and pulls again once a quarter of the window
/// is free, handing each batch over without waiting for it to be settled. So a batch never
/// waits for its slowest member, and the actor always has work queued behind the slow
/// ones. The actor must work on a batch beside its mailbox and drop each delivery once
/// settled. Returns when the actor is gone.
pub async fn run_window<M: ractor::Message>(
    bus: std::sync::Arc<dyn EventBus>,
    spec: ConsumerSpec,
    actor_name: &'static str,
    window: usize,
    actor: ActorRef<M>,
    wrap: impl Fn(Vec<Box<dyn Delivery>>, oneshot::Sender<()>) -> M,
    unwrap: impl Fn(M) -> Option<Vec<Box<dyn Delivery>>>,
) {
    let window = window.max(1);
    // Pulling for every single freed slot would cost the bus a request per message.
    let refill = u32::try_from((window / 4).max(1)).unwrap_or(1);
    let slots = std::sync::Arc::new(Semaphore::new(window));
    loop {
        let mut sub = subscribe(bus.as_ref(), &spec, actor_name).await;
        let mut failures: u32 = 0;
        while actor_alive(&actor) {
            let Ok(first) = slots.clone().acquire_many_owned(refill).await else {
                return;
            };
            let mut free: Vec<OwnedSemaphorePermit> = vec![first];
            while let Ok(more) = slots.clone().try_acquire_owned() {
                free.push(more);
            }
            // The first permit stands for `refill` slots; split it so each delivery
            // holds one.
            let mut free: Vec<OwnedSemaphorePermit> = free
                .into_iter()
                .flat_map(|mut p| {
                    let n = p.num_permits();
                    let mut one_each: Vec<OwnedSemaphorePermit> =
                        (1..n).filter_map(|_| p.split(1)).collect();
                    one_each.push(p);
                    one_each
                })
                .collect();
            match sub.next_batch(free.len(), Duration::from_secs(1)).await {
                Ok(b) if b.is_empty() => failures = 0,
                Ok(b) => {
                    failures = 0;
                    let batch: Vec<Box<dyn Delivery>> = b
                        .into_iter()
                        .filter_map(|delivery| {
                            free.pop().map(|slot| {
                                Box::new(Held {
                                    delivery,
                                    _slot: slot,
                                }) as Box<dyn Delivery>
                            })
                        })
                        .collect();
                    if cast_batch(&actor, batch, &wrap, &unwrap).await.is_none() {
                        // The actor is gone; its replacement starts a new pump.
                        return;
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = retry_delay(failures);
                    tracing::warn!(actor = actor_name, error = %e, delay_ms = delay.as_millis() as u64, "subscription failed; resubscribing");
                    tokio::time::sleep(delay).await;
                    break;
                }
            }
        }
        if !actor_alive(&actor) {
            return;
        }
    }
}

/// The whole pump of an actor that settles each batch it is handed: subscribe, pull up to
/// `batch` messages at a time, hand each non-empty batch over and wait until it is settled,
/// and resubscribe with backoff when the subscription fails. Returns when the actor is gone.
pub async fn run_batches<M: ractor::Message>(
    bus: std::sync::Arc<dyn EventBus>,
    spec: ConsumerSpec,
    actor_name: &'static str,
    batch: usize,
    actor: ActorRef<M>,
    wrap: impl Fn(Vec<Box<dyn Delivery>>, oneshot::Sender<()>) -> M,
    unwrap: impl Fn(M) -> Option<Vec<Box<dyn Delivery>>>,
) {
    loop {
        let mut sub = subscribe(bus.as_ref(), &spec, actor_name).await;
        let mut failures: u32 = 0;
        while actor_alive(&actor) {
            match sub.next_batch(batch, Duration::from_secs(1)).await {
                Ok(b) if b.is_empty() => failures = 0,
                Ok(b) => {
                    failures = 0;
                    if !hand_over(&actor, b, &wrap, &unwrap).await {
                        // The actor is gone; its replacement starts a new pump.
                        return;
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = retry_delay(failures);
                    tracing::warn!(actor = actor_name, error = %e, delay_ms = delay.as_millis() as u64, "subscription failed; resubscribing");
                    tokio::time::sleep(delay).await;
                    break;
                }
            }
        }
        if !actor_alive(&actor) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retry_delay_doubles_to_its_cap() {
        assert_eq!(retry_delay(0), Duration::from_millis(250));
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(6), Duration::from_secs(16));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
    }
}
