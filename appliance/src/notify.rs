//! systemd's service notifications (the `sd_notify` datagram protocol, no
//! libsystemd): `READY=1` once the daemon listens, `STATUS=` lines,
//! `WATCHDOG=1` while it can serve, `STOPPING=1` when it drains. Without
//! `NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens for this service's notifications.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier of `NOTIFY_SOCKET` (a path, or `@name` for an abstract
    /// socket), if set and usable.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let target = target.to_str()?;
        let address = if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(target).ok()?
        };
        let socket = UnixDatagram::unbound().ok()?;
        // Never block the runtime: a listener that does not read (its
        // queue holds only a few datagrams) costs a ping, not a thread.
        socket.set_nonblocking(true).ok()?;
        Some(Notifier { socket, address })
    }

    /// Sends one notification (`KEY=value` lines) without waiting. A
    /// failure is logged and otherwise ignored: systemd going away must not
    /// stop the service.
    pub fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.address) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::debug!("systemd's notification queue is full; dropped one");
            }
            Err(e) => tracing::warn!(error = %e, "could not notify systemd"),
        }
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is
    /// set for this process (`WATCHDOG_PID` absent or ours).
    pub fn watchdog_interval() -> Option<Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
            if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let socket = UnixDatagram::unbound().unwrap();
        socket.set_nonblocking(true).unwrap();
        let notifier = Notifier {
            socket,
            address: std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
        };
        notifier.send("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        // A listener that never reads: sends return at once.
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            notifier.send("WATCHDOG=1");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
