//! Kernel socket buffer sizes of the media sockets (`SO_RCVBUF` / `SO_SNDBUF`).
//!
//! One shared WhatsApp socket carries every call placed on it: 50 packets per second per call
//! each way. The Linux default receive buffer (`net.core.rmem_default`, 208 KiB) holds about
//! 90 datagrams (each costs its `skb` truesize, ~2.3 KiB, not its 100-byte payload), so a
//! worker that falls 10 ms behind with 500 calls on its socket loses audio in the kernel. We
//! ask for more; the kernel grants at most `net.core.rmem_max` / `net.core.wmem_max` and
//! reports twice what it granted (half is its bookkeeping allowance, `socket(7)`).

use std::io;

use socket2::SockRef;
use tracing::{debug, info, warn};

/// Requested buffer sizes of one kind of media socket. `0` keeps the kernel default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// `SO_RCVBUF` to request, bytes.
    pub recv_bytes: usize,
    /// `SO_SNDBUF` to request, bytes.
    pub send_bytes: usize,
}

/// What the kernel reports after the request (`getsockopt`; Linux doubles the granted size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantedBuffers {
    /// `SO_RCVBUF` as read back, bytes.
    pub recv_bytes: usize,
    /// `SO_SNDBUF` as read back, bytes.
    pub send_bytes: usize,
}

impl SocketBuffers {
    /// 4 MiB each way: the default of the shared WhatsApp sockets.
    pub const SHARED_DEFAULT: Self = Self::both(4 << 20);
    /// 1 MiB each way: the default of the per-call PBX RTP sockets (50 packets/s each).
    pub const PER_CALL_DEFAULT: Self = Self::both(1 << 20);
    /// Leave both at the kernel default.
    pub const KERNEL_DEFAULT: Self = Self::both(0);

    /// The same size for both directions.
    #[must_use]
    pub const fn both(bytes: usize) -> Self {
        Self {
            recv_bytes: bytes,
            send_bytes: bytes,
        }
    }

    /// Requests the sizes on `socket` and reads back what the kernel granted. A refused
    /// request is logged and leaves the kernel default: a smaller buffer is a capacity
    /// limit, not a reason to fail the call.
    pub fn apply<S: std::os::fd::AsFd>(&self, socket: &S) -> io::Result<GrantedBuffers> {
        let sock = SockRef::from(socket);
        if self.recv_bytes > 0
            && let Err(e) = sock.set_recv_buffer_size(self.recv_bytes)
        {
            debug!(error = %e, bytes = self.recv_bytes, "SO_RCVBUF refused");
        }
        if self.send_bytes > 0
            && let Err(e) = sock.set_send_buffer_size(self.send_bytes)
        {
            debug!(error = %e, bytes = self.send_bytes, "SO_SNDBUF refused");
        }
        Ok(GrantedBuffers {
            recv_bytes: sock.recv_buffer_size()?,
            send_bytes: sock.send_buffer_size()?,
        })
    }

    /// [`SocketBuffers::apply`] for a long-lived socket: logs the granted sizes at `info`
    /// and warns when the kernel capped the request (raise `net.core.rmem_max` /
    /// `net.core.wmem_max`).
    pub fn apply_logged<S: std::os::fd::AsFd>(&self, socket: &S, what: &str) -> GrantedBuffers {
        match self.apply(socket) {
            Ok(g) => {
                info!(
                    socket = what,
                    requested_recv = self.recv_bytes,
                    granted_recv = g.recv_bytes,
                    requested_send = self.send_bytes,
                    granted_send = g.send_bytes,
                    "media socket buffers"
                );
                if g.recv_bytes < self.recv_bytes || g.send_bytes < self.send_bytes {
                    warn!(
                        socket = what,
                        granted_recv = g.recv_bytes,
                        granted_send = g.send_bytes,
                        "kernel capped the media socket buffers: raise net.core.rmem_max and \
                         net.core.wmem_max (sysctl) to at least the configured size"
                    );
                }
                g
            }
            Err(e) => {
                warn!(socket = what, error = %e, "cannot read media socket buffer sizes");
                GrantedBuffers {
                    recv_bytes: 0,
                    send_bytes: 0,
                }
            }
        }
    }
}

impl Default for SocketBuffers {
    fn default() -> Self {
        Self::SHARED_DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requested_buffers_are_granted_up_to_the_kernel_cap() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let small = SocketBuffers::both(64 << 10).apply(&socket).unwrap();
        // Linux reports twice the granted size; other kernels the size itself.
        assert!(small.recv_bytes >= 64 << 10, "{small:?}");
        assert!(small.send_bytes >= 64 << 10, "{small:?}");
        let big = SocketBuffers::both(2 << 20).apply(&socket).unwrap();
        // rmem_max/wmem_max are at least their 208 KiB defaults, above the small request.
        assert!(big.recv_bytes > small.recv_bytes, "{big:?} {small:?}");
        assert!(big.send_bytes > small.send_bytes, "{big:?} {small:?}");
    }
}
