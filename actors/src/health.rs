//! Liveness of supervised actors, shared with the HTTP readiness probe.
//!
//! The supervisor writes, `/readyz` reads. A plain mutex is enough: every critical section
//! is a map lookup.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// Where a supervised child is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum ChildStatus {
    /// Being started for the first time.
    Starting,
    /// Up and processing.
    Running,
    /// Down; a restart is scheduled.
    Restarting(String),
    /// Down for good: its restart budget is spent. Needs an operator.
    Failed(String),
    /// Up, but its queue holds work and has not advanced for a while (a store that stays
    /// unavailable, or a fault it cannot get past).
    Stalled(String),
    /// Stopped on purpose (shutdown).
    Stopped,
}

/// One child's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildHealth {
    /// Current status.
    #[serde(flatten)]
    pub status: ChildStatus,
    /// Whether readiness depends on it.
    pub required: bool,
    /// Restarts since the process started.
    pub restarts: u64,
}

/// Shared view of every supervised child.
#[derive(Debug, Clone, Default)]
pub struct Health {
    children: Arc<Mutex<BTreeMap<String, ChildHealth>>>,
}

impl Health {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, ChildHealth>) -> R) -> R {
        // A panic while holding this lock cannot leave the map inconsistent, so a poisoned
        // lock is still safe to use.
        let mut guard = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Records `name`'s status.
    pub fn set(&self, name: &str, required: bool, status: ChildStatus) {
        self.with(|m| {
            let entry = m.entry(name.to_owned()).or_insert(ChildHealth {
                status: ChildStatus::Starting,
                required,
                restarts: 0,
            });
            entry.status = status;
            entry.required = required;
        });
    }

    /// Counts one restart of `name`.
    pub fn count_restart(&self, name: &str) {
        self.with(|m| {
            if let Some(c) = m.get_mut(name) {
                c.restarts += 1;
            }
        });
    }

    /// Every child's health, by name.
    pub fn snapshot(&self) -> BTreeMap<String, ChildHealth> {
        self.with(|m| m.clone())
    }

    /// One child's health.
    pub fn get(&self, name: &str) -> Option<ChildHealth> {
        self.with(|m| m.get(name).cloned())
    }

    /// Whether every required child is running.
    pub fn ready(&self) -> bool {
        self.with(|m| {
            m.values()
                .all(|c| !c.required || c.status == ChildStatus::Running)
        })
    }
}
