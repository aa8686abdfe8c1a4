//! [`NetError`]: why a network call failed, as a `core::error::Error`
//! and as an `embedded_io::Error` (each variant with its
//! [`ErrorKind`], so that crates written against `embedded-io` can tell a
//! reset from a timeout).

use embedded_io::ErrorKind;

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

impl core::error::Error for NetError {}

impl embedded_io::Error for NetError {
    fn kind(&self) -> ErrorKind {
        match self {
            NetError::Refused => ErrorKind::ConnectionRefused,
            NetError::Reset => ErrorKind::ConnectionReset,
            NetError::TimedOut => ErrorKind::TimedOut,
            // Buffers and tables are memory: full when it runs out.
            NetError::NoBufferSpace => ErrorKind::OutOfMemory,
            NetError::AddrInUse => ErrorKind::AddrInUse,
            NetError::NotConnected => ErrorKind::NotConnected,
            NetError::InvalidInput => ErrorKind::InvalidInput,
            // No interface to send from: embedded-io's kind for a
            // nonexistent interface.
            NetError::NoNetwork => ErrorKind::AddrNotAvailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_io::Error as _;

    const ALL: [NetError; 8] = [
        NetError::Refused,
        NetError::Reset,
        NetError::TimedOut,
        NetError::NoBufferSpace,
        NetError::AddrInUse,
        NetError::NotConnected,
        NetError::InvalidInput,
        NetError::NoNetwork,
    ];

    #[test]
    fn each_error_has_its_own_io_kind() {
        let kinds: Vec<ErrorKind> = ALL.iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds,
            [
                ErrorKind::ConnectionRefused,
                ErrorKind::ConnectionReset,
                ErrorKind::TimedOut,
                ErrorKind::OutOfMemory,
                ErrorKind::AddrInUse,
                ErrorKind::NotConnected,
                ErrorKind::InvalidInput,
                ErrorKind::AddrNotAvailable,
            ]
        );
        for (i, a) in kinds.iter().enumerate() {
            assert!(!kinds[i + 1..].contains(a), "{a:?} stands for two errors");
            assert_ne!(*a, ErrorKind::Other, "an error without a kind");
        }
    }

    #[test]
    fn it_is_a_core_error_with_its_message() {
        let boxed: Box<dyn core::error::Error> = Box::new(NetError::Reset);
        assert_eq!(boxed.to_string(), "connection reset");
        assert!(boxed.source().is_none());
        // `?` turns it into a boxed error, as applications' `main` uses.
        fn fails() -> Result<(), Box<dyn core::error::Error>> {
            Err(NetError::TimedOut)?
        }
        assert_eq!(fails().unwrap_err().to_string(), "timed out");
    }
}
