//! What the service benchmarks share (each bench is its own crate and includes this module).

use std::net::ToSocketAddrs;
use std::time::Duration;

/// Whether the service behind `url` (`scheme://[user@]host[:port]/...`) accepts a TCP
/// connection within 2 s on any of its addresses; `default_port` when the URL names none.
pub fn reachable(url: &str, default_port: u16) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let hp = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    hp.to_socket_addrs().is_ok_and(|mut a| {
        a.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}
