//! [`NetError`]: why a network call failed.

/// Why a network call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The peer refused the connection (reset in answer to the SYN).
    Refused,
    /// The connection was reset or aborted.
    Reset,
    /// The call's timeout passed.
    TimedOut,
    /// A buffer or table is full (datagram too large for the buffers, too
    /// many sockets).
    NoBufferSpace,
    /// The port is taken.
    AddrInUse,
    /// The stream is not connected (closed by us).
    NotConnected,
    /// An argument is unusable (port 0, unroutable address...).
    InvalidInput,
    /// There is no network (no NIC, or it failed to start).
    NoNetwork,
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(match self {
            NetError::Refused => "connection refused",
            NetError::Reset => "connection reset",
            NetError::TimedOut => "timed out",
            NetError::NoBufferSpace => "no buffer space",
            NetError::AddrInUse => "address in use",
            NetError::NotConnected => "not connected",
            NetError::InvalidInput => "invalid input",
            NetError::NoNetwork => "no network",
        })
    }
}
