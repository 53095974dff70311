//! `provd status` against a running provd whose Redis is a private instance started by this
//! test (the shared services are never stopped): exit 0 while healthy, 1 while Redis is
//! down, 0 again once it is back.

mod common;
mod ops_support;

use std::process::{Child, Command, Output, Stdio};

use common::{TestApp, eventually};
use ops_support::{WAIT, tool};

/// A private `redis-server` on `port`, without persistence.
struct PrivateRedis {
    child: Child,
}

impl PrivateRedis {
    fn start(bin: &std::path::Path, port: u16) -> PrivateRedis {
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        PrivateRedis { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn provd_status(base: &str, json: bool) -> Output {
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
        cmd.args(["status", "--server", &base]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("provd status runs")
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn provd_status_exits_1_while_redis_is_down_and_0_after_it_returns() {
    let Some(redis_bin) = tool("redis-server", &["/usr/bin/redis-server"], "redis-server") else {
        return;
    };
    let port = common::dead_port();
    let redis = PrivateRedis::start(&redis_bin, port);
    let url = format!("redis://127.0.0.1:{port}");
    let Some(t) = TestApp::start_with(|c| c.redis_url = Some(url.clone())).await else {
        redis.stop();
        return;
    };
    let base = t.base.clone();

    let healthy = eventually("provd status says healthy", WAIT, || async {
        let out = provd_status(&base, false).await;
        (out.status.code() == Some(0)).then_some(out)
    })
    .await;
    let text = String::from_utf8_lossy(&healthy.stdout);
    assert!(text.contains("HEALTHY"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal: {text}"
    );

    redis.stop();
    let down = eventually("provd status says unhealthy", WAIT, || async {
        let out = provd_status(&base, false).await;
        (out.status.code() == Some(1)).then_some(out)
    })
    .await;
    let text = String::from_utf8_lossy(&down.stdout);
    assert!(text.contains("UNHEALTHY"), "{text}");
    assert!(text.contains("redis is unreachable"), "{text}");
    let json = provd_status(&base, true).await;
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json is JSON");
    assert_eq!(report["services"]["redis"]["status"], "unreachable");

    let redis = PrivateRedis::start(&redis_bin, port);
    eventually("provd status says healthy again", WAIT, || async {
        (provd_status(&base, false).await.status.code() == Some(0)).then_some(())
    })
    .await;

    t.finish().await;
    redis.stop();
}

#[tokio::test]
async fn provd_status_exits_1_when_provd_cannot_be_reached() {
    let base = format!("http://127.0.0.1:{}", common::dead_port());
    let out = provd_status(&base, false).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
