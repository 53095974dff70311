//! A one-for-one supervisor with exponential backoff and a restart budget.
//!
//! ractor reports a child's panic or error to its supervisor but has no restart policy of
//! its own. This supervisor restarts each failed child on its own, after a backoff that
//! doubles with every recent failure, and gives up on a child that fails more than
//! `max_restarts` times within `window`: it is marked failed, which turns `/readyz` red,
//! and counted as an escalation. A child's failure never stops the supervisor or the
//! process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

use crate::health::{ChildStatus, Health};

/// Starts one child linked to the given supervisor and returns its cell.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Stable name, used in metrics and health.
    pub name: String,
    /// Whether readiness depends on this child.
    pub required: bool,
    /// Starts a fresh instance.
    pub start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child built by `factory` on every (re)start.
    pub fn new<A, F>(name: impl Into<String>, required: bool, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        ChildSpec {
            name: name.into(),
            required,
            start: Arc::new(move |supervisor| {
                let (actor, args) = factory();
                Box::pin(async move {
                    let (r, _join) = Actor::spawn_linked(None, actor, args, supervisor).await?;
                    Ok(r.get_cell())
                })
            }),
        }
    }
}

/// The restart budget and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub initial_backoff: Duration,
    /// Longest delay between restarts.
    pub max_backoff: Duration,
    /// Restarts allowed within `window` before escalating.
    pub max_restarts: usize,
    /// The sliding window for the budget.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before the `n`th recent restart (1-based).
    pub fn backoff(&self, n: usize) -> Duration {
        let shift = u32::try_from(n.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        self.initial_backoff
            .saturating_mul(1 << shift)
            .min(self.max_backoff)
    }
}

/// The supervisor actor. Config lives here; children live in [`SupervisorState`].
#[derive(Debug, Clone)]
pub struct Supervisor {
    policy: RestartPolicy,
    health: Health,
}

impl Supervisor {
    /// A supervisor with `policy` that reports into `health`.
    pub fn new(policy: RestartPolicy, health: Health) -> Self {
        Supervisor { policy, health }
    }
}

/// Messages the supervisor handles.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// (Re)start the named child now.
    Start(String),
    /// Add and start a child.
    Add(ChildSpec),
    /// Stop every child, waiting for each to finish its current work.
    Drain(ractor::RpcReplyPort<()>),
    /// Every child's name and, while it runs, its cell.
    Children(ractor::RpcReplyPort<Vec<(String, Option<ActorCell>)>>),
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    recent: VecDeque<Instant>,
    escalated: bool,
}

/// The supervisor's state: its children.
pub struct SupervisorState {
    children: Vec<Child>,
    draining: bool,
}

impl Supervisor {
    async fn start_child(&self, myself: &ActorRef<SupervisorMsg>, child: &mut Child) {
        match (child.spec.start)(myself.get_cell()).await {
            Ok(cell) => {
                tracing::info!(actor = %child.spec.name, "actor started");
                child.cell = Some(cell);
                self.health
                    .set(&child.spec.name, child.spec.required, ChildStatus::Running);
            }
            Err(e) => {
                self.child_down(myself, child, format!("failed to start: {e}"));
            }
        }
    }

    fn child_down(&self, myself: &ActorRef<SupervisorMsg>, child: &mut Child, why: String) {
        child.cell = None;
        let name = child.spec.name.clone();
        let now = Instant::now();
        while child
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            child.recent.pop_front();
        }
        if child.recent.len() >= self.policy.max_restarts {
            child.escalated = true;
            tracing::error!(
                actor = %name,
                restarts = child.recent.len(),
                window_secs = self.policy.window.as_secs(),
                error = %why,
                "restart budget spent; actor stays down until provd is restarted"
            );
            metrics::counter!("provd_actor_escalations_total", "actor" => name.clone())
                .increment(1);
            self.health.set(
                &name,
                child.spec.required,
                ChildStatus::Failed(format!("restart budget spent; last error: {why}")),
            );
            return;
        }
        child.recent.push_back(now);
        let delay = self.policy.backoff(child.recent.len());
        tracing::warn!(actor = %name, error = %why, delay_ms = delay.as_millis() as u64, "actor down; restarting");
        metrics::counter!("provd_actor_restarts_total", "actor" => name.clone()).increment(1);
        self.health.count_restart(&name);
        self.health
            .set(&name, child.spec.required, ChildStatus::Restarting(why));
        let _timer = myself.send_after(delay, move || SupervisorMsg::Start(name));
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Vec<ChildSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        specs: Vec<ChildSpec>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(specs.len());
        for spec in specs {
            self.health
                .set(&spec.name, spec.required, ChildStatus::Starting);
            let mut child = Child {
                spec,
                cell: None,
                recent: VecDeque::new(),
                escalated: false,
            };
            self.start_child(&myself, &mut child).await;
            children.push(child);
        }
        Ok(SupervisorState {
            children,
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(name) => {
                if state.draining {
                    return Ok(());
                }
                if let Some(child) = state
                    .children
                    .iter_mut()
                    .find(|c| c.spec.name == name && c.cell.is_none() && !c.escalated)
                {
                    self.start_child(&myself, child).await;
                }
            }
            SupervisorMsg::Add(spec) => {
                self.health
                    .set(&spec.name, spec.required, ChildStatus::Starting);
                let mut child = Child {
                    spec,
                    cell: None,
                    recent: VecDeque::new(),
                    escalated: false,
                };
                self.start_child(&myself, &mut child).await;
                state.children.push(child);
            }
            SupervisorMsg::Drain(reply) => {
                state.draining = true;
                for child in &mut state.children {
                    if let Some(cell) = child.cell.take() {
                        // Stop lets the current message finish; unsettled deliveries are
                        // redelivered by the bus, so nothing acknowledged is lost.
                        let _ = cell
                            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30)))
                            .await;
                    }
                    self.health
                        .set(&child.spec.name, child.spec.required, ChildStatus::Stopped);
                }
                let _ = reply.send(());
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(
                    state
                        .children
                        .iter()
                        .map(|c| (c.spec.name.clone(), c.cell.clone()))
                        .collect(),
                );
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "terminated: {}",
                    reason.unwrap_or_else(|| "no reason".into())
                ),
            ),
            _ => return Ok(()),
        };
        if state.draining {
            return Ok(());
        }
        let id = cell.get_id();
        if let Some(child) = state
            .children
            .iter_mut()
            .find(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == id))
        {
            self.child_down(&myself, child, why);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fragile;

    enum FragileMsg {
        Panic,
        Ping(ractor::RpcReplyPort<()>),
    }

    impl Actor for Fragile {
        type Msg = FragileMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            msg: Self::Msg,
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                FragileMsg::Panic => panic!("boom"),
                FragileMsg::Ping(reply) => {
                    let _ = reply.send(());
                }
            }
            Ok(())
        }
    }

    fn fast_policy(max_restarts: usize) -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_restarts,
            window: Duration::from_secs(60),
        }
    }

    async fn wait_for(health: &Health, name: &str, f: impl Fn(&ChildStatus, u64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(h) = health.get(name)
                && f(&h.status, h.restarts)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: {:?}", health.get(name));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn fragile_spec(cells: Arc<std::sync::Mutex<Vec<ActorRef<FragileMsg>>>>) -> ChildSpec {
        ChildSpec {
            name: "fragile".into(),
            required: true,
            start: Arc::new(move |sup| {
                let cells = cells.clone();
                Box::pin(async move {
                    let (r, _) = Actor::spawn_linked(None, Fragile, (), sup).await?;
                    cells.lock().expect("lock").push(r.clone());
                    Ok(r.get_cell())
                })
            }),
        }
    }

    #[tokio::test]
    async fn a_panicking_child_is_restarted_and_counted() {
        let health = Health::new();
        let cells = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sup, _join) = Actor::spawn(
            None,
            Supervisor::new(fast_policy(5), health.clone()),
            vec![fragile_spec(cells.clone())],
        )
        .await
        .expect("supervisor starts");
        wait_for(&health, "fragile", |s, _| *s == ChildStatus::Running).await;
        assert!(health.ready());

        let first = cells.lock().expect("lock")[0].clone();
        first.cast(FragileMsg::Panic).expect("send");
        wait_for(&health, "fragile", |s, n| {
            *s == ChildStatus::Running && n == 1
        })
        .await;

        // The new instance answers; the old one is gone.
        let second = cells.lock().expect("lock")[1].clone();
        ractor::call!(second, FragileMsg::Ping).expect("restarted child answers");
        assert!(ractor::call!(first, FragileMsg::Ping).is_err());
        sup.stop(None);
    }

    #[tokio::test]
    async fn a_spent_budget_escalates_and_turns_readiness_red() {
        let health = Health::new();
        let cells = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sup, _join) = Actor::spawn(
            None,
            Supervisor::new(fast_policy(2), health.clone()),
            vec![fragile_spec(cells.clone())],
        )
        .await
        .expect("supervisor starts");
        for n in 1..=3u64 {
            wait_for(&health, "fragile", |s, _| *s == ChildStatus::Running).await;
            let latest = cells
                .lock()
                .expect("lock")
                .last()
                .cloned()
                .expect("a child");
            latest.cast(FragileMsg::Panic).expect("send");
            if n < 3 {
                wait_for(&health, "fragile", |s, r| {
                    *s == ChildStatus::Running && r == n
                })
                .await;
            }
        }
        wait_for(&health, "fragile", |s, _| {
            matches!(s, ChildStatus::Failed(_))
        })
        .await;
        assert!(!health.ready());
        assert_eq!(cells.lock().expect("lock").len(), 3);
        // The supervisor itself is still alive and accepts new children.
        sup.cast(SupervisorMsg::Add(ChildSpec::new("other", false, || {
            (Fragile, ())
        })))
        .expect("supervisor alive");
        wait_for(&health, "other", |s, _| *s == ChildStatus::Running).await;
        sup.stop(None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_restarts: 5,
            window: Duration::from_secs(60),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(100), Duration::from_secs(1));
    }
}
