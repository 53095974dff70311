//! `TCP_NODELAY` on this process's PostgreSQL connections.
//!
//! sqlx 0.9.0 no longer sets `TCP_NODELAY` on its TCP sockets (launchbadge/sqlx#4335; the
//! fix, #4336, is merged upstream but not released). Without it, Nagle's algorithm holds
//! the last partial segment of a large message (a statement binding big arrays, such as a
//! replay batch or a write-behind flush) until the server's delayed ACK, about 40 ms per
//! statement on loopback. sqlx does not expose its socket, so after each new connection
//! this sets the option on the process's TCP sockets to the database port, through a
//! duplicate of each descriptor taken with `pidfd_getfd` (the option belongs to the socket,
//! so the duplicate sets it for sqlx's descriptor too; no unsafe code). Remove this module
//! once sqlx sets the option itself.

/// Sets `TCP_NODELAY` on every TCP socket of this process whose peer port is `port` and
/// which does not have it yet; returns how many it changed. Best effort: a kernel or
/// sandbox without `pidfd_getfd` changes nothing.
#[cfg(target_os = "linux")]
pub fn set_on_sockets_to(port: u16) -> usize {
    use rustix::net::{SocketType, sockopt};
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let Ok(pidfd) = pidfd_open(getpid(), PidfdFlags::empty()) else {
        return 0;
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut changed = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // Only sockets are worth duplicating; their link reads `socket:[inode]`.
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("socket:") => {}
            _ => continue,
        }
        let Ok(dup) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        if sockopt::socket_type(&dup).ok() != Some(SocketType::STREAM) {
            continue;
        }
        let peer = rustix::net::getpeername(&dup)
            .ok()
            .flatten()
            .and_then(|a| std::net::SocketAddr::try_from(a).ok());
        if peer.map(|p| p.port()) != Some(port) || sockopt::tcp_nodelay(&dup).unwrap_or(true) {
            continue;
        }
        if sockopt::set_tcp_nodelay(&dup, true).is_ok() {
            changed += 1;
        }
    }
    changed
}

/// Elsewhere there is nothing to do through this route.
#[cfg(not(target_os = "linux"))]
pub fn set_on_sockets_to(_port: u16) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sets_nodelay_on_sockets_to_the_port_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let to_port =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let elsewhere =
            std::net::TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        assert!(!to_port.nodelay().expect("nodelay"));
        if rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .is_err()
        {
            eprintln!("SKIPPED: pidfd_open is not available here");
            return;
        }
        assert!(set_on_sockets_to(port) >= 1);
        assert!(to_port.nodelay().expect("nodelay"));
        assert!(!elsewhere.nodelay().expect("nodelay"));
        // Nothing left to change.
        assert_eq!(set_on_sockets_to(port), 0);
    }
}
